"""What a target is: how label cells become training targets, which activation turns the model's outputs into
predictions, which metrics score them, how predictions become submission cells, and what the folds stratify on.

  multiclass  one label per image; softmax probabilities; the submission names the class
  multilabel  space-separated tags per image (or one 0/1 column per tag); sigmoid probabilities; the
              submission lists the tags above per-tag thresholds fitted on OOF (or one probability column per tag)
  regression  a number per image; the model's output mapped back to the target's scale; the submission writes it

Torch-free and scikit-learn-free at import (the deployed predictor decodes with it); the loss that goes with a
task is in kit.objective, its metrics in kit.metrics.
"""
from __future__ import annotations

import math
import re
from typing import Optional, Sequence

import numpy as np

from .errors import KitError

_INT = re.compile(r"^[+-]?\d+$")
KINDS = ("multiclass", "multilabel", "regression")


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
    empty_label_is_a_prediction = False   # multilabel: an image with no tag; elsewhere an empty cell is missing

    def __init__(self, names: Sequence[str]):
        self.names = list(names)    # one per model output

    def encode(self, labels: Sequence[str]) -> np.ndarray:
        """Label cells -> training targets."""
        raise NotImplementedError

    def stratify_key(self, labels: Sequence[str]):
        """What the folds keep balanced: a label per row, or a 0/1 matrix (multilabel)."""
        raise NotImplementedError

    def output_columns(self) -> list[str]:
        """Column names of the predictions in OOF and probability files."""
        return [f"prob_{n}" for n in self.names]

    def label_cells(self, outputs: np.ndarray) -> list[str]:
        """Predictions -> the submission's label column."""
        raise NotImplementedError

    def to_dict(self) -> dict:
        """Everything needed to rebuild it (task.json, checkpoints, the ONNX metadata): plain data."""
        return {"kind": self.kind, "names": self.names}

    def metrics(self) -> dict:
        from .metrics import METRICS
        return METRICS[self.kind]

    def check_metric(self, metric: str) -> str:
        """The metric to use (`auto`: the task's default), after checking it fits the task."""
        metric = self.default_metric if metric == "auto" else metric
        if metric not in self.metrics():
            raise KitError(f"invalid setting: metric {metric!r} does not apply to a {self.kind} task; choose one of "
                           f"{', '.join(self.metrics())} (or auto)")
        return metric

    def score(self, metric: str, targets: np.ndarray, outputs: np.ndarray) -> float:
        return self.metrics()[metric].fn(np.asarray(targets), np.asarray(outputs, dtype=np.float64))

    def is_better(self, metric: str, new: float, best: float | None) -> bool:
        """Whether `new` beats `best`; a non-finite score never does."""
        if not np.isfinite(new):
            return False
        if best is None:
            return True
        return new > best if self.metrics()[metric].higher_is_better else new < best

    def fit(self, targets: np.ndarray, outputs: np.ndarray) -> "Task":
        """This task with its decision parameters fitted on OOF predictions (multilabel: the thresholds)."""
        return self

    def same_decision(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Per row, whether two sets of predictions lead to the same submission (int8 vs fp32)."""
        return np.array([x == y for x, y in zip(self.label_cells(a), self.label_cells(b))])


class Multiclass(Task):
    """One label per image; the model's outputs are class scores, softmax gives probabilities."""
    kind = "multiclass"
    activation = "softmax"
    default_metric = "accuracy"

    @classmethod
    def from_labels(cls, labels: Sequence[str], **_) -> "Multiclass":
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


def tags_of(cell: str) -> list[str]:
    return cell.split()


class Multilabel(Task):
    """Any number of tags per image; one sigmoid output per tag. A tag is predicted when its probability reaches
    its threshold (fitted on OOF to maximize that tag's F1; 0.5 before fitting); `min_labels` tags at least."""
    kind = "multilabel"
    activation = "sigmoid"
    default_metric = "f1_micro"
    empty_label_is_a_prediction = True

    def __init__(self, names: Sequence[str], thresholds: Optional[Sequence[float]] = None, min_labels: int = 0):
        super().__init__(names)
        self.thresholds = [float(t) for t in thresholds] if thresholds is not None else [0.5] * len(self.names)
        self.min_labels = int(min_labels)

    @classmethod
    def from_labels(cls, labels: Sequence[str], min_labels: int = 0, **_) -> "Multilabel":
        tags = label_order({t for cell in labels for t in tags_of(cell)})
        if len(tags) < 2:
            raise KitError(f"the training labels hold {len(tags)} tag(s) {tags}; a multi-label task needs at least "
                           f"two (with one, it is a binary multiclass task: pass --task multiclass)")
        return cls(tags, min_labels=min_labels)

    def encode(self, labels):
        index = {t: i for i, t in enumerate(self.names)}
        out = np.zeros((len(labels), len(self.names)), dtype=np.float32)
        for r, cell in enumerate(labels):
            for t in tags_of(cell):
                out[r, index[t]] = 1.0
        return out

    def stratify_key(self, labels):
        return self.encode(labels).astype(np.int64)

    def label_cells(self, outputs):
        outputs = np.asarray(outputs)
        chosen = outputs >= np.asarray(self.thresholds)
        short = chosen.sum(1) < self.min_labels            # rows with too few tags get their most probable ones
        if short.any():
            top = np.argsort(-outputs[short], axis=1, kind="stable")[:, :self.min_labels]
            fill = chosen[short]
            np.put_along_axis(fill, top, True, axis=1)
            chosen[short] = fill
        return [" ".join(t for t, on in zip(self.names, row) if on) for row in chosen]

    def check_labels(self, labels, what):
        unknown = sorted({t for cell in labels for t in tags_of(cell)} - set(self.names))
        if unknown:
            raise KitError(f"{what} has tag(s) {unknown[:5]} that the model does not know (its tags: "
                           f"{self.names[:10]})")

    def to_dict(self):
        return {**super().to_dict(), "thresholds": self.thresholds, "min_labels": self.min_labels}

    def fit(self, targets, outputs):
        from .metrics import best_thresholds
        return Multilabel(self.names, best_thresholds(np.asarray(targets), np.asarray(outputs)), self.min_labels)


class Regression(Task):
    """One number per image. The model learns a scaled target (`scale`), and its output is mapped back:
    standard (MSE, Huber losses): value = shift + factor * output; unit (BCE on the target scaled to [0, 1], the
    trick of top PetFinder Pawpularity teams): value = shift + factor * sigmoid(output)."""
    kind = "regression"
    activation = "value"
    default_metric = "rmse"

    def __init__(self, names: Sequence[str], scale: Optional[dict] = None):
        super().__init__(names)
        self.scale = dict(scale or {"kind": "standard", "shift": 0.0, "factor": 1.0})

    @classmethod
    def from_labels(cls, labels: Sequence[str], name: str = "target", loss: str = "mse", **_) -> "Regression":
        values = parse_numbers(labels)
        if loss == "bce":
            lo, hi = float(values.min()), float(values.max())
            scale = {"kind": "unit", "shift": lo, "factor": (hi - lo) or 1.0}
        else:
            scale = {"kind": "standard", "shift": float(values.mean()), "factor": float(values.std()) or 1.0}
        return cls([name], scale)

    def encode(self, labels):
        return parse_numbers(labels).astype(np.float32).reshape(-1, 1)

    def stratify_key(self, labels):
        """Quantile bins of the target (at most 10, at least 2 rows per fold in each)."""
        values = parse_numbers(labels)
        bins = int(min(10, max(2, len(values) // 50)))
        edges = np.unique(np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1]))
        return [f"bin{b}" for b in np.searchsorted(edges, values, side="right")]

    def output_columns(self):
        return [f"pred_{n}" for n in self.names]

    def label_cells(self, outputs):
        return [f"{v:.6g}" for v in np.asarray(outputs)[:, 0]]

    def same_decision(self, a, b):
        """Within 1 % of the target's spread (its standard deviation, or range for the unit scaling)."""
        return np.abs(np.asarray(a)[:, 0] - np.asarray(b)[:, 0]) <= 0.01 * self.scale["factor"]

    def check_labels(self, labels, what):
        parse_numbers(labels, what)

    def to_dict(self):
        return {**super().to_dict(), "scale": self.scale}


def parse_numbers(labels: Sequence[str], what: str = "the label column") -> np.ndarray:
    values = np.empty(len(labels))
    for i, cell in enumerate(labels):
        try:
            values[i] = float(cell)
        except ValueError:
            raise KitError(f"{what}: {cell!r} (row {i + 1}) is not a number; a regression target must be numeric "
                           f"(or pass --task multiclass)") from None
        if not math.isfinite(values[i]):
            raise KitError(f"{what}: {cell!r} (row {i + 1}) is not a finite number")
    return values


TASKS = {t.kind: t for t in (Multiclass, Multilabel, Regression)}


def infer_kind(labels: Sequence[str], from_columns: bool = False) -> tuple[str, str]:
    """(task kind, why) from the label cells; refuse where they do not say."""
    if from_columns:
        return "multilabel", "one 0/1 column per tag"
    if any(not cell.strip() for cell in labels):
        return "multilabel", "some images have no label (an empty tag list)"
    numbers = []
    for cell in labels:
        try:
            numbers.append(float(cell))
        except ValueError:
            numbers = None
            break
    if numbers is not None:
        if any(not float(n).is_integer() for n in numbers):
            return "regression", "the labels are numbers with fractions"
        distinct = len(set(numbers))
        if distinct <= 20:
            return "multiclass", f"the labels are {distinct} distinct integers"
        raise KitError(f"the labels are integers with {distinct} distinct values: a score to predict, or "
                       f"{distinct} classes? Pass --task regression or --task multiclass")
    singles = {cell.strip() for cell in labels if len(tags_of(cell)) == 1}
    if any(len(tags_of(cell)) > 1 and set(tags_of(cell)) & singles for cell in labels):
        return "multilabel", "labels are space-separated tags that also occur alone"
    return "multiclass", "one label per image"


def build(kind: str, labels: Sequence[str], label_col: str = "label", loss: str = "mse", min_labels: int = 0) -> Task:
    """The task of a training set's label cells."""
    return TASKS[kind].from_labels(labels, name=label_col, loss=loss, min_labels=min_labels)


def from_labels(kind: str, labels: Sequence[str]) -> Task:
    return TASKS[kind].from_labels(labels)


def restore(saved, names: Sequence[str] | None = None) -> Task:
    """A task saved with a run (task.json, checkpoints) or in an ONNX file's metadata: a dict from to_dict(), or
    (older files) a kind and the output names."""
    if isinstance(saved, str):
        saved = {"kind": saved, "names": list(names or [])}
    kind = saved.get("kind")
    if kind not in TASKS:
        raise KitError(f"unknown task {kind!r}; this kit knows {', '.join(TASKS)}")
    names = [str(n) for n in saved["names"]]
    if kind == "multilabel":
        return Multilabel(names, saved.get("thresholds"), saved.get("min_labels", 0))
    if kind == "regression":
        return Regression(names, saved.get("scale"))
    return Multiclass(names)
