"""The training objective of a task (kit.task): the loss on training batches (hard targets with label smoothing,
or soft targets under MixUp/CutMix), the evaluation loss, and the activation that turns the model's outputs
into the predictions that are scored, saved and exported."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from .task import Regression, Task


def activation(task: Task) -> Callable[[torch.Tensor], torch.Tensor]:
    """Model outputs -> the task's predictions: the same function in validation and in the exported graph.
    multiclass: softmax; multilabel: sigmoid; regression: the value in the target's own scale."""
    if task.kind == "multiclass":
        return lambda logits: logits.float().softmax(-1)
    if task.kind == "multilabel":
        return lambda logits: logits.float().sigmoid()
    shift, factor = task.scale["shift"], task.scale["factor"]
    if task.scale["kind"] == "unit":
        return lambda out: out.float().sigmoid() * factor + shift
    return lambda out: out.float() * factor + shift


class Objective:
    def __init__(self, task: Task, label_smoothing: float = 0.0, regression_loss: str = "mse"):
        self.task = task
        self.label_smoothing = label_smoothing
        self.regression_loss = regression_loss
        self.activate = activation(task)

    def _targets(self, target: torch.Tensor, smoothing: float) -> torch.Tensor:
        """The float target matrix the loss compares with: smoothed one-hot (multiclass), smoothed 0/1 tags
        (multilabel), or the target in the model's scale (regression)."""
        if self.task.kind == "multiclass":
            classes = len(self.task.names)
            off = smoothing / classes
            out = torch.full((len(target), classes), off, device=target.device)
            return out.scatter_(1, target.view(-1, 1), 1.0 - smoothing + off)
        if self.task.kind == "multilabel":
            return target.float() * (1.0 - smoothing) + 0.5 * smoothing
        assert isinstance(self.task, Regression)
        return (target.float() - self.task.scale["shift"]) / self.task.scale["factor"]

    def _loss(self, logits: torch.Tensor, target: torch.Tensor, reduction: str) -> torch.Tensor:
        if self.task.kind == "multiclass":
            loss = F.cross_entropy(logits, target, reduction="none")     # probability targets
        elif self.task.kind == "multilabel" or self.regression_loss == "bce":
            loss = F.binary_cross_entropy_with_logits(logits, target, reduction="none").mean(-1)
        elif self.regression_loss == "huber":
            loss = F.huber_loss(logits, target, reduction="none").mean(-1)
        else:
            loss = F.mse_loss(logits, target, reduction="none").mean(-1)
        return loss.sum() if reduction == "sum" else loss.mean()

    def train_loss(self, logits: torch.Tensor, target: torch.Tensor, mix: torch.Tensor | None = None) -> torch.Tensor:
        """`mix`: the batch's mixing matrix (kit.batch.Mixer): soft targets = mix @ targets, label smoothing folded
        in first, exactly as timm's mixup_target does for class labels."""
        if mix is None and self.task.kind == "multiclass":
            return F.cross_entropy(logits, target, label_smoothing=self.label_smoothing)
        soft = self._targets(target, self.label_smoothing)
        return self._loss(logits.float(), mix @ soft if mix is not None else soft, "mean")

    def eval_loss_sum(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.task.kind == "multiclass":
            return F.cross_entropy(logits.float(), target, reduction="sum")
        return self._loss(logits.float(), self._targets(target, 0.0), "sum")
