"""The training objective of a task (kit.task): the loss on training batches, the evaluation loss, and the
activation that turns the model's outputs into the predictions that are scored, saved and exported."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from .task import TASKS, Task


def _softmax(logits: torch.Tensor) -> torch.Tensor:
    return logits.float().softmax(-1)


_ACTIVATIONS = {"softmax": _softmax}


def activation(kind: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The output activation of a task kind: the same function in validation and in the exported graph."""
    return _ACTIVATIONS[TASKS[kind].activation]


class Objective:
    def __init__(self, task: Task, label_smoothing: float = 0.0):
        self.task = task
        self.label_smoothing = label_smoothing
        self.activate = activation(task.kind)

    def train_loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, target, label_smoothing=self.label_smoothing)

    def eval_loss_sum(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), target, reduction="sum")
