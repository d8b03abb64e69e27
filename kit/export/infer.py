"""What `python infer.py` does: decide where the graph goes, export it (or take the --onnx file), predict the
test images and write the submission. Torch is imported only when a graph is exported."""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from kit import __version__
from kit.core import atomic
from kit.core.artifact import Metadata, model_metadata
from kit.core.digest import file_digests
from kit.core.entry import number, option
from kit.core.errors import KitError
from kit.core.paths import RUN_OWN_NAMES, Outputs, chosen_twin, twin_path
from kit.core.providers import PROVIDER_CHOICES
from kit.core.table import Layout
from kit.runtime.submission import output_paths
from kit.store.rundir import FULL, RunDir, blend_dir, expand

log = logging.getLogger(__name__)


@dataclass
class InferRequest:
    """infer.py's flags, as one value (kit.core.entry.add_flags makes the flags from it)."""
    data_dir: Optional[str] = option(None, "competition folder (default: the one the run was trained on)")
    run_dirs: list[str] = option(["runs/default"], "a trained run; repeat it to blend several runs into one graph",
                                 flag="run-dir")
    onnx: Optional[str] = option(None, "predict with this exported file; skips the export (no torch needed)")
    onnx_out: Optional[str] = option(None, "where to export the ensemble (default: RUN_DIR/ensemble.onnx; when the "
                                           "run dir is read-only, e.g. an uploaded Kaggle dataset, beside --out)")
    out: str = option("submissions/submission.csv", "the submission CSV")
    probs: Optional[str] = option(None, "also write per-class probabilities to this CSV")
    folds: Optional[str] = option(None, "comma-separated folds to ensemble, or full (default: every trained fold)")
    provider: str = option("auto", "onnxruntime's execution provider", choices=PROVIDER_CHOICES)
    tta: Optional[bool] = option(None, "--tta: identity + horizontal flip for every run; --no-tta: identity only "
                                       "(default: each run keeps the views among flips, transpose and rotations that "
                                       "improve its OOF score)")
    blend: str = option("auto", "how several runs are combined (kit/evaluate/blend.py); auto: the best honest (nested) "
                                "CV, a single run included", choices=("auto", "weights", "hill", "rank", "stack"))
    re_export: bool = option(False, "export even when the graph is up to date (by default a graph made from the same "
                                    "checkpoints and settings is reused)")
    int8: bool = option(False, "also export an int8 graph and predict with it (for CPUs)")
    fp16: bool = option(False, "also export an fp16 graph and predict with it (for GPUs; needs pip install -e "
                               "'.[fp16]')")
    export_only: bool = option(False, "export the graph, predict nothing")
    batch_size: int = option(32, "images per onnxruntime call", parse=number(1, None, int))

    @property
    def twin(self) -> Optional[str]:
        """The lower-precision twin asked for (kit.export.twin): int8, fp16 or None."""
        return chosen_twin(self.int8, self.fp16)


def parse_folds(text: Optional[str]) -> Optional[list[int | str]]:
    """--folds: comma-separated fold numbers, or `full` (the model trained on every image)."""
    if not text:
        return None
    if text.strip() == FULL:
        return [FULL]
    try:
        return [int(k) for k in text.split(",")]
    except ValueError:
        raise KitError(f"--folds must be comma-separated fold numbers or 'full', got {text!r}") from None


def export_path(runs: list[RunDir], onnx_out: Optional[str], out: str) -> Path:
    """--onnx-out, else the run dir's ensemble.onnx (a blend's: blend_A+B/ beside the first run), else (a
    read-only place, e.g. an uploaded Kaggle dataset) beside the submission."""
    if onnx_out:
        return Path(onnx_out)
    default = runs[0].ensemble_file() if len(runs) == 1 else blend_dir(runs) / "ensemble.onnx"
    if atomic.writable(default.parent):
        return default
    fallback = Path(out).parent / f"{default.parent.name}.ensemble.onnx"
    log.info(f"export: {default.parent} is read-only; exporting to {fallback} instead (choose the place with "
             f"--onnx-out)")
    return fallback


def check_outputs(request: InferRequest, runs: list[RunDir], data_dir: Optional[str], layout: Layout) -> Optional[Path]:
    """Before anything is exported: --out, --probs and the graph's path overwrite none of the inputs (the competition's
    files, the --onnx file, the runs' checkpoints) and lie in neither the competition folder nor a run dir (where
    only the graph's own names are allowed). Returns where the graph goes (None with --onnx)."""
    guard = Outputs()
    for run in runs:
        guard.protects(run.path, "the run dir", allow=RUN_OWN_NAMES)
    if data_dir:
        output_paths(request.onnx, data_dir, layout, None if request.export_only else request.out, request.probs,
                     guard)
    if request.onnx:
        return None
    graph = guard.check("--onnx-out", export_path(runs, request.onnx_out, request.out))
    if request.twin:
        guard.check(f"the {request.twin} graph (beside --onnx-out)", twin_path(graph, request.twin))
    return graph


