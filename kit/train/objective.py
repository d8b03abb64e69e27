"""The training objective: the task's loss (kit/core/task) on training batches, with label smoothing, or on soft
targets mixed by MixUp/CutMix (the batch's mixing matrix), and the evaluation loss. What a loss *is* for a kind
of target is the task's; this module only decides which targets the loss sees."""
from __future__ import annotations

import torch

from kit.core.task import Task


class Objective:
    def __init__(self, task: Task, label_smoothing: float = 0.0):
        self.task = task
        self.label_smoothing = label_smoothing

    def activate(self, outputs: torch.Tensor) -> torch.Tensor:
        return self.task.activate(outputs)

    def train_loss(self, logits: torch.Tensor, target: torch.Tensor, mix: torch.Tensor | None = None) -> torch.Tensor:
        """`mix`: the batch's mixing matrix (kit.train.batch.Mixer): soft targets = mix @ targets, label smoothing
        folded in first, exactly as timm's mixup_target does for class labels."""
        if mix is None:
            return self.task.hard_loss(logits, target, self.label_smoothing)
        return self.task.loss(logits.float(), mix @ self.task.soft_targets(target, self.label_smoothing)).mean()

    def eval_loss_sum(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.task.hard_loss(logits, target, 0.0, reduction="sum")
