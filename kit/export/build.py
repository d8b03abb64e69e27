"""Runs -> one ONNX graph (kit.core.artifact's contract), checked against PyTorch before it is written, and
optionally its int8 or fp16 twin.

One run: its fold models, averaged. Several runs (a blend): every fold model of every run, each run with its
own normalization, image size and TTA views, weighted per run by weights fitted on the OOF predictions
(kit.evaluate.blend). The graph's input is the largest member's size; a smaller member's images are resized in the
graph with the antialiased bilinear filter that decoding uses (kit.export.ensemble.resize_pixels). Views, weights
and the CV are all computed on OOF predictions made through exactly those pixels.
"""
from __future__ import annotations

import copy
import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from kit import __version__
from kit.core.artifact import Metadata, write_metadata
from kit.core.atomic import atomic_path, write_text
from kit.core.digest import file_digests
from kit.evaluate.blend import (VIEWS, Blend, alone, best_method, candidates, choose_views, correlations, fit,
                                methods_for, nested_cv)
from kit.core.table import train_table, training_images
from kit.export.ensemble import Ensemble, Preprocess, head_of, view
from kit.train.members import Member, fold_weight_standardization, load_members
from kit.core.errors import KitError
from kit.core.images import load_rgb
from kit.export import twin as twins
from kit.export.int8 import CALIBRATION_IMAGES, sample_images
from kit.export.onnx_export import export_onnx
from kit.store.oof import Oof, read_oof
from kit.export.parity import parity_check
from kit.store.rundir import FULL, RunDir, blend_dir

PARITY_IMAGES = 64
OOF_IMAGES = 2000            # OOF rows (a seeded sample of them) that choose views and weights
log = logging.getLogger(__name__)


@dataclass
class RunBlend:
    """One run's place in the graph."""
    run: RunDir
    members: list[Member]
    views: list[str]
    outputs: np.ndarray          # OOF predictions of its chosen views, on the sampled rows
    cv: float                    # its OOF score with those views
    identity_cv: float           # ... and with the identity view alone (oof.csv's predictions, recomputed)
    weight: float = 1.0


def shared_oof(runs: list[RunDir], members: list[list[Member]]) -> Oof:
    """The OOF rows of the included folds, after checking every run split the same images into the same folds
    (their OOF predictions are comparable only then) for the same task."""
    first = read_oof([m.run.oof(m.fold) for m in members[0]])
    where = dict(zip(first.ids, zip(first.labels, first.folds)))
    for run, ms in zip(runs[1:], members[1:]):
        oof = read_oof([m.run.oof(m.fold) for m in ms])
        if not ms[0].task.same_outputs(members[0][0].task):
            raise KitError(f"{run} predicts other classes than {runs[0]}; runs of one competition and task only")
        mine = dict(zip(oof.ids, zip(oof.labels, oof.folds)))
        if mine != where:
            differ = next((i for i in sorted(set(mine) | set(where)) if mine.get(i) != where.get(i)), None)
            raise KitError(f"{run} and {runs[0]} do not share the folds file (image {differ!r}: fold/label "
                           f"{mine.get(differ)} vs {where.get(differ)}); their OOF predictions are not comparable. "
                           f"Train both with the same --folds-csv")
    return first


def sample_rows(oof: Oof, limit: Optional[int]) -> np.ndarray:
    if limit is None or len(oof) <= limit:
        return np.arange(len(oof))
    return np.sort(np.random.default_rng(0).choice(len(oof), limit, replace=False))


@torch.no_grad()
def view_outputs(members: list[Member], oof: Oof, rows: np.ndarray, images: np.ndarray, views: Sequence[str],
                 batch_size: int = 128) -> dict[str, np.ndarray]:
    """OOF predictions per view: each row by the fold model that did not train on it, through the member's own
    preprocessing from the graph's input pixels (exactly what the graph will do)."""
    fold_of_row = oof.folds[rows]
    out = {v: np.zeros((len(rows), len(members[0].task.names))) for v in views}
    activate = members[0].task.activate
    for m in members:
        model = copy.deepcopy(m.model)
        fold_weight_standardization(model)          # equal outputs (tested), several times faster
        model.eval()
        prep = Preprocess(m.size, m.mean, m.std)
        idx = np.flatnonzero(fold_of_row == m.fold)
        for start in range(0, len(idx), batch_size):
            part = idx[start:start + batch_size]
            x = prep(torch.from_numpy(images[part]).permute(0, 3, 1, 2).float())
            for v in views:
                out[v][part] = activate(model(view(x, v))).numpy()
    return out


