"""Runs -> one ONNX graph (kit.core.artifact's contract), checked against PyTorch before it is written, and
optionally its int8 twin.

One run: its fold models, averaged. Several runs (a blend): every fold model of every run, each run with its
own normalization, image size and TTA views, weighted per run by weights fitted on the OOF predictions
(kit.evaluate.blend). The graph's input is the largest member's size; a smaller member's images are resized in the
graph with the antialiased bilinear filter that decoding uses (kit.export.ensemble.resize_pixels). Views, weights
and the CV are all computed on OOF predictions made through exactly those pixels.
"""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from kit import __version__
from kit.core.artifact import Metadata, write_metadata
from kit.core.atomic import atomic_path, write_text
from kit.evaluate.blend import VIEWS, choose_views, correlations, fit_weights, honest_cv
from kit.core.table import train_table, training_images
from kit.export.ensemble import Ensemble, Preprocess, view
from kit.train.members import Member, fold_weight_standardization, load_members
from kit.core.errors import KitError
from kit.core.images import load_rgb
from kit.export.int8 import CALIBRATION_IMAGES, EVAL_IMAGES, quantize, sample_images
from kit.export.onnx_export import export_onnx
from kit.evaluate.oof import Oof, read_oof
from kit.export.parity import parity_check
from kit.evaluate.rundir import FULL, RunDir, blend_dir

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


def plan_full(runs: list[RunDir], members: list[list[Member]], tta: Optional[bool],
              data_dir: Optional[str]) -> tuple[list[RunBlend], None, dict]:
    """The full model (RUN/full): no OOF predictions to choose views or weights on, or to score. Views as asked
    (identity by default); the task's decision parameters (multilabel thresholds) fitted on the run's fold models'
    OOF predictions where there are any, their estimate."""
    if len(runs) > 1 or len(members[0]) > 1:
        raise KitError("the full model exports alone (infer.py --run-dir RUN --folds full): it has no OOF predictions "
                       "to weigh it against fold models or other runs by")
    member, run = members[0][0], runs[0]
    if data_dir:
        member.config.data_dir = data_dir
    member.views, member.weight = ("identity", "hflip") if tta else ("identity",), 1.0
    task = member.task
    if run.folds("oof.csv"):
        oof = read_oof([run.oof(k) for k in run.folds("oof.csv")])
        task = task.fit(task.encode(oof.labels), oof.outputs)
    log.info(f"export: {run}/full: the model trained on every image (no CV of its own; TTA views "
             f"{list(member.views)})")
    numbers = {"rows": 0, "cv": None, "per_fold": {}, "metric": member.config.metric, "input_size": member.size,
               "task": task, "correlation": [[1.0]], "in_sample": None}
    return [RunBlend(run, [member], list(member.views), None, None, None)], None, numbers


