import csv
from collections import Counter

import numpy as np
import pytest

from helpers import write_rows
from kit.settings.config import load_config
from kit.core.table import train_table
from kit.core.errors import KitError
from kit.prepare.folds import load_or_create, make_folds


def test_stratified_deterministic_and_balanced():
    labels = ["a"] * 50 + ["b"] * 30 + ["c"] * 20
    fold = make_folds(labels, 5, seed=1)
    assert np.array_equal(fold, make_folds(labels, 5, seed=1))
    assert not np.array_equal(fold, make_folds(labels, 5, seed=2))
    for k in range(5):
        counts = Counter(l for l, f in zip(labels, fold) if f == k)
        assert counts == {"a": 10, "b": 6, "c": 4}


def test_groups_stay_in_one_fold():
    rng = np.random.default_rng(0)
    groups = [f"patient{i // 4}" for i in range(120)]
    labels = [str(rng.integers(3)) for _ in range(120)]
    fold = make_folds(labels, 4, seed=0, groups=groups)
    for g in set(groups):
        assert len({f for f, gg in zip(fold, groups) if gg == g}) == 1


def test_too_small_class_is_an_error():
    with pytest.raises(KitError, match=r"too few images for 5 folds in class 'rare' \(2 images\).*at most 2"):
        make_folds(["common"] * 20 + ["rare"] * 2, 5, seed=0)


def test_created_once_then_reused(competition, tmp_path):
    cfg = load_config(None, {"data_dir": str(competition)})
    table = train_table(cfg)
    path = tmp_path / "folds" / "folds.csv"
    first = load_or_create(path, table, table.labels, 3, seed=0)
    with open(path) as f:
        rows = list(csv.DictReader(f))
    assert [r["image_id"] for r in rows] == table.ids and {r["fold"] for r in rows} == {"0", "1", "2"}
    # a different seed must not re-split an existing file
    assert np.array_equal(load_or_create(path, table, table.labels, None, seed=99), first)
    with pytest.raises(KitError, match="has 3 folds but --num-folds is 4"):
        load_or_create(path, table, table.labels, 4, seed=0)


def test_stale_folds_file_is_refused(competition, tmp_path):
    cfg = load_config(None, {"data_dir": str(competition)})
    table = train_table(cfg)
    path = tmp_path / "folds.csv"
    load_or_create(path, table, table.labels, 3, seed=0)
    with open(competition / "train.csv") as f:
        rows = list(csv.reader(f))[1:]
    write_rows(competition / "train.csv", ["image_id", "label"], rows[:-1])
    with pytest.raises(KitError, match=r"out of date: 1 id\(s\) in it are no longer in .*delete .*folds.csv"):
        load_or_create(path, train_table(cfg), train_table(cfg).labels, None, seed=0)
    write_rows(competition / "train.csv", ["image_id", "label"], rows[:-1] + [[rows[-1][0], "wolf"]])
    with pytest.raises(KitError, match="has label 'fox' but .*says 'wolf'|has label 'dog' but .*says 'wolf'|"
                                       "has label 'cat' but .*says 'wolf'"):
        load_or_create(path, train_table(cfg), train_table(cfg).labels, None, seed=0)


def test_grouped_folds_stay_stratified():
    """60 patients, one class each, 1-5 images each, 'rare' in every sixth patient: each fold's share of rare
    images stays near the overall share (GroupKFold, which ignores labels, puts 8 % in one fold and 27 % in another)."""
    rng = np.random.default_rng(0)
    groups, labels = [], []
    for g in range(60):
        n = int(rng.integers(1, 6))
        groups += [f"p{g}"] * n
        labels += ["rare" if g % 6 == 0 else "common"] * n
    fold = make_folds(labels, 5, seed=0, groups=groups)
    overall = labels.count("rare") / len(labels)
    for k in range(5):
        in_fold = [lab for lab, f in zip(labels, fold) if f == k]
        assert abs(in_fold.count("rare") / len(in_fold) - overall) < 0.04, (k, in_fold.count("rare") / len(in_fold))
    for g in set(groups):
        assert len({f for f, gg in zip(fold, groups) if gg == g}) == 1
