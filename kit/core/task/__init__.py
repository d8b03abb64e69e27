"""What a target is, one class per kind (kit/core/task/base.py says what a Task decides):

  multiclass  one label per image; softmax probabilities; the submission names the class
  multilabel  space-separated tags per image (or one 0/1 column per tag); sigmoid probabilities; the
              submission lists the tags above per-tag thresholds fitted on OOF (or one probability column per tag)
  regression  a number per image; the model's output mapped back to the target's scale; the submission writes it
"""
from __future__ import annotations

from typing import Sequence

from kit.core.errors import KitError
from kit.core.task.base import Task, label_order, tags_of
from kit.core.task.infer import infer_kind
from kit.core.task.multiclass import Multiclass
from kit.core.task.multilabel import Multilabel
from kit.core.task.regression import Regression, parse_numbers

TASKS = {t.kind: t for t in (Multiclass, Multilabel, Regression)}
KINDS = tuple(TASKS)

__all__ = ["KINDS", "TASKS", "Multiclass", "Multilabel", "Regression", "Task", "build", "infer_kind", "label_order",
           "parse_numbers", "restore", "tags_of", "task_class"]


def task_class(kind: str) -> type[Task]:
    if kind not in TASKS:
        raise KitError(f"unknown task {kind!r}; this kit knows {', '.join(TASKS)}")
    return TASKS[kind]


def build(kind: str, labels: Sequence[str], label_col: str = "label", loss: str = "mse", min_labels: int = 0) -> Task:
    """The task of a training set's label cells."""
    return task_class(kind).from_labels(labels, name=label_col, loss=loss, min_labels=min_labels)


def restore(saved, names: Sequence[str] | None = None) -> Task:
    """A task saved with a run (task.json, checkpoints) or in an ONNX file's metadata: a dict from to_dict(), or
    (older files) a kind and the output names."""
    if isinstance(saved, str):
        saved = {"kind": saved, "names": list(names or [])}
    return task_class(saved.get("kind")).from_dict(saved)