@dataclass
class ExportPlan:
    """Everything the graph is built from, and the numbers blend.md and the metadata report."""
    blends: list[RunBlend]
    oof: Optional[Oof]           # None: the full model, which has no OOF predictions
    task: object                 # the task, its decision parameters (multilabel thresholds) fitted on OOF
    metric: str
    input_size: int
    rows: int = 0                # OOF rows the views and the blend were chosen on
    honest: dict = field(default_factory=dict)    # method -> kit.evaluate.blend.Honest
    method: str = "weights"
    blend: Optional[Blend] = None
    correlation: list = field(default_factory=lambda: [[1.0]])
    in_sample: Optional[float] = None

    @property
    def cv(self) -> Optional[float]:
        return self.honest[self.method].cv if self.honest else None


def plan_full(runs: list[RunDir], members: list[list[Member]], tta: Optional[bool],
              data_dir: Optional[str]) -> ExportPlan:
    """The full model (RUN/full): no OOF predictions to choose views or weights on, or to score. Views as asked
    (identity by default); the task's decision parameters (multilabel thresholds) fitted on the run's fold models'
    OOF predictions where there are any, their estimate."""
    if len(runs) > 1 or len(members[0]) > 1:
        raise KitError("the full model exports alone (infer.py --run-dir RUN --folds full): it has no OOF predictions "
                       "to weigh it against fold models or other runs by")
    member, run = members[0][0], runs[0]
    if data_dir:
        member.config.data_dir = data_dir
    member.views = ("identity", "hflip") if tta else ("identity",)
    task = member.task
    if run.folds("oof.csv"):
        oof = read_oof([run.oof(k) for k in run.folds("oof.csv")])
        task = task.fit(task.encode(oof.labels), oof.outputs)
    log.info(f"export: {run}/full: the model trained on every image (no CV of its own; TTA views "
             f"{list(member.views)})")
    return ExportPlan([RunBlend(run, [member], list(member.views), None, None, None)], None, task,
                      member.config.metric, member.size, blend=Blend("weights", np.ones(1)))


