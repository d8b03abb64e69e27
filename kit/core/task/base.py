"""The Task: everything that depends on what a target is, decided in one class per kind.

A Task turns label cells into training targets and stratification keys, owns the loss (hard targets with label
smoothing, or mixed soft targets), the activation the exported graph applies to the model's outputs, the metrics
and their direction, the decision parameters fitted on OOF predictions, the submission cells, and the JSON answer
for one image. Nothing outside kit/core/task asks which kind of task it holds.

Torch-free and scikit-learn-free at import (the deployed predictor decodes with it): the loss and activation
methods import torch when they are called (training and export only), the metrics import scikit-learn lazily.

task.json (written by kit.store.rundir, and the same dict in checkpoints and the ONNX metadata `kit.task` +
`kit.task_params`) is `to_dict()`: {"kind", "names"} plus a multilabel task's "thresholds" and "min_labels", or a
regression task's "scale" and "loss".
"""
from __future__ import annotations

import re
from typing import Optional, Sequence

import numpy as np

from kit.core.errors import KitError

_INT = re.compile(r"^[+-]?\d+$")


def label_order(values) -> list[str]:
    """Distinct labels in model-output order: integer-looking labels numerically ("2" before "10"), then the
    rest alphabetically. Labels stay strings exactly as written, so "1" and "01" are two classes."""
    def key(v: str):
        return (0, int(v), v) if _INT.match(v) else (1, 0, v)
    return sorted(set(values), key=key)


