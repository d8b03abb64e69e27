"""What a run could do about skewed classes, said before it trains and in cv.md; never a silent change of
defaults (issue 29: the options' measured effects differ by metric and test set)."""
from __future__ import annotations

import numpy as np

from kit.core.errors import KitError


SKEW = 10.0           # largest / smallest class count from which the run says what it could do about it


def imbalance_advice(task, targets, cfg) -> str:
    """When the classes are skewed (largest/smallest >= SKEW) and the run does nothing about it, what it could do and
    what each option measured on a 1:20 long tail (bench/RESULTS.md "Class imbalance"); never a silent change of
    defaults. Empty otherwise (and for a regression target, which has no classes)."""
    if cfg.sampler != "none" or cfg.class_weights != "none" or cfg.loss != "ce":
        return ""
    try:
        counts = np.bincount(task.sampling_classes(targets))
    except (KitError, NotImplementedError):
        return ""
    counts = counts[counts > 0]
    if len(counts) < 2 or counts.max() < SKEW * counts.min():
        return ""
    return (f"The classes are imbalanced (largest {counts.max()} images, smallest {counts.min()}: "
            f"{counts.max() / counts.min():.0f}:1) and this run does nothing about it. Measured on a 1:20 long tail "
            f"with a balanced test set: --sampler balanced +9.3 pt macro-F1, --sampler sqrt +5.6, --loss focal -1.2 "
            f"(bench/RESULTS.md); which helps depends on the competition's metric and test set (--metric macro_f1 or "
            f"balanced_accuracy scores the folds as a balanced test would).")
