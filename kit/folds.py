"""Stratified K-fold split, persisted once and reused, so every run and every fold model sees the same split.

folds.csv schema: image_id,label,fold  (fold in 0..K-1; the row order of train.csv).
"""
from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path
from typing import Optional

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from .atomic import write_csv
from .data import Table, parse_labels
from .errors import KitError


def make_folds(labels: list, num_folds: int, seed: int, groups: Optional[list] = None) -> np.ndarray:
    counts = Counter(labels)
    small = sorted((n, str(c)) for c, n in counts.items() if n < num_folds)
    if small:
        listed = ", ".join(f"{c!r} ({n} image{'s' if n > 1 else ''})" for n, c in small[:5])
        raise KitError(f"too few images for {num_folds} folds in class {listed}: every fold needs each class "
                       f"at least once. Lower --num-folds to at most {min(counts.values())}, or merge/remove the class")
    y = np.array([str(v) for v in labels])
    fold = np.full(len(labels), -1, dtype=np.int64)
    if groups is None:
        splitter = StratifiedKFold(num_folds, shuffle=True, random_state=seed)
        splits = splitter.split(np.zeros(len(y)), y)
    else:
        splitter = StratifiedGroupKFold(num_folds, shuffle=True, random_state=seed)
        splits = splitter.split(np.zeros(len(y)), y, groups)
    for k, (_, val_idx) in enumerate(splits):
        fold[val_idx] = k
    return fold


def _read(path: Path) -> tuple[list[str], list, np.ndarray]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames != ["image_id", "label", "fold"]:
            raise KitError(f"{path} is not a folds file (expected columns image_id,label,fold, got "
                           f"{reader.fieldnames}); delete it to re-split, or pass --folds-csv with another path")
        rows = list(reader)
    try:
        fold = np.array([int(r["fold"]) for r in rows], dtype=np.int64)
    except ValueError:
        raise KitError(f"{path}: the fold column must hold integers; delete the file to re-split") from None
    return [r["image_id"] for r in rows], parse_labels([r["label"] for r in rows]), fold


DEFAULT_NUM_FOLDS = 5


def load_or_create(path: str | Path, table: Table, num_folds: Optional[int], seed: int,
                   write: bool = True) -> np.ndarray:
    """The fold of every row of `table`: read from `path`, or split and write it there on first use.

    A stale file (train.csv changed since the split) is an error, never a silent re-split: re-splitting would
    move validation images of earlier fold models into training and inflate the CV score. The split is a
    pure function of (labels, groups, K, seed), so processes that do not `write` compute the same one.
    """
    path = Path(path)
    regen = (f"To re-split, delete {path} (models trained on the old split then no longer form a valid "
             f"out-of-fold ensemble) or pass --folds-csv NEW_PATH")
    if not path.exists():
        num_folds = num_folds or DEFAULT_NUM_FOLDS
        fold = make_folds(table.labels, num_folds, seed, table.groups)
        if write:
            write_csv(path, ["image_id", "label", "fold"], zip(table.ids, table.labels, fold.tolist()))
            print(f"folds: wrote {path} ({num_folds} folds, {len(fold)} images, seed {seed})")
        return fold
    ids, labels, fold = _read(path)
    by_id = {i: (lab, k) for i, lab, k in zip(ids, labels, fold)}
    missing = [i for i in table.ids if i not in by_id]
    extra = sorted(set(ids) - set(table.ids))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"{len(missing)} id(s) in {table.csv_path} are not in it (e.g. {missing[0]!r})")
        if extra:
            parts.append(f"{len(extra)} id(s) in it are no longer in {table.csv_path} (e.g. {extra[0]!r})")
        raise KitError(f"{path} is out of date: {'; '.join(parts)}. {regen}")
    for line, (image_id, label) in enumerate(zip(table.ids, table.labels), start=2):
        if by_id[image_id][0] != label:
            raise KitError(f"{path}: image {image_id!r} has label {by_id[image_id][0]!r} but {table.csv_path} "
                           f"line {line} says {label!r}. {regen}")
    fold = np.array([by_id[i][1] for i in table.ids], dtype=np.int64)
    found = int(fold.max()) + 1
    if fold.min() < 0 or sorted(set(fold.tolist())) != list(range(found)):
        raise KitError(f"{path}: fold numbers must be 0..K-1 with every fold used. {regen}")
    if num_folds is not None and found != num_folds:
        raise KitError(f"{path} has {found} folds but --num-folds is {num_folds}. {regen}")
    return fold