def plan(runs: list[RunDir], folds: Optional[list[int]], tta: Optional[bool], data_dir: Optional[str],
         oof_images: Optional[int], method: str = "auto") -> ExportPlan:
    """Members, views and the blend of every run, chosen on OOF predictions, with every method's honest CV."""
    members = [load_members(run, folds) for run in runs]
    if any(m.fold == FULL for ms in members for m in ms):
        return plan_full(runs, members, tta, data_dir)
    common = sorted(set.intersection(*({m.fold for m in ms} for ms in members)))
    if not common:
        raise KitError(f"the runs have no finished fold in common ({[[m.fold for m in ms] for ms in members]})")
    if len(runs) > 1 and len(common) < 2:
        raise KitError(f"blending {len(runs)} runs needs the OOF predictions of at least 2 folds they share, to fit the "
                       f"blend on some folds and score it on others; they share fold(s) {common}. Train more folds, "
                       f"pass one --run-dir, or --folds with two folds or more")
    members = [[m for m in ms if m.fold in common] for ms in members]
    oof = shared_oof(runs, members)
    cfg = members[0][0].config
    for m in (m for ms in members for m in ms):
        m.config.data_dir = data_dir or m.config.data_dir
    size = max(m.size for ms in members for m in ms)
    rows = sample_rows(oof, oof_images)
    images = np.stack([load_rgb(p, size) for p in training_images(cfg, [oof.ids[i] for i in rows])])
    task, metric = members[0][0].task, cfg.metric
    y = task.encode([oof.labels[i] for i in rows])
    view_names = VIEWS if tta is None else (("identity", "hflip") if tta else ("identity",))
    by_view = [view_outputs(ms, oof, rows, images, view_names) for ms in members]
    methods = methods_for(metric, len(runs))
    if method not in ("auto", *methods):
        raise KitError(f"--blend {method} does not apply here (here: {', '.join(methods)}; rank averaging applies to "
                       f"rank metrics only, and one run is its own blend)")
    methods = candidates(metric, len(runs)) if method == "auto" else methods
    honest = nested_cv(task, metric, y, oof.folds[rows], by_view, methods, choose=tta is None)     # every method's
    chosen = best_method(task, metric, honest) if method == "auto" else method
    blends = []
    for run, ms, views in zip(runs, members, by_view):
        kept = choose_views(task, metric, y, views) if tta is None else list(view_names)
        outputs = np.mean([views[v] for v in kept], 0)
        blends.append(RunBlend(run, ms, kept, outputs, task.score(metric, y, outputs),
                               task.score(metric, y, views["identity"])))
        log.info(f"export: {run}: TTA views {kept} ({'chosen on ' + str(len(rows)) + ' OOF images' if tta is None else 'as asked'}"
                 f"; OOF {metric} {blends[-1].cv:.4f}, identity alone {blends[-1].identity_cv:.4f})")
    blend = fit(chosen, task, metric, y, [b.outputs for b in blends])
    blended = blend.apply(task, [b.outputs for b in blends])
    for b, w in zip(blends, blend.weights):
        b.weight = float(w)
    for b in blends:
        for m in b.members:
            m.views = tuple(b.views)
    return ExportPlan(blends, oof, task.fit(y, blended), metric, size, len(rows), honest, chosen, blend,
                      correlations(y, [b.outputs for b in blends]).tolist(), task.score(metric, y, blended))


def finite(value) -> Optional[float]:
    """A score for the metadata: None where there is none (the full model), never a NaN (not JSON)."""
    return float(value) if value is not None and np.isfinite(value) else None


def metadata(p: ExportPlan, kept: list[RunBlend], tta: bool) -> Metadata:
    members = [m for b in kept for m in b.members]
    first, cfg = members[0], members[0].config
    single = len(kept) == 1                # one run, or a blend whose best honest CV is one run alone
    return Metadata(task=first.task.kind, classes=first.task.names, task_params=p.task.params(), img_size=p.input_size,
                    train_img_size=cfg.img_size if single else max(m.config.img_size for m in members),
                    mean=first.mean, std=first.std,
                    model=cfg.model if single else " + ".join(b.members[0].config.model for b in kept),
                    folds=[m.fold for m in kept[0].members] if single else sorted({m.fold for m in members}),
                    fold_scores=[finite(m.score) for m in members] if single else
                    [p.honest[p.method].per_fold[k] for k in sorted(p.honest[p.method].per_fold)],
                    cv_score=finite(kept[0].cv if single else p.cv), metric=p.metric, tta=tta,
                    int8=False, int8_agreement=None, fp16=False, fp16_agreement=None, id_col=cfg.id_col,
                    label_col=cfg.label_col, kit_version=__version__,
                    members=[{"run": str(b.run), "model": b.members[0].config.model, "folds": [m.fold for m in b.members],
                              "img_size": b.members[0].size, "train_img_size": b.members[0].config.img_size,
                              "weight": round(b.weight, 6), "views": b.views, "cv": finite(b.cv)} for b in kept],
                    answer=p.task.answer_spec(),
                    blend={"method": p.method, "honest_cv": {m: finite(h.cv) for m, h in p.honest.items()}},
                    export_key="")


