"""The training objective: the task's loss (kit/core/task) on training batches, with label smoothing, or on soft
targets mixed by MixUp/CutMix (the batch's mixing matrix), and the evaluation loss. What a loss *is* for a kind of
target is the task's; this module only decides which targets the loss sees.

A student (kit/train/teacher.py) trains on packed targets, one float row per image: [label target (W) | teacher
target (W) | weight (1)], W the task's target width. Its loss per image is (1 - distill_weight) x the task's loss
against the label target + distill_weight x the task's distillation loss against the teacher's, times the image's
weight (a pseudo-labelled test image: the teacher's targets on both sides, pseudo_weight).
"""
from __future__ import annotations

import numpy as np
import torch

from kit.core.task import Task


def pack(label: np.ndarray, teacher: np.ndarray, weight: np.ndarray) -> np.ndarray:
    return np.concatenate([label, teacher, np.asarray(weight, np.float32).reshape(-1, 1)], 1).astype(np.float32)


class Objective:
    def __init__(self, task: Task, label_smoothing: float = 0.0, distill_weight: float | None = None,
                 temperature: float = 1.0, class_weights: np.ndarray | None = None, focal_gamma: float | None = None):
        """`distill_weight`: None for hard targets; a weight in [0, 1] for packed (student) targets.
        `class_weights` [C] and `focal_gamma` shape the training loss only: the validation loss stays the plain one,
        comparable across runs."""
        self.task = task
        self.label_smoothing = label_smoothing
        self.distill_weight, self.temperature = distill_weight, temperature
        self.class_weights = torch.as_tensor(class_weights) if class_weights is not None else None
        self.focal_gamma = focal_gamma

    def to(self, device: torch.device) -> "Objective":
        if self.class_weights is not None:
            self.class_weights = self.class_weights.to(device)
        return self

    def activate(self, outputs: torch.Tensor) -> torch.Tensor:
        return self.task.activate(outputs)

    def label_targets(self, target: torch.Tensor) -> torch.Tensor:
        """Encoded labels -> the float label targets a student's packed rows hold (label smoothing folded in)."""
        return self.task.soft_targets(target, self.label_smoothing)

    def train_loss(self, logits: torch.Tensor, target: torch.Tensor, mix: torch.Tensor | None = None) -> torch.Tensor:
        """`mix`: the batch's mixing matrix (kit.train.batch.Mixer): soft targets = mix @ targets, label smoothing
        folded in first, exactly as timm's mixup_target does for class labels."""
        if self.distill_weight is not None:
            return self._student_loss(logits.float(), target, mix)
        if mix is None:
            return self.task.hard_loss(logits, target, self.label_smoothing, class_weights=self.class_weights,
                                       focal_gamma=self.focal_gamma)
        return self.task.loss(logits.float(), mix @ self.task.soft_targets(target, self.label_smoothing),
                              self.class_weights, self.focal_gamma).mean()

    def _student_loss(self, logits: torch.Tensor, packed: torch.Tensor, mix: torch.Tensor | None) -> torch.Tensor:
        if mix is not None:
            packed = mix @ packed                      # labels, teacher targets and weights mix alike
        width = (packed.shape[1] - 1) // 2
        label, teacher, weight = packed[:, :width], packed[:, width:2 * width], packed[:, -1]
        rows = (1 - self.distill_weight) * self.task.loss(logits, label, self.class_weights, self.focal_gamma) + \
            self.distill_weight * self.task.distill_loss(logits, teacher, self.temperature)
        return (weight * rows).mean()

    def eval_loss_sum(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.task.hard_loss(logits, target, 0.0, reduction="sum")
