"""The run dir's two tables, as numbers: out-of-fold predictions and the per-epoch history. Torch-free.

oof.csv      image_id,label,fold,<one column per model output>   one row per validation image, train.csv
             order, predictions of the fold's best epoch (multiclass columns: prob_<class>)
metrics.csv  epoch,lr,train_loss,val_loss,metric,score,is_best,seconds,train_images_per_s
kept.json    {"epochs", "best_epoch_score", "average_score"} (--avg-top-k only): the epochs whose weights the fold
             kept (one: the best epoch; several: their average), the best epoch's score and the average's
"""
from __future__ import annotations

import csv
import json
from dataclasses import astuple, dataclass, fields
from pathlib import Path
from typing import Sequence

import numpy as np

from kit.core.atomic import write_csv, write_text
from kit.core.errors import KitError

OOF_KEYS = ["image_id", "label", "fold"]


@dataclass
class Oof:
    ids: list[str]
    labels: list[str]                # label cells as written in train.csv
    folds: np.ndarray                # [N] int
    outputs: np.ndarray              # [N, C] float64: the task's predictions (probabilities for classification)
    columns: list[str]               # names of the output columns

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, index) -> "Oof":
        index = np.asarray(index)
        return Oof([self.ids[i] for i in index], [self.labels[i] for i in index], self.folds[index],
                   self.outputs[index], self.columns)

    @staticmethod
    def concat(parts: Sequence["Oof"]) -> "Oof":
        if any(p.columns != parts[0].columns for p in parts):
            raise KitError("OOF files with different output columns cannot be combined (models of another task "
                           "or class list)")
        return Oof([i for p in parts for i in p.ids], [v for p in parts for v in p.labels],
                   np.concatenate([p.folds for p in parts]), np.concatenate([p.outputs for p in parts]),
                   parts[0].columns)


def write_oof(path: str | Path, oof: Oof) -> None:
    write_csv(path, OOF_KEYS + oof.columns,
              ([i, label, int(k), *(f"{v:.6g}" for v in row)]
               for i, label, k, row in zip(oof.ids, oof.labels, oof.folds, oof.outputs)))


def _read_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    if not path.is_file():
        raise KitError(f"{path} does not exist; train the fold first")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, [])
        return header, [r for r in reader if r]


def read_oof(paths: Sequence[str | Path]) -> Oof:
    """The rows of OOF files written by write_oof, concatenated in the given order."""
    parts = []
    for path in map(Path, paths):
        header, rows = _read_rows(path)
        if header[:3] != OOF_KEYS:
            raise KitError(f"{path} is not an OOF file (columns {header[:3]}, expected {OOF_KEYS})")
        try:
            outputs = np.array([[float(v) for v in r[3:]] for r in rows], dtype=np.float64).reshape(len(rows), -1)
            folds = np.array([int(r[2]) for r in rows], dtype=np.int64)
        except ValueError as e:
            raise KitError(f"{path} holds a value that is not a number ({e}); retrain the fold") from None
        parts.append(Oof([r[0] for r in rows], [r[1] for r in rows], folds, outputs, header[3:]))
    if not parts:
        raise KitError("no OOF files to read")
    return Oof.concat(parts)


@dataclass
class Epoch:
    """One row of metrics.csv."""
    epoch: int
    lr: float
    train_loss: float
    val_loss: float
    metric: str
    score: float
    is_best: bool
    seconds: float
    train_images_per_s: float

    def cells(self) -> list:
        return [self.epoch, f"{self.lr:.6g}", f"{self.train_loss:.6f}", f"{self.val_loss:.6f}", self.metric,
                f"{self.score:.6f}", int(self.is_best), f"{self.seconds:.1f}", f"{self.train_images_per_s:.1f}"]


HISTORY_HEADER = [f.name for f in fields(Epoch)]


def write_kept(path: str | Path, epochs: list[int], best_epoch_score: float, average_score: float) -> None:
    write_text(path, json.dumps({"epochs": epochs, "best_epoch_score": best_epoch_score,
                                 "average_score": average_score}) + "\n")


def read_kept(path: str | Path) -> dict | None:
    path = Path(path)
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def write_history(path: str | Path, epochs: Sequence[Epoch]) -> None:
    write_csv(path, HISTORY_HEADER, (e.cells() for e in epochs))


def read_history(path: str | Path) -> list[Epoch]:
    header, rows = _read_rows(Path(path))
    if header != HISTORY_HEADER:
        raise KitError(f"{path} is not a metrics file (columns {header})")
    types = [f.type for f in fields(Epoch)]
    convert = {"int": int, "float": float, "str": str, "bool": lambda v: v == "1"}
    return [Epoch(*(convert[t](v) for t, v in zip(types, r))) for r in rows]


def as_dicts(epochs: Sequence[Epoch]) -> list[dict]:
    """History for a checkpoint: plain numbers (torch.load(weights_only=True) reads them back)."""
    return [dict(zip(HISTORY_HEADER, astuple(e))) for e in epochs]