def plan(runs: list[RunDir], folds: Optional[list[int]], tta: Optional[bool], data_dir: Optional[str],
         oof_images: Optional[int]) -> tuple[list[RunBlend], Oof, dict]:
    """Members, views and weights of every run, and the blend's numbers."""
    members = [load_members(run, folds) for run in runs]
    if any(m.fold == FULL for ms in members for m in ms):
        return plan_full(runs, members, tta, data_dir)
    common = sorted(set.intersection(*({m.fold for m in ms} for ms in members)))
    if not common:
        raise KitError(f"the runs have no finished fold in common ({[[m.fold for m in ms] for ms in members]})")
    members = [[m for m in ms if m.fold in common] for ms in members]
    oof = shared_oof(runs, members)
    cfg = members[0][0].config
    if data_dir:
        for ms in members:
            for m in ms:
                m.config.data_dir = data_dir
    size = max(m.size for ms in members for m in ms)
    rows = sample_rows(oof, oof_images)
    images = np.stack([load_rgb(p, size) for p in training_images(cfg, [oof.ids[i] for i in rows])])
    task, metric = members[0][0].task, cfg.metric
    y = task.encode([oof.labels[i] for i in rows])
    blends = []
    for run, ms in zip(runs, members):
        candidates = VIEWS if tta is None else (("identity", "hflip") if tta else ("identity",))
        by_view = view_outputs(ms, oof, rows, images, candidates)
        views = choose_views(task, metric, y, by_view) if tta is None else list(candidates)
        outputs = np.mean([by_view[v] for v in views], 0)
        blends.append(RunBlend(run, ms, views, outputs, task.score(metric, y, outputs),
                               task.score(metric, y, by_view["identity"])))
        log.info(f"export: {run}: TTA views {views} ({'chosen on ' + str(len(rows)) + ' OOF images' if tta is None else 'as asked'}"
                 f"; OOF {metric} {blends[-1].cv:.4f}, identity alone {blends[-1].identity_cv:.4f})")
    weights = fit_weights(task, metric, y, [b.outputs for b in blends])
    for b, w in zip(blends, weights):
        b.weight = float(w)
    cv, per_fold, blended = honest_cv(task, metric, y, oof.folds[rows], [b.outputs for b in blends])
    blended_in_sample = np.tensordot(weights, np.stack([b.outputs for b in blends]), 1)
    numbers = {"rows": len(rows), "cv": cv, "per_fold": per_fold, "metric": metric, "input_size": size,
               "task": task.fit(y, blended_in_sample),                    # multilabel thresholds: fitted on OOF
               "correlation": correlations(y, [b.outputs for b in blends]).tolist(),
               "in_sample": task.score(metric, y, blended_in_sample)}
    kept = [b for b in blends if b.weight > 0]
    for b in kept:
        for m in b.members:
            m.views, m.weight = tuple(b.views), b.weight / len(b.members)
    return blends, oof, numbers


def finite(value) -> Optional[float]:
    """A score for the metadata: None where there is none (the full model), never a NaN (not JSON)."""
    return float(value) if value is not None and np.isfinite(value) else None


def metadata(blends: list[RunBlend], numbers: dict, tta: bool) -> Metadata:
    kept = [b for b in blends if b.weight > 0]
    members = [m for b in kept for m in b.members]
    first, cfg = members[0], members[0].config
    single = len(blends) == 1
    params = numbers["task"].params()
    return Metadata(task=first.task.kind, classes=first.task.names, task_params=params, img_size=numbers["input_size"],
                    train_img_size=cfg.img_size if single else max(m.config.img_size for m in members),
                    mean=first.mean, std=first.std,
                    model=cfg.model if single else " + ".join(b.members[0].config.model for b in kept),
                    folds=sorted({m.fold for m in members}),
                    fold_scores=[finite(m.score) for m in members] if single else
                    [numbers["per_fold"][k] for k in sorted(numbers["per_fold"])],
                    cv_score=finite(blends[0].cv if single else numbers["cv"]), metric=numbers["metric"], tta=tta,
                    int8=False, id_col=cfg.id_col, label_col=cfg.label_col, kit_version=__version__,
                    members=[{"run": str(b.run), "model": b.members[0].config.model, "folds": [m.fold for m in b.members],
                              "img_size": b.members[0].size, "train_img_size": b.members[0].config.img_size,
                              "weight": round(b.weight, 6), "views": b.views, "cv": b.cv} for b in kept],
                    answer=numbers["task"].answer_spec())


def blend_report(blends: list[RunBlend], numbers: dict) -> str:
    metric = numbers["metric"]
    lines = [f"# Blend of {len(blends)} runs\n",
             f"Honest CV ({metric}, weights refitted without each scored fold): **{numbers['cv']:.4f}** on "
             f"{numbers['rows']} OOF images; with the weights fitted on all of them (optimistic): "
             f"{numbers['in_sample']:.4f}.\n",
             f"Graph input: {numbers['input_size']}px; members at another size are resized in the graph "
             f"(antialiased bilinear).\n",
             f"| run | model | folds | size (train/test) | views | OOF {metric} | weight |", "|---|---|---|---|---|---:|---:|"]
    for b in blends:
        m = b.members[0]
        lines.append(f"| {b.run} | {m.config.model} | {[x.fold for x in b.members]} | {m.config.img_size}/{m.size} | "
                     f"{', '.join(b.views)} | {b.cv:.4f} | {b.weight:.3f} |")
    lines += ["", "Per fold (honest): " + ", ".join(f"fold {k} {v:.4f}" for k, v in sorted(numbers["per_fold"].items())),
              "", "Correlation of the members' OOF predictions (probability of the true class):", "",
              "| | " + " | ".join(str(i) for i in range(len(blends))) + " |",
              "|---|" + "---:|" * len(blends)]
    for i, row in enumerate(numbers["correlation"]):
        lines.append(f"| {i} | " + " | ".join(f"{v:.3f}" for v in row) + " |")
    return "\n".join(lines) + "\n"


