"""What a target is: how label cells become training targets, which activation turns the model's outputs into
predictions, which metrics score them, how predictions become submission cells, and what the folds stratify on.

Torch-free and scikit-learn-free at import (the deployed predictor decodes with it); the loss that goes with a
task is in kit.objective, its metrics in kit.metrics.
"""
from __future__ import annotations

import re
from typing import Sequence

import numpy as np

from .errors import KitError

_INT = re.compile(r"^[+-]?\d+$")


def label_order(values) -> list[str]:
    """Distinct labels in model-output order: integer-looking labels numerically ("2" before "10"), then the
    rest alphabetically. Labels stay strings exactly as written, so "1" and "01" are two classes."""
    def key(v: str):
        return (0, int(v), v) if _INT.match(v) else (1, 0, v)
    return sorted(set(values), key=key)


class Task:
    kind: str
    activation: str                 # what the exported graph applies to the model's outputs
    default_metric: str

    def __init__(self, names: Sequence[str]):
        self.names = list(names)    # one per model output

    def encode(self, labels: Sequence[str]) -> np.ndarray:
        """Label cells -> training targets."""
        raise NotImplementedError

    def stratify_key(self, labels: Sequence[str]) -> list[str]:
        """What the folds keep balanced."""
        raise NotImplementedError

    def output_columns(self) -> list[str]:
        """Column names of the predictions in OOF and probability files."""
        return [f"prob_{n}" for n in self.names]

    def label_cells(self, outputs: np.ndarray) -> list[str]:
        """Predictions -> the submission's label column."""
        raise NotImplementedError

    def metrics(self) -> dict:
        from .metrics import METRICS
        return METRICS[self.kind]

    def score(self, metric: str, targets: np.ndarray, outputs: np.ndarray) -> float:
        return self.metrics()[metric].fn(np.asarray(targets), np.asarray(outputs, dtype=np.float64))

    def is_better(self, metric: str, new: float, best: float | None) -> bool:
        """Whether `new` beats `best`; a non-finite score never does."""
        if not np.isfinite(new):
            return False
        if best is None:
            return True
        return new > best if self.metrics()[metric].higher_is_better else new < best

    def check_labels(self, labels: Sequence[str], what: str) -> None:
        """Refuse labels this task's outputs cannot represent (another competition's model)."""
        unknown = sorted(set(labels) - set(self.names))
        if unknown:
            raise KitError(f"{what} has label(s) {unknown[:5]} that the model does not know (its {len(self.names)} "
                           f"classes: {self.names[:10]}); it was trained for another competition")


class Multiclass(Task):
    """One label per image; the model's outputs are class scores, softmax gives probabilities."""
    kind = "multiclass"
    activation = "softmax"
    default_metric = "accuracy"

    @classmethod
    def from_labels(cls, labels: Sequence[str]) -> "Multiclass":
        classes = label_order(labels)
        if len(classes) < 2:
            raise KitError(f"the training labels hold only one class ({classes[0]!r}); a classifier needs at least "
                           f"two (every score would be a meaningless 1.0)")
        return cls(classes)

    def encode(self, labels):
        index = {c: i for i, c in enumerate(self.names)}
        return np.array([index[v] for v in labels], dtype=np.int64)

    def stratify_key(self, labels):
        return list(labels)

    def label_cells(self, outputs):
        return [self.names[i] for i in np.asarray(outputs).argmax(1)]


TASKS = {t.kind: t for t in (Multiclass,)}


def from_labels(kind: str, labels: Sequence[str]) -> Task:
    return TASKS[kind].from_labels(labels)


def restore(kind: str, names: Sequence[str]) -> Task:
    """A task saved with a run (classes.json) or in an ONNX file's metadata."""
    if kind not in TASKS:
        raise KitError(f"unknown task {kind!r}; this kit knows {', '.join(TASKS)}")
    return TASKS[kind]([str(n) for n in names])
