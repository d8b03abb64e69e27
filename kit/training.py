"""A training run: validate the competition folder, load/create folds, train the asked folds, score the CV.

Run dir layout (default runs/default):
  config.yaml           the resolved config
  classes.json          JSON list of the original label values, in model output order
  fold<k>/best.pt       best weights of fold k (see kit.checkpoint)
  fold<k>/last.pt       resumable state of fold k
  fold<k>/oof.csv       image_id,label,fold,prob_<class>... for fold k's validation images (best epoch)
  fold<k>/metrics.csv   epoch,lr,train_loss,val_loss,metric,score,is_best,seconds,train_images_per_s
  oof.csv               all folds' OOF rows (after --fold all), same schema
  curves.png, confusion_matrix.png, report.csv, cv.md, worst.png   see kit.report (rebuilt after every fold)
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml

from . import distributed
from . import folds as folds_mod
from .atomic import write_text
from .config import RESULT_KEYS, Config, save_config
from .data import check_images_readable, class_list, targets, train_table
from .engine import resolve_device, train_fold, write_oof
from .errors import KitError
from .metrics import score
from .model import check_model_name
from .report import write_reports


def parse_fold_arg(fold: str, num_folds: int, folds_csv: str) -> list[int]:
    if fold == "all":
        return list(range(num_folds))
    try:
        k = int(fold)
    except ValueError:
        raise KitError(f"--fold must be a fold number or 'all', got {fold!r}") from None
    if not 0 <= k < num_folds:
        raise KitError(f"--fold {k} is out of range: {folds_csv} has {num_folds} folds (0..{num_folds - 1})")
    return [k]


def _check_run_dir(run_dir: Path, cfg: Config, classes: list) -> None:
    """A run dir holds fold models of one setup only, so that they can be ensembled."""
    config_path, classes_path = run_dir / "config.yaml", run_dir / "classes.json"
    if classes_path.exists() and json.loads(classes_path.read_text()) != classes:
        raise KitError(f"{run_dir} holds models for other classes ({classes_path}); train into a new --run-dir")
    if config_path.exists():
        saved = yaml.safe_load(config_path.read_text()) or {}
        changed = [k for k in RESULT_KEYS if saved.get(k) != getattr(cfg, k)]
        if changed:
            diffs = ", ".join(f"{k}: {saved.get(k)!r} -> {getattr(cfg, k)!r}" for k in changed)
            raise KitError(f"{run_dir} holds fold models trained with another setup ({diffs}); their ensemble "
                           f"would be invalid. Use a new --run-dir, or the original settings")


def run(cfg: Config, fold: str = "0", resume: bool = False, force_resume: bool = False) -> dict:
    """Train the asked folds. Under torchrun every process runs this; the checks below are deterministic, so
    every rank stops on the same error, and only rank 0 writes."""
    resolve_device(cfg.device)          # fail fast on settings, before reading thousands of images
    check_model_name(cfg.model)
    d = distributed.init(cfg.device)
    try:
        return _run(cfg, fold, resume, force_resume, d)
    finally:
        distributed.shutdown()


def _run(cfg: Config, fold: str, resume: bool, force_resume: bool, d: distributed.Dist) -> dict:
    table = train_table(cfg)
    check_images_readable(table.paths)
    classes = class_list(table.labels)
    fold_of_row = folds_mod.load_or_create(cfg.folds_csv, table, cfg.num_folds, cfg.seed, write=d.main)
    cfg.num_folds = int(fold_of_row.max()) + 1
    todo = parse_fold_arg(fold, cfg.num_folds, cfg.folds_csv)
    run_dir = Path(cfg.run_dir)
    _check_run_dir(run_dir, cfg, classes)
    distributed.barrier()               # every rank has compared the run dir before rank 0 rewrites it
    if d.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
        write_text(run_dir / "classes.json", json.dumps(classes) + "\n")

    y = targets(table.labels, classes)
    results = []
    for k in todo:
        results.append(train_fold(cfg, table, fold_of_row, k, classes, run_dir, y, resume or force_resume,
                                  force_resume))
        if d.main:
            write_reports(run_dir, quiet=True)

    summary = {"folds": {r.fold: {"score": r.best_score, "epoch": r.best_epoch, "seconds": r.seconds}
                         for r in results}}
    if fold == "all" and d.main:
        rows = np.concatenate([r.val_index for r in results])
        probs = np.concatenate([r.oof for r in results])
        order = np.argsort(rows)
        rows, probs = rows[order], probs[order]
        write_oof(run_dir / "oof.csv", table, rows, fold_of_row, probs, classes)
        fold_scores = [r.best_score for r in results]
        summary["cv"] = score(cfg.metric, y[rows], probs)
        print(f"CV {cfg.metric}: {summary['cv']:.4f} over {len(rows)} OOF images "
              f"(folds: {', '.join(f'{s:.4f}' for s in fold_scores)}; mean {np.mean(fold_scores):.4f} "
              f"± {np.std(fold_scores):.4f}) -> {run_dir / 'oof.csv'}")
        write_reports(run_dir)
    return summary