def probe_images(cfg, oof: Optional[Oof], count: int, size: int) -> np.ndarray:
    """Real images to check a graph on: a seeded sample of OOF rows, or (the full model) of the training images."""
    if oof is None:
        return sample_images(train_table(cfg).paths, size, count)
    return np.stack([load_rgb(p, size) for p in training_images(cfg, [oof.ids[i] for i in sample_rows(oof, count)])])


def export(run_dirs: str | Path | Sequence[str | Path], out: str | Path | None = None, folds: list[int] | None = None,
           tta: bool | None = None, int8: bool = False, data_dir: str | None = None,
           oof_images: Optional[int] = OOF_IMAGES) -> dict:
    """Export the fold models of one run, or the blend of several, to ONNX (and int8 if asked).

    TTA: by default each run keeps the views that improve its OOF score (the identity view always); `tta`
    True/False fixes it to [identity, horizontal flip] / [identity] for every run.
    """
    runs = [RunDir(r) for r in ([run_dirs] if isinstance(run_dirs, (str, Path)) else run_dirs)]
    if len({r.path.resolve() for r in runs}) != len(runs):
        raise KitError("a --run-dir is given twice; each run can join the blend once")
    blends, oof, numbers = plan(runs, folds, tta, data_dir, oof_images)
    kept = [b for b in blends if b.weight > 0]
    for b in blends:
        if b.weight == 0:
            log.info(f"export: {b.run} gets weight 0 on the OOF predictions; left out of the graph")
    members = [m for b in kept for m in b.members]
    cfg, size = members[0].config, numbers["input_size"]
    reference = Ensemble.of(members).eval()                                   # as trained
    folded = [copy.deepcopy(m.model) for m in members]
    n_folded = sum(fold_weight_standardization(m) for m in folded)
    meta = metadata(blends, numbers, any(len(b.views) > 1 for b in kept))
    images = probe_images(cfg, oof, PARITY_IMAGES, size)
    out = Path(out) if out else (runs[0].ensemble_file() if len(runs) == 1 else blend_dir(runs) / "ensemble.onnx")
    summary = {"path": str(out), "folds": meta.folds, "folded_convs": n_folded, "members": meta.members,
               "cv": meta.cv_score, "identity_cv": [b.identity_cv for b in blends], "blend": numbers}
    with atomic_path(out) as tmp:
        export_onnx(Ensemble.of(members, folded).eval(), size, tmp)
        write_metadata(tmp, meta)
        summary["parity_max_abs_diff"] = parity_check(tmp, reference, images)
        summary["graph"] = tmp.read_bytes()         # exactly what was checked: predict with this, not the path
    if len(runs) > 1:
        write_text(out.with_name("blend.md"), blend_report(blends, numbers))
        log.info(f"export: blend of {len(kept)} run(s) -> {out}; honest CV {numbers['metric']} {numbers['cv']:.4f} "
                 f"(weights {', '.join(f'{b.weight:.3f}' for b in blends)}; report {out.with_name('blend.md')})")
    log.info(f"export: {len(members)} fold model(s) {meta.folds} of {meta.model} -> {out} ({n_folded} "
             f"weight-standardized convs folded, TTA {'on' if meta.tta else 'off'}, parity max |Δprob| "
             f"{summary['parity_max_abs_diff']:.2e})")
    if int8:
        calibration = sample_images(train_table(cfg).paths, size, CALIBRATION_IMAGES)
        meta8 = Metadata(**{**meta.__dict__, "int8": True})
        evaluation = probe_images(cfg, oof, EVAL_IMAGES, size)
        summary["int8"] = quantize(out, out.with_name(out.stem + ".int8.onnx"), calibration, evaluation,
                                   lambda path: write_metadata(path, meta8), meta.task_())
    return summary