class Task:
    kind: str
    default_metric: str
    empty_label_is_a_prediction = False   # multilabel: an image with no tag; elsewhere an empty cell is missing
    reads_tag_columns = False             # multilabel: a table of one 0/1 column per tag is its labels
    plots: tuple[str, ...] = ()           # the report's per-task figures (kit.evaluate.report draws them)

    def __init__(self, names: Sequence[str]):
        self.names = list(names)    # one per model output

    # --- labels -----------------------------------------------------------------------------------------------

    @classmethod
    def from_labels(cls, labels: Sequence[str], **settings) -> "Task":
        """The task of a training set's label cells."""
        raise NotImplementedError

    @classmethod
    def from_dict(cls, saved: dict) -> "Task":
        return cls([str(n) for n in saved["names"]])

    def encode(self, labels: Sequence[str]) -> np.ndarray:
        """Label cells -> training targets."""
        raise NotImplementedError

    def stratify_key(self, labels: Sequence[str]):
        """What the folds keep balanced: a label per row, or a 0/1 matrix (multilabel)."""
        raise NotImplementedError

    def check_labels(self, labels: Sequence[str], what: str) -> None:
        """Refuse label cells this task's model cannot have been trained on."""

    def same_outputs(self, other: "Task") -> bool:
        """Whether two tasks predict the same outputs (models of both can be ensembled or compared)."""
        return type(self) is type(other) and self.names == other.names

    def to_dict(self) -> dict:
        """Everything needed to rebuild it (task.json, checkpoints, the ONNX metadata): plain data."""
        return {"kind": self.kind, "names": self.names}

    def params(self) -> dict:
        """to_dict() without kind and names: the ONNX metadata's `kit.task_params`."""
        return {k: v for k, v in self.to_dict().items() if k not in ("kind", "names")}

    # --- the model's outputs (torch, training and export only) -----------------------------------------------

    def activate(self, outputs):
        """Model outputs -> the task's predictions: the same function in validation and in the exported graph."""
        raise NotImplementedError

    def soft_targets(self, target, smoothing: float):
        """The float target matrix [B, C] the loss compares with (label smoothing folded in)."""
        raise NotImplementedError

    def loss(self, logits, soft, class_weights=None, focal_gamma: Optional[float] = None):
        """Per-row loss [B] of the model's outputs against soft targets (a mixed batch's `mix @ soft_targets`);
        `class_weights` [C] weigh each output's term, `focal_gamma` makes it the focal loss (Lin et al. 2017)."""
        raise NotImplementedError

    def check_training(self, cfg) -> None:
        """Refuse training settings that do not apply to this task (class weights for a number, say)."""

    def class_weights(self, targets: np.ndarray) -> np.ndarray:
        """Inverse-frequency weights [C] of the outputs over these encoded targets, mean 1 over the images."""
        raise NotImplementedError

    def sampling_classes(self, targets: np.ndarray) -> np.ndarray:
        """The class each image counts as for a class-balanced sampler."""
        raise NotImplementedError

    def distill_loss(self, logits, teacher, temperature: float):
        """Per-row loss [B] of the model's outputs against a teacher's, as `teacher_targets` made them."""
        raise NotImplementedError

    def teacher_targets(self, outputs: np.ndarray) -> np.ndarray:
        """A teacher's predictions (probabilities, values in the target's scale) -> what distill_loss compares
        with, and what a pseudo-labelled image's label target is."""
        return np.asarray(outputs, dtype=np.float32)

    def confidence(self, outputs: np.ndarray) -> np.ndarray:
        """Per row, how sure the predictions are (pseudo-labels keep the rows at or above a threshold)."""
        return np.ones(len(outputs))

    def hard_loss(self, logits, target, smoothing: float = 0.0, reduction: str = "mean", class_weights=None,
                  focal_gamma: Optional[float] = None):
        """The loss against the encoded targets themselves."""
        loss = self.loss(logits.float(), self.soft_targets(target, smoothing), class_weights, focal_gamma)
        return {"sum": loss.sum, "mean": loss.mean, "none": lambda: loss}[reduction]()

    # --- metrics and decisions --------------------------------------------------------------------------------

    def metrics(self) -> dict:
        raise NotImplementedError

    def check_metric(self, metric: str) -> str:
        """The metric to use (`auto`: the task's default), after checking it fits the task."""
        metric = self.default_metric if metric == "auto" else metric
        if metric not in self.metrics():
            raise KitError(f"invalid setting: metric {metric!r} does not apply to a {self.kind} task; choose one of "
                           f"{', '.join(self.metrics())} (or auto)")
        return metric

    def score(self, metric: str, targets: np.ndarray, outputs: np.ndarray) -> float:
        return self.metrics()[metric].fn(np.asarray(targets), np.asarray(outputs, dtype=np.float64))

    def higher_is_better(self, metric: str) -> bool:
        return self.metrics()[metric].higher_is_better

    def is_better(self, metric: str, new: float, best: float | None) -> bool:
        """Whether `new` beats `best`; a non-finite score never does."""
        if not np.isfinite(new):
            return False
        if best is None:
            return True
        return new > best if self.higher_is_better(metric) else new < best

    def smooth_metric(self, metric: str) -> str:
        """The metric itself where it is smooth in the predictions (log loss, regression errors), else log loss as
        its smooth stand-in (accuracy, F1 and AUC are flat almost everywhere): what blend weights minimize."""
        return metric if self.metrics()[metric].smooth else "log_loss"

    # --- stacking (kit.evaluate.blend's `stack`): a linear model on the link of the runs' outputs ---------------

    def link(self, outputs: np.ndarray) -> np.ndarray:
        """Predictions -> the space the model's outputs live in before `activate` (numpy)."""
        raise NotImplementedError

    def link_torch(self, outputs):
        """`link`, on torch tensors inside the exported graph."""
        raise NotImplementedError

    def unlink(self, z: np.ndarray) -> np.ndarray:
        """The inverse of `link`, in numpy: the stacker's linear outputs -> predictions."""
        raise NotImplementedError

    def unlink_torch(self, z):
        """`unlink`, on torch tensors inside the exported graph."""
        return self.activate(z)

    def fit_stacker(self, features: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(coef [C, R, C], bias [C]) of scikit-learn's linear model for the task, fitted on the runs' linked outputs
        `features` [N, R, C]: the stacker's output o is bias[o] + sum over runs r and outputs c of
        coef[o, r, c] * features[:, r, c]."""
        raise NotImplementedError

    def fit(self, targets: np.ndarray, outputs: np.ndarray) -> "Task":
        """This task with its decision parameters fitted on OOF predictions (multilabel: the thresholds)."""
        return self

    def check_outputs(self, outputs: np.ndarray, quantized: bool = False) -> Optional[str]:
        """What is wrong with a graph's outputs for this task (an activation that does not fit it), or None.
        `quantized`: an int8 graph, whose outputs are off by a quantization step per output."""
        return None

    # --- submission cells and answers -------------------------------------------------------------------------

    def output_columns(self) -> list[str]:
        """Column names of the predictions in OOF and probability files."""
        return [f"prob_{n}" for n in self.names]

    def label_cells(self, outputs: np.ndarray) -> list[str]:
        """Predictions -> the submission's label column."""
        raise NotImplementedError

    def same_decision(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Per row, whether two sets of predictions lead to the same submission (int8 vs fp32)."""
        return np.array([x == y for x, y in zip(self.label_cells(a), self.label_cells(b))])

    def answer_spec(self) -> dict:
        """How an answer is decoded from a row of outputs, as plain data: what the browser page reads from the
        graph's metadata (`kit.answer`) to build exactly `answer()`."""
        raise NotImplementedError

    def answer(self, row: np.ndarray, top_k: Optional[int] = None) -> dict:
        """The JSON answer for one image, the same in the service, the page and the predict command:
        {"label": the submission cell, "probabilities": {name: p}, most probable first (the `top_k` largest, all by
        default)}, or for a regression {"label": the submission cell, "value": the number}."""
        row = np.asarray(row, dtype=np.float64)
        order = np.argsort(-row, kind="stable")[:top_k]
        return {"label": self.label_cells(row[None])[0],
                "probabilities": {self.names[i]: float(row[i]) for i in order}}

    # --- the report -------------------------------------------------------------------------------------------

    def worst(self, y: np.ndarray, outputs: np.ndarray, labels: Sequence[str]) -> tuple[np.ndarray, list[str], str]:
        """(OOF rows worst first, a caption per row, the figure's title) for the report's worst.png."""
        raise NotImplementedError

    def report_rows(self, y: np.ndarray, outputs: np.ndarray) -> tuple[list[str], list[list]]:
        """(header, rows) of the report's report.csv."""
        raise NotImplementedError

    def report_section(self, y: np.ndarray, outputs: np.ndarray, folds: np.ndarray) -> str:
        """The task's own section of cv.md (markdown), or ''."""
        return ""


def tags_of(cell: str) -> list[str]:
    return cell.split()
