"""What a fold checkpoint holds, built and read in this module only (kit.store.checkpoint does the safe file I/O).
This docstring is the one description of both files (tests/e2e/test_train_e2e.py checks it against real ones).

RUN/fold<k>/best.pt   the weights that scored best on the fold's validation images:
  identity              {"config", "classes", "task", "fold", "metric", "mean", "std", "kit_version", "split",
                        "world_size"}: the resolved Config as a dict, the output names, the task dict (task.json's),
                        the fold, the metric, the normalization, the kit version, a hash of the fold's validation
                        ids, the torchrun process count
  best                  {"model", "epoch", "score", "averaged"}: the evaluated weights (EMA when on), the epoch, its
                        score, and the epochs whose weights were averaged into them (--avg-top-k; [] for one epoch)
RUN/fold<k>/last.pt   what --resume continues from: identity and
  resumable             {"model", "optimizer", "scaler", "ema", "epoch", "step_in_epoch", "updates", "best_score",
                        "best_epoch", "history", "top_k", "plan", "rng"}: the raw and EMA weights, optimizer and AMP
                        scaler states, progress counters, metrics.csv's rows as numbers, the K best epochs' weights
                        for --avg-top-k ({"epoch", "score", "model"} each; [] when off), the --time-budget plan
                        (kit.train.budget; None without one), every rank's RNG states
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from kit import __version__

from kit.store import checkpoint
from kit.core.errors import KitError
from kit.store.oof import Epoch, as_dicts
from kit.store.rundir import setup_changes

log = logging.getLogger(__name__)


def split_fingerprint(ids: list[str], val_rows: np.ndarray) -> str:
    return hashlib.sha1("\n".join(ids[r] for r in val_rows).encode()).hexdigest()


def identity(cfg, task, fold: int, split: str, world_size: int) -> dict:
    """What a fold model is: enough to rebuild it (with the normalization, added once the model exists), and to
    refuse resuming it under another setup."""
    return {"config": cfg.to_dict(), "classes": task.names, "task": task.to_dict(), "fold": fold, "metric": cfg.metric,
            "kit_version": __version__, "split": split, "world_size": world_size}


@dataclass
class Progress:
    """Where a fold's training stands; saved in last.pt."""
    epoch: int = 0                  # epochs completed
    step_in_epoch: int = 0          # batches of the current epoch completed
    updates: int = 0                # optimizer steps
    best_score: Optional[float] = None
    best_epoch: int = -1
    history: list[Epoch] = field(default_factory=list)
    top: list = field(default_factory=list)      # --avg-top-k: the K best epochs' {"epoch", "score", "model"}


def save_best(path: Path, ident: dict, weights: dict, epoch: int, score: float, averaged: list | None = None) -> None:
    checkpoint.save({**ident, "model": weights, "epoch": epoch, "score": score, "averaged": averaged or []}, path)


@dataclass
class BestModel:
    """best.pt read back: what predicting with a fold model needs, and where it came from."""
    config: dict                    # the resolved Config as a dict
    task: dict | str                # the task dict (task.json's); "multiclass" in checkpoints older than tasks
    classes: list
    weights: dict                   # the model's state dict
    mean: list
    std: list
    epoch: int
    score: float                    # NaN for the full model (no validation images)


def read_best(path: Path) -> BestModel:
    """A fold's best.pt, refused in one line when it is not one of this kit's."""
    saved = checkpoint.load(path)
    for key in ("config", "classes", "model", "mean", "std", "epoch", "score"):
        if key not in saved:
            raise KitError(f"{path} is not a fold checkpoint of this kit (no {key!r}); retrain the fold")
    return BestModel(saved["config"], saved.get("task", "multiclass"), saved["classes"], saved["model"], saved["mean"],
                     saved["std"], int(saved["epoch"]), float(saved["score"]))


def save_last(path: Path, ident: dict, model, optimizer, scaler, ema, progress: Progress, rng: list,
              plan: dict | None = None) -> None:
    checkpoint.save({**ident, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                     "scaler": scaler.state_dict(), "ema": ema.module.state_dict() if ema is not None else None,
                     "epoch": progress.epoch, "step_in_epoch": progress.step_in_epoch, "updates": progress.updates,
                     "best_score": progress.best_score, "best_epoch": progress.best_epoch,
                     "history": as_dicts(progress.history), "top_k": progress.top, "plan": plan, "rng": rng}, path)


def check_resume(saved: dict, ident: dict, force: bool) -> None:
    """Resuming under other settings would silently produce a model that no single config describes."""
    changed = setup_changes(saved["config"], ident["config"])
    if saved.get("world_size", 1) != ident["world_size"]:
        changed.append(f"processes: {saved.get('world_size', 1)} -> {ident['world_size']} (the global batch)")
    if saved.get("split") != ident["split"]:
        changed.append("the fold's validation images (folds file)")
    if saved["classes"] != ident["classes"]:
        changed.append("the class list")
    if not changed:
        return
    if force:
        log.warning(f"warning: resuming with changed settings ({'; '.join(changed)}) because --force-resume was given")
        return
    raise KitError(f"cannot resume fold {ident['fold']}: {'; '.join(changed)}. Resume with the original "
                   f"settings, pass --force-resume to continue anyway, or drop --resume to retrain the fold")


def check_resumable(path: Path, ident: dict, force: bool) -> None:
    """Refuse, before anything is written, to resume a fold under another setup (kit.train.run's checks)."""
    load_resumable(path, ident, force)


def load_resumable(path: Path, ident: dict, force: bool) -> dict:
    """last.pt, after checking it was trained with the same setup (before any model is built for it)."""
    saved = checkpoint.load(path)
    for key in ("config", "classes", "optimizer", "scaler", "epoch", "step_in_epoch", "updates", "history", "rng"):
        if key not in saved:
            raise KitError(f"{path} is not a resumable checkpoint (no {key!r}); drop --resume to retrain the fold")
    check_resume(saved, ident, force)
    return saved


def restore(saved: dict, model, optimizer, scaler, ema) -> tuple[Progress, list]:
    """Load a resumable checkpoint into the training objects; returns the progress and every rank's RNG states."""
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    scaler.load_state_dict(saved["scaler"])
    if ema is not None and saved.get("ema") is not None:
        ema.module.load_state_dict(saved["ema"])
    progress = Progress(saved["epoch"], saved["step_in_epoch"], saved["updates"], saved["best_score"],
                        saved["best_epoch"], [Epoch(**e) for e in saved["history"]], saved.get("top_k", []))
    return progress, saved["rng"]