def run_settings(run: RunDir) -> dict:
    """Data settings of the training run (data dir, file and column names), when the run dir is here."""
    return run.config().to_dict() if run.config_file.is_file() else {}


def infer(request: InferRequest) -> dict:
    """Export (unless --onnx), then predict and write the submission; returns what the submission step measured
    (nothing with --export-only)."""
    from kit.runtime.submission import make_submission
    runs = expand(request.run_dirs)
    settings = run_settings(runs[0])
    folds = parse_folds(request.folds)
    if request.onnx and (request.twin or request.folds or request.export_only or len(runs) > 1 or
                         request.blend != "auto"):
        raise KitError("--onnx predicts with an existing file: --int8, --fp16, --folds, --blend, --export-only and "
                       "several --run-dir apply to exporting; pass the int8 or fp16 file itself as --onnx")
    data_dir = request.data_dir or settings.get("data_dir")
    if not data_dir and not request.export_only:
        raise KitError(f"no competition folder: pass --data-dir (no training config in {runs[0]} to take it from)")
    onnx_out = check_outputs(request, runs, data_dir, Layout.of(settings))
    graph = None
    if request.onnx:
        onnx_path = request.onnx
    else:
        key = export_key(runs, folds, request)
        wanted = twin_path(onnx_out, request.twin) if request.twin else onnx_out
        if current(wanted, key, request.re_export):
            log.info(f"export: {wanted} is up to date (same checkpoints, settings and kit version); predicting with it "
                     f"(--re-export exports anyway)")
            onnx_path = str(wanted)
        elif request.twin and (fp32 := current(onnx_out, key, request.re_export)):
            from kit.export.build import twin_only           # the fp32 graph is not exported again
            log.info(f"export: {onnx_out} is up to date; making its {request.twin} twin only")
            made = twin_only(onnx_out, fp32, runs[0], request.twin, request.data_dir)
            onnx_path, graph = made["path"], made["graph"]
        else:
            from kit.export.build import export           # torch: imported only when a graph is made
            summary = export([r.path for r in runs], out=onnx_out, folds=folds, tta=request.tta, twin=request.twin,
                             data_dir=request.data_dir, method=request.blend, key=key)
            exported = summary[request.twin] if request.twin else summary
            onnx_path, graph = exported["path"], exported["graph"]
    if request.export_only:
        return {}
    result = make_submission(onnx_path, data_dir, request.out, provider=request.provider,
                             batch_size=request.batch_size, probs_out=request.probs, layout=Layout.of(settings),
                             graph=graph)
    score_demo(Path(data_dir), Path(request.out))
    return result


def export_key(runs: list[RunDir], folds: Optional[list], request: InferRequest) -> str:
    """What an exported graph is a function of: the bytes of every checkpoint and OOF file it is made from, the
    training table its views are chosen on, the export settings and the kit version (kit.export_key)."""
    # not the twin asked for: the fp32 graph is the same with or without one, and a twin carries its source's key
    digest = hashlib.sha256(json.dumps({"kit": __version__, "folds": folds, "tta": request.tta,
                                        "blend": request.blend, "data_dir": request.data_dir}).encode())
    for run in runs:
        chosen = folds if folds is not None else [k for k in run.folds("best.pt") if run.finished(k)]
        files = [run.best(k) for k in chosen] + [run.oof(k) for k in chosen if run.oof(k).is_file()]
        for path, sha in zip(files, file_digests(files)):       # read again only where a file's stat changed
            digest.update(f"{path}:{sha}".encode())
        if run.config_file.is_file():
            cfg = run.config()
            table = Path(request.data_dir or cfg.data_dir) / cfg.train_csv
            digest.update(table.read_bytes() if table.is_file() else b"")
    return digest.hexdigest()


def current(path: Path, key: str, re_export: bool) -> Optional[Metadata]:
    """The metadata of the graph at `path` when it was made from exactly these inputs (its kit.export_key is `key`);
    None when it must be made again (missing, stale, unreadable, or --re-export)."""
    if re_export or not path.is_file():
        return None
    import onnx
    try:
        meta = model_metadata(onnx.load(str(path), load_external_data=False), path)
    except Exception:  # noqa: BLE001 - a damaged or foreign file is simply exported again
        return None
    if meta.export_key != key:
        log.info(f"export: {path} is out of date (its checkpoints, OOF files, settings or the kit changed); exporting "
                 f"again")
        return None
    return meta


def score_demo(data_dir: Path, out: Path) -> None:
    """The demo competitions ship their hidden labels: report the submission's test score."""
    from kit.prepare.demo import test_score
    score = test_score(data_dir, out)
    if score is not None:
        log.info(score)