def blend_report(p: ExportPlan) -> str:
    """blend.md: every method's honest CV side by side (the chosen one first), each run's views, weight and own
    CV, the members' OOF correlation."""
    metric, chosen = p.metric, p.method
    order = [chosen] + [m for m in p.honest if m != chosen]
    lines = [f"# Blend of {len(p.blends)} runs\n",
             f"Chosen: **{method_label(chosen, p.blends)}** (by honest CV; every run alone is a candidate, so a blend "
             f"is chosen only where it beats the best of them). Honest CV: each fold's views and blend fitted without that fold, "
             f"then the fold scored; {p.rows} OOF images. With everything fitted on all of them (optimistic): "
             f"{p.in_sample:.4f}.\n",
             f"| method | honest CV ({metric}) | per fold |", "|---|---:|---|"]
    for m in order:
        h = p.honest[m]
        lines.append(f"| {method_label(m, p.blends)}{' (chosen)' if m == chosen else ''} | {h.cv:.4f} | "
                     f"{', '.join(f'{v:.4f}' for _, v in sorted(h.per_fold.items()))} |")
    best_run = max(p.blends, key=lambda b: b.cv) if p.task.higher_is_better(metric) else min(p.blends, key=lambda b: b.cv)
    lines += ["", f"The best single run ({best_run.run}): OOF {metric} {best_run.cv:.4f} with its views (chosen on "
                  f"the same rows: optimistic).", "",
              f"Graph input: {p.input_size}px; members at another size are resized in the graph (antialiased bilinear).",
              "", f"| run | model | folds | size (train/test) | views | OOF {metric} | weight |",
              "|---|---|---|---|---|---:|---:|"]
    for b in p.blends:
        m = b.members[0]
        lines.append(f"| {b.run} | {m.config.model} | {[x.fold for x in b.members]} | {m.config.img_size}/{m.size} | "
                     f"{', '.join(b.views)} | {b.cv:.4f} | {b.weight:.3f} |")
    lines += ["", "Correlation of the members' OOF predictions (probability of the true class):", "",
              "| | " + " | ".join(str(i) for i in range(len(p.blends))) + " |", "|---|" + "---:|" * len(p.blends)]
    for i, row in enumerate(p.correlation):
        lines.append(f"| {i} | " + " | ".join(f"{v:.3f}" for v in row) + " |")
    return "\n".join(lines) + "\n"


def content_key(kept: list[RunBlend], meta: Metadata) -> str:
    """A graph's export key when infer.py gave none: the bytes of every member's checkpoint, and the blend and views
    (what an int8 twin is checked against by kit.web)."""
    digest = hashlib.sha256(json.dumps({"blend": meta.blend, "members": meta.members}, sort_keys=True).encode())
    for sha in file_digests([m.run.best(m.fold) for b in kept for m in b.members]):
        digest.update(sha.encode())
    return digest.hexdigest()


def method_label(method: str, blends: list[RunBlend]) -> str:
    """`alone:<i>` as the run's name and 'alone'; a blend method as it is."""
    i = alone(method)
    return method if i is None else f"{blends[i].run} alone"


def probe_images(cfg, oof: Optional[Oof], count: int, size: int) -> np.ndarray:
    """Real images to check a graph on: a seeded sample of OOF rows, or (the full model) of the training images."""
    if oof is None:
        return sample_images(train_table(cfg).paths, size, count)
    return np.stack([load_rgb(p, size) for p in training_images(cfg, [oof.ids[i] for i in sample_rows(oof, count)])])


