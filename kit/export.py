"""A run dir's fold models -> one ONNX ensemble graph (kit.artifact's contract), checked against PyTorch before
it is written, and optionally its int8 twin."""
from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Optional

import numpy as np

from . import __version__
from .artifact import Metadata, write_metadata
from .atomic import atomic_path
from .config import Config
from .data import train_table, training_images
from .ensemble import Ensemble, Member, fold_weight_standardization, load_members
from .images import load_rgb
from .int8 import CALIBRATION_IMAGES, EVAL_IMAGES, quantize, sample_images
from .onnx_export import export_onnx
from .oof import Oof, read_oof
from .parity import parity_check
from .rundir import RunDir

PARITY_IMAGES = 64
log = logging.getLogger(__name__)


def oof_sample(oof: Oof, cfg: Config, limit: Optional[int]) -> np.ndarray:
    """Up to `limit` of the OOF rows' images (seeded pick), as the graph takes them."""
    pick = np.arange(len(oof))
    if limit is not None and len(oof) > limit:
        pick = np.sort(np.random.default_rng(0).choice(len(oof), limit, replace=False))
    paths = training_images(cfg, [oof.ids[i] for i in pick])
    return np.stack([load_rgb(p, cfg.img_size) for p in paths])


def metadata(members: list[Member], oof: Oof, tta: bool) -> Metadata:
    first, cfg = members[0], members[0].config
    task = first.task
    return Metadata(task=task.kind, classes=task.names, img_size=cfg.img_size, mean=first.mean, std=first.std,
                    model=cfg.model, folds=[m.fold for m in members], fold_scores=[m.score for m in members],
                    cv_score=task.score(cfg.metric, task.encode(oof.labels), oof.outputs), metric=cfg.metric, tta=tta,
                    int8=False, id_col=cfg.id_col, label_col=cfg.label_col, kit_version=__version__)


def export(run_dir: str | Path, out: str | Path | None = None, folds: list[int] | None = None, tta: bool | None = None,
           int8: bool = False, data_dir: str | None = None) -> dict:
    """Export the fold ensemble of `run_dir` to ONNX (and int8 if asked). Returns a summary of what it did.

    Flip TTA defaults to what training did: a model trained without horizontal flips (digits, text) is not
    flip invariant, and averaging in mirrored views then costs accuracy (on the demo: 0.99 -> 0.94).
    """
    run = RunDir(run_dir)
    members = load_members(run, folds)
    cfg = members[0].config
    if data_dir:
        cfg.data_dir = data_dir
    tta = cfg.aug_hflip > 0 if tta is None else tta
    reference = Ensemble.of(members, tta).eval()                                 # as trained
    folded = [copy.deepcopy(m.model) for m in members]
    n_folded = sum(fold_weight_standardization(m) for m in folded)
    oof = read_oof([m.run.oof(m.fold) for m in members])
    meta = metadata(members, oof, tta)
    images = oof_sample(oof, cfg, PARITY_IMAGES)
    out = Path(out) if out else run.ensemble_file()
    summary = {"path": str(out), "folds": meta.folds, "folded_convs": n_folded}
    with atomic_path(out) as tmp:
        export_onnx(Ensemble.of(members, tta, folded).eval(), cfg.img_size, tmp)
        write_metadata(tmp, meta)
        summary["parity_max_abs_diff"] = parity_check(tmp, reference, images)
        summary["graph"] = tmp.read_bytes()         # exactly what was checked: predict with this, not the path
    log.info(f"export: {len(members)} fold(s) {meta.folds} of {cfg.model} -> {out} ({n_folded} weight-standardized "
             f"convs folded, TTA {'on' if tta else 'off'}, parity max |Δprob| {summary['parity_max_abs_diff']:.2e})")
    if int8:
        calibration = sample_images(train_table(cfg).paths, cfg.img_size, CALIBRATION_IMAGES)
        meta8 = Metadata(**{**meta.__dict__, "int8": True})
        summary["int8"] = quantize(out, out.with_name(out.stem + ".int8.onnx"), calibration,
                                   oof_sample(oof, cfg, EVAL_IMAGES), lambda path: write_metadata(path, meta8))
    return summary
