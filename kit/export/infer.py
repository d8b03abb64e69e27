"""What `python infer.py` does: decide where the graph goes, export it (or take the --onnx file), predict the
test images and write the submission. Torch is imported only when a graph is exported."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from kit.core.atomic import writable
from kit.core.errors import KitError
from kit.core.table import Layout
from kit.evaluate.rundir import RunDir, blend_dir

log = logging.getLogger(__name__)


@dataclass
class InferRequest:
    """infer.py's flags, as one value."""
    run_dirs: list[str] = field(default_factory=lambda: ["runs/default"])
    data_dir: Optional[str] = None
    onnx: Optional[str] = None
    onnx_out: Optional[str] = None
    out: str = "submissions/submission.csv"
    probs: Optional[str] = None
    folds: Optional[str] = None
    provider: str = "auto"
    tta: Optional[bool] = None
    int8: bool = False
    export_only: bool = False
    batch_size: int = 32


def parse_folds(text: Optional[str]) -> Optional[list[int]]:
    if not text:
        return None
    try:
        return [int(k) for k in text.split(",")]
    except ValueError:
        raise KitError(f"--folds must be comma-separated fold numbers, got {text!r}") from None


def export_path(runs: list[RunDir], onnx_out: Optional[str], out: str) -> Path:
    """--onnx-out, else the run dir's ensemble.onnx (a blend's: blend_A+B/ beside the first run), else (a
    read-only place, e.g. an uploaded Kaggle dataset) beside the submission."""
    if onnx_out:
        return Path(onnx_out)
    default = runs[0].ensemble_file() if len(runs) == 1 else blend_dir(runs) / "ensemble.onnx"
    if writable(default.parent):
        return default
    fallback = Path(out).parent / f"{default.parent.name}.ensemble.onnx"
    log.info(f"export: {default.parent} is read-only; exporting to {fallback} instead (choose the place with "
             f"--onnx-out)")
    return fallback


def run_settings(run: RunDir) -> dict:
    """Data settings of the training run (data dir, file and column names), when the run dir is here."""
    return run.config().to_dict() if run.config_file.is_file() else {}


def infer(request: InferRequest) -> dict:
    """Export (unless --onnx), then predict and write the submission; returns what the submission step measured
    (nothing with --export-only)."""
    from kit.runtime.submission import make_submission
    runs = [RunDir(r) for r in request.run_dirs]
    settings = run_settings(runs[0])
    folds = parse_folds(request.folds)
    if request.batch_size < 1:
        raise KitError(f"--batch-size must be at least 1, got {request.batch_size}")
    graph = None
    if request.onnx:
        if request.int8 or request.folds or request.export_only or len(runs) > 1:
            raise KitError("--onnx predicts with an existing file: --int8, --folds, --export-only and several "
                           "--run-dir apply to exporting; pass the int8 file itself as --onnx")
        onnx_path = request.onnx
    else:
        from kit.export.build import export
        summary = export(request.run_dirs, out=export_path(runs, request.onnx_out, request.out), folds=folds,
                         tta=request.tta, int8=request.int8, data_dir=request.data_dir)
        exported = summary["int8"] if request.int8 else summary
        onnx_path, graph = exported["path"], exported["graph"]
    if request.export_only:
        return {}
    data_dir = request.data_dir or settings.get("data_dir")
    if not data_dir:
        raise KitError(f"no competition folder: pass --data-dir (no training config in {runs[0]} to take it from)")
    result = make_submission(onnx_path, data_dir, request.out, provider=request.provider,
                             batch_size=request.batch_size, probs_out=request.probs, layout=Layout.of(settings),
                             graph=graph)
    score_demo(Path(data_dir), Path(request.out))
    return result


def score_demo(data_dir: Path, out: Path) -> None:
    """The demo competitions ship their hidden labels: report the submission's test score."""
    from kit.prepare.demo import test_score
    score = test_score(data_dir, out)
    if score is not None:
        log.info(score)
