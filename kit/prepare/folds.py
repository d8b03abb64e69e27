"""Stratified K-fold split, persisted once and reused, so every run and every fold model sees the same split.

folds.csv schema: image_id,label,fold  (fold in 0..K-1; the row order of train.csv; label as written there).
"""
from __future__ import annotations

import csv
import logging
from collections import Counter, defaultdict
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from kit.core.atomic import write_csv
from kit.core.table import Table
from kit.core.errors import KitError

DEFAULT_NUM_FOLDS = 5
HEADER = ["image_id", "label", "fold"]
log = logging.getLogger(__name__)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def multilabel_folds(tags: np.ndarray, names: Sequence[str], num_folds: int, seed: int,
                     groups: Optional[Sequence[str]]) -> np.ndarray:
    """Iterative stratification (iterative-stratification's MultilabelStratifiedKFold) on a 0/1 tag matrix."""
    if groups is not None:
        raise KitError("grouped folds are not supported for multilabel tasks: iterative stratification (the "
                       "iterative-stratification package) has no grouped variant. Remove group_col, or split the "
                       "folds yourself and pass them as --folds-csv (image_id,label,fold)")
    from iterstrat.ml_stratifiers import MultilabelStratifiedKFold
    counts = tags.sum(0)
    small = [(int(n), names[t]) for t, n in enumerate(counts) if n < num_folds]
    if small:
        listed = ", ".join(f"{t!r} ({_plural(n, 'image')})" for n, t in sorted(small)[:5])
        raise KitError(f"too few images for {num_folds} folds with tag {listed}: every fold needs each tag at least "
                       f"once. Lower --num-folds, or merge/remove the tag")
    fold = np.full(len(tags), -1, dtype=np.int64)
    splitter = MultilabelStratifiedKFold(n_splits=num_folds, shuffle=True, random_state=seed)
    for k, (_, val_idx) in enumerate(splitter.split(np.zeros(len(tags)), tags)):
        fold[val_idx] = k
    for t, name in enumerate(names):
        lacking = sorted(set(range(num_folds)) - set(fold[tags[:, t] == 1].tolist()))
        if lacking:
            raise KitError(f"the split left tag {name!r} out of the validation images of fold(s) {lacking}; pass "
                           f"another --seed or fewer --num-folds")
    return fold


def make_folds(strata, num_folds: int, seed: int, groups: Optional[Sequence[str]] = None,
               names: Optional[Sequence[str]] = None) -> np.ndarray:
    """The fold of every row: StratifiedKFold on `strata` (a label per row), StratifiedGroupKFold when rows
    have groups, or iterative stratification when `strata` is a 0/1 tag matrix (multilabel; `names` its tags).

    Every fold must hold every stratum in its validation rows and in its training rows; a split that cannot
    is refused before any model trains (a fold missing a class scores NaN or trains without it).
    """
    if isinstance(strata, np.ndarray) and strata.ndim == 2:
        return multilabel_folds(strata, names or [str(i) for i in range(strata.shape[1])], num_folds, seed, groups)
    labels = [str(v) for v in strata]
    y = np.asarray(labels)
    unit, units = ("image", Counter(labels)) if groups is None else \
        ("group", Counter(s for s, _ in {(s, g) for s, g in zip(labels, groups)}))
    if groups is not None and len(set(groups)) < num_folds:
        raise KitError(f"{num_folds} folds need at least {num_folds} groups, but there are {len(set(groups))}; "
                       f"lower --num-folds to at most {len(set(groups))}")
    small = sorted((n, c) for c, n in units.items() if n < num_folds)
    if small:
        listed = ", ".join(f"{c!r} ({_plural(n, unit)})" for n, c in small[:5])
        fix = (f"Lower --num-folds to at most {small[0][0]}, or merge/remove the class" if small[0][0] >= 2 else
               "Every class needs at least 2; merge or remove the class (or add images)")
        raise KitError(f"too few {unit}s for {num_folds} folds in class {listed}: every fold needs each class at "
                       f"least once. {fix}")
    fold = np.full(len(y), -1, dtype=np.int64)
    if groups is None:
        splits = StratifiedKFold(num_folds, shuffle=True, random_state=seed).split(np.zeros(len(y)), y)
    else:
        splits = StratifiedGroupKFold(num_folds, shuffle=True, random_state=seed).split(np.zeros(len(y)), y, groups)
    for k, (_, val_idx) in enumerate(splits):
        fold[val_idx] = k
    present = defaultdict(set)
    for s, k in zip(labels, fold):
        present[s].add(int(k))
    for s in sorted(present):
        if len(present[s]) < num_folds:
            lacking = sorted(set(range(num_folds)) - present[s])
            raise KitError(f"the grouped split left class {s!r} out of the validation images of fold(s) {lacking} "
                           f"(its {units[s]} groups did not spread over {num_folds} folds); pass another --seed or "
                           f"fewer --num-folds")
    return fold


def _read(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            rows = [r for r in reader if r]
    except (UnicodeDecodeError, csv.Error) as e:
        raise KitError(f"{path} is not a readable folds file ({e}); delete it to re-split") from None
    if header != HEADER or any(len(r) != 3 for r in rows):
        raise KitError(f"{path} is not a folds file (expected columns {','.join(HEADER)}, got {header}); delete it "
                       f"to re-split, or pass --folds-csv with another path")
    try:
        fold = np.array([int(r[2]) for r in rows], dtype=np.int64)
    except ValueError:
        raise KitError(f"{path}: the fold column must hold integers; delete the file to re-split") from None
    return [r[0] for r in rows], [r[1] for r in rows], fold


def save(path: str | Path, table: Table, fold: np.ndarray) -> None:
    write_csv(path, HEADER, zip(table.ids, table.labels, fold.tolist()))
    log.info(f"folds: wrote {path} ({int(fold.max()) + 1} folds, {len(fold)} images)")


def load_or_create(path: str | Path, table: Table, strata, num_folds: Optional[int], seed: int,
                   write: bool = True, names: Optional[Sequence[str]] = None) -> np.ndarray:
    """The fold of every row of `table`: read from `path`, or split on `strata` and write it there on first use.

    A stale file (train.csv changed since the split) is an error, never a silent re-split: re-splitting would
    move validation images of earlier fold models into training and inflate the CV score. The split is a
    pure function of (strata, groups, K, seed), so processes that do not `write` compute the same one.
    """
    path = Path(path)
    regen = (f"To re-split, delete {path} (models trained on the old split then no longer form a valid "
             f"out-of-fold ensemble) or pass --folds-csv NEW_PATH")
    if not path.exists():
        num_folds = num_folds or DEFAULT_NUM_FOLDS
        fold = make_folds(strata, num_folds, seed, table.groups, names)
        if write:
            save(path, table, fold)
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
    for line, image_id, label in zip(table.lines, table.ids, table.labels):
        if by_id[image_id][0] != label:
            raise KitError(f"{path}: image {image_id!r} has label {by_id[image_id][0]!r} but {table.csv_path} "
                           f"line {line} says {label!r}. {regen}")
    fold = np.array([by_id[i][1] for i in table.ids], dtype=np.int64)
    found = int(fold.max()) + 1
    if fold.min() < 0 or sorted(set(fold.tolist())) != list(range(found)) or found < 2:
        raise KitError(f"{path}: fold numbers must be 0..K-1 (K >= 2) with every fold used. {regen}")
    if num_folds is not None and found != num_folds:
        raise KitError(f"{path} has {found} folds but --num-folds is {num_folds}. {regen}")
    return fold