def export(run_dirs: str | Path | Sequence[str | Path], out: str | Path | None = None, folds: list | None = None,
           tta: bool | None = None, twin: str | None = None, data_dir: str | None = None,
           oof_images: Optional[int] = OOF_IMAGES, method: str = "auto", key: str = "") -> dict:
    """Export the fold models of one run, or the blend of several, to ONNX (and its `twin`, int8 or fp16, if asked:
    kit.export.twin).

    TTA: by default each run keeps the views that improve its OOF score (the identity view always); `tta`
    True/False fixes it to [identity, horizontal flip] / [identity] for every run. `method`: the blend
    (kit.evaluate.blend.METHODS, or auto: the best honest CV).
    """
    runs = [RunDir(r) for r in ([run_dirs] if isinstance(run_dirs, (str, Path)) else run_dirs)]
    if len({r.path.resolve() for r in runs}) != len(runs):
        raise KitError("a --run-dir is given twice; each run can join the blend once")
    p = plan(runs, folds, tta, data_dir, oof_images, method)
    kept = [b for b in p.blends if b.weight > 0 or p.method == "stack"]
    for b in p.blends:
        if b not in kept:
            log.info(f"export: {b.run} gets weight 0 on the OOF predictions; left out of the graph")
    keep = [p.blends.index(b) for b in kept]
    p.blend.weights = p.blend.weights[keep] / p.blend.weights[keep].sum()
    if p.blend.quantiles is not None:
        p.blend.quantiles = p.blend.quantiles[keep]
    members = [m for b in kept for m in b.members]
    cfg, size = members[0].config, p.input_size
    head = head_of(p.blend, members[0].task)
    reference = Ensemble.of(members, head).eval()                                   # as trained
    folded = [copy.deepcopy(m.model) for m in members]
    n_folded = sum(fold_weight_standardization(m) for m in folded)
    meta = metadata(p, kept, any(len(b.views) > 1 for b in kept))
    meta.export_key = key or content_key(kept, meta)        # never empty: a twin carries it
    images = probe_images(cfg, p.oof, PARITY_IMAGES, size)
    out = Path(out) if out else (runs[0].ensemble_file() if len(runs) == 1 else blend_dir(runs) / "ensemble.onnx")
    summary = {"path": str(out), "folds": meta.folds, "folded_convs": n_folded, "members": meta.members,
               "cv": meta.cv_score, "identity_cv": [b.identity_cv for b in p.blends], "plan": p}
    with atomic_path(out) as tmp:
        export_onnx(Ensemble.of(members, head, folded).eval(), size, tmp)
        write_metadata(tmp, meta)
        summary["parity_max_abs_diff"] = parity_check(tmp, reference, images)
        summary["graph"] = tmp.read_bytes()         # exactly what was checked: predict with this, not the path
    if len(runs) > 1:
        write_text(out.with_name("blend.md"), blend_report(p))
        scores = ", ".join(f"{method_label(m, p.blends)} {h.cv:.4f}" for m, h in p.honest.items())
        what = (f"best: {kept[0].run} alone (no blend beat it)" if alone(p.method) is not None else
                f"blend of {len(kept)} run(s) by {p.method}")
        log.info(f"export: {what} -> {out}; honest CV {p.metric} {p.cv:.4f} ({scores}; report "
                 f"{out.with_name('blend.md')})")
    log.info(f"export: {len(members)} fold model(s) {meta.folds} of {meta.model} -> {out} ({n_folded} "
             f"weight-standardized convs folded, TTA {'on' if meta.tta else 'off'}, parity max |Δprob| "
             f"{summary['parity_max_abs_diff']:.2e})")
    if twin:
        summary[twin] = make_twin(twin, out, meta, cfg, p.oof)
    return summary


def make_twin(twin: str, graph: Path, meta: Metadata, cfg, oof: Optional[Oof]) -> dict:
    """`graph`'s int8 or fp16 twin (kit.export.twin), checked against it on OOF images (training images for the full
    model) and labelled with its metadata, export key included."""
    calibration = sample_images(train_table(cfg).paths, meta.img_size, CALIBRATION_IMAGES) if twin == "int8" else None
    return twins.make(twin, graph, probe_images(cfg, oof, twins.EVAL_IMAGES, meta.img_size),
                      lambda path, agreement: write_metadata(path, Metadata(**{
                          **meta.__dict__, twin: True, f"{twin}_agreement": agreement})),
                      meta.task_(), calibration)


def twin_only(graph: Path, meta: Metadata, run: RunDir, twin: str, data_dir: Optional[str]) -> dict:
    """The twin of an fp32 graph that is up to date (infer.py checked its key), without exporting the graph again;
    its agreement is measured on the run's OOF images (the full model's: training images)."""
    cfg = run.config()
    cfg.data_dir = data_dir or cfg.data_dir
    folds = run.folds("oof.csv")
    oof = read_oof([run.oof(k) for k in folds]) if folds and FULL not in meta.folds else None
    return make_twin(twin, graph, meta, cfg, oof)
