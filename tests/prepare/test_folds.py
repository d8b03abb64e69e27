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


def test_multilabel_folds_hold_every_tag_in_every_fold_and_follow_the_seed():
    rng = np.random.default_rng(0)
    tags = (rng.random((90, 3)) < [0.5, 0.3, 0.1]).astype(np.int64)
    tags[:3, 2] = 1                                          # at least 3 images of the rare tag
    fold = make_folds(tags, 3, seed=0)
    assert sorted(set(fold.tolist())) == [0, 1, 2] and np.array_equal(fold, make_folds(tags, 3, seed=0))
    assert not np.array_equal(fold, make_folds(tags, 3, seed=1))          # shuffled by the seed
    for t in range(3):
        assert set(fold[tags[:, t] == 1].tolist()) == {0, 1, 2}           # each tag validated in every fold
    exactly = np.zeros((30, 2), dtype=np.int64)
    exactly[:, 0], exactly[:3, 1] = 1, 1                     # a tag with as many images as folds is enough
    assert sorted(set(make_folds(exactly, 3, seed=0).tolist())) == [0, 1, 2]
    exactly[2, 1] = 0
    with pytest.raises(KitError, match=r"too few images for 3 folds with tag '1' \(2 images\)"):
        make_folds(exactly, 3, seed=0)
    with pytest.raises(KitError, match=r"too few images for 3 folds with tag 'rare' \(2 images\)"):
        make_folds(exactly, 3, seed=0, names=["common", "rare"])
    with pytest.raises(KitError, match="grouped folds are not supported for multilabel"):
        make_folds(tags, 3, seed=0, groups=[str(i) for i in range(90)])


def test_the_small_class_and_group_refusals_say_how_to_fix_them():
    with pytest.raises(KitError, match=r"4 folds need at least 4 groups, but there are 3; lower --num-folds to at "
                                       r"most 3"):
        make_folds(["a", "b"] * 6, 4, seed=0, groups=["g1", "g2", "g3"] * 4)
    with pytest.raises(KitError, match=r"class 'one' \(1 image\).*Every class needs at least 2"):
        make_folds(["common"] * 20 + ["one"], 3, seed=0)
    many = [c for c in "abcdefg" for _ in range(2)] + ["big"] * 20
    with pytest.raises(KitError) as refused:
        make_folds(many, 3, seed=0)
    assert str(refused.value).count("(2 images)") == 5        # the first five small classes are named
    assert "at most 2" in str(refused.value)
    groups = [f"g{i}" for i in range(12)]
    fold = make_folds(["a", "b"] * 6, 3, seed=0, groups=groups)          # 3 groups a class for 3 folds: enough
    assert sorted(set(fold.tolist())) == [0, 1, 2]


def _folds_file(competition, tmp_path):
    cfg = load_config(None, {"data_dir": str(competition)})
    table = train_table(cfg)
    path = tmp_path / "folds.csv"
    load_or_create(path, table, table.labels, 3, seed=0)
    with open(path) as f:
        rows = list(csv.reader(f))
    return table, path, rows


@pytest.mark.parametrize("edit, message", [
    (lambda rows: [rows[0]] + [r[:2] + ["-1" if i == 0 else r[2]] for i, r in enumerate(rows[1:])], "must be 0..K-1"),
    (lambda rows: [rows[0]] + [r[:2] + ["2" if r[2] == "1" else r[2]] for r in rows[1:]], "must be 0..K-1"),
    (lambda rows: [rows[0]] + [r[:2] + ["0"] for r in rows[1:]], r"must be 0\.\.K-1 \(K >= 2\)"),
    (lambda rows: [rows[0]] + [r[:2] + ["x"] for r in rows[1:]], "the fold column must hold integers"),
    (lambda rows: [["image_id", "label", "split"]] + rows[1:], "is not a folds file"),
    (lambda rows: rows[:-1] + [rows[-1][:2]], "is not a folds file"),
])
def test_a_folds_file_with_bad_fold_numbers_or_columns_is_refused(competition, tmp_path, edit, message):
    table, path, rows = _folds_file(competition, tmp_path)
    write_rows(path, edit(rows)[0], edit(rows)[1:])
    with pytest.raises(KitError, match=message):
        load_or_create(path, table, table.labels, None, seed=0)


def test_a_folds_file_is_checked_against_num_folds_and_says_what_it_wrote(competition, tmp_path, kit_log):
    table, path, rows = _folds_file(competition, tmp_path)
    assert f"folds: wrote {path} (3 folds, {len(table.ids)} images)" in kit_log.text
    assert np.array_equal(load_or_create(path, table, table.labels, 3, seed=0),
                          np.array([int(r[2]) for r in rows[1:]]))
    write_rows(path, rows[0], rows[2:])                      # the first image of train.csv dropped from the file
    with pytest.raises(KitError, match=rf"1 id\(s\) in .* are not in it \(e\.g\. {rows[1][0]!r}\)"):
        load_or_create(path, table, table.labels, None, seed=0)


def test_a_folds_file_edge_cases_the_mutation_run_found(competition, tmp_path):
    """Survivors of `bench/mutation.py --modules folds`: K = 2 is a valid file, a --num-folds below the file's K is
    refused as one above it is, a file in another encoding is refused by name, the count of missing ids is exact and
    the example is the first of them, and a first split without --num-folds makes DEFAULT_NUM_FOLDS (5) folds."""
    table, path, rows = _folds_file(competition, tmp_path)
    two = [rows[0]] + [r[:2] + [str(int(r[2]) % 2)] for r in rows[1:]]            # folds 0, 1, 0: K = 2
    write_rows(path, two[0], two[1:])
    assert sorted(set(load_or_create(path, table, table.labels, 2, seed=0).tolist())) == [0, 1]
    with pytest.raises(KitError, match="has 2 folds but --num-folds is 3"):
        load_or_create(path, table, table.labels, 3, seed=0)
    write_rows(path, rows[0], rows[1:])
    with pytest.raises(KitError, match="has 3 folds but --num-folds is 2"):
        load_or_create(path, table, table.labels, 2, seed=0)
    write_rows(path, rows[0], rows[3:])                      # the first two images of train.csv dropped
    with pytest.raises(KitError, match=rf"out of date: 2 id\(s\) in .* are not in it \(e\.g\. {rows[1][0]!r}\)") as refused:
        load_or_create(path, table, table.labels, None, seed=0)
    assert "are no longer in" not in str(refused.value)                    # nothing extra in the file
    path.write_bytes("image_id,label,fold\n".encode() + "é,x,0\n".encode("latin-1"))
    with pytest.raises(KitError, match=r"folds.csv is not a readable folds file \(.*utf-8.*\); delete it to re-split"):
        load_or_create(path, table, table.labels, None, seed=0)
    five = tmp_path / "five.csv"
    assert sorted(set(load_or_create(five, table, table.labels, None, seed=0).tolist())) == [0, 1, 2, 3, 4]


class _LopsidedSplitter:
    """A splitter that puts every row holding `lopsided` (a label, or a tag's column) into fold 0 and deals the other
    rows round-robin: what the post-split check exists for (sklearn's and iterstrat's splitters never do it on the
    inputs the pre-checks let through)."""
    lopsided = "b"

    def __init__(self, n_splits, **_):
        self.n_splits = n_splits

    def split(self, X, y, groups=None):
        y = np.asarray(y)
        hit = y[:, 1] == 1 if y.ndim == 2 else y == self.lopsided
        fold = np.where(hit, 0, np.arange(len(y)) % self.n_splits)
        for k in range(self.n_splits):
            yield np.flatnonzero(fold != k), np.flatnonzero(fold == k)


def test_a_split_that_leaves_a_class_or_tag_out_of_a_fold_is_refused(monkeypatch):
    import iterstrat.ml_stratifiers
    from kit.prepare import folds
    monkeypatch.setattr(folds, "StratifiedGroupKFold", _LopsidedSplitter)
    labels = ["a"] * 12 + ["b"] * 12
    groups = [f"g{i % 12}" for i in range(12)] + [f"h{i % 4}" for i in range(12)]
    with pytest.raises(KitError, match=r"the grouped split left class 'b' out of the validation images of fold\(s\) "
                                       r"\[1, 2\] \(its 4 groups did not spread over 3 folds\)"):
        make_folds(labels, 3, seed=0, groups=groups)
    monkeypatch.setattr(iterstrat.ml_stratifiers, "MultilabelStratifiedKFold", _LopsidedSplitter)
    tags = np.array([[1, 0]] * 12 + [[1, 1]] * 6)
    with pytest.raises(KitError, match=r"the split left tag 'y' out of the validation images of fold\(s\) \[1, 2\]"):
        make_folds(tags, 3, seed=0, names=["x", "y"])


def test_the_bounds_of_the_refusals_are_exact(competition, tmp_path, kit_log):
    """Exactly K images (or groups) of a class is enough; the fix names the smallest class's count; five of six small
    tags are named; a header or row shape other than the schema's, or a label changed to one that sorts first, is
    refused; extra ids are counted and the first named; the wrote line counts the folds."""
    assert sorted(set(make_folds(["a"] * 20 + ["b"] * 3, 3, seed=0).tolist())) == [0, 1, 2]
    every = [c for _ in range(3) for c in "ab" * 2]                       # 3 groups, each holding both classes
    assert sorted(set(make_folds(every, 3, seed=0, groups=[f"g{i // 4}" for i in range(12)]).tolist())) == [0, 1, 2]
    with pytest.raises(KitError, match=r"in class 'c' \(3 images\), 'd' \(4 images\).*at most 3, or merge"):
        make_folds(["a"] * 20 + ["c"] * 3 + ["d"] * 4, 5, seed=0)
    with pytest.raises(KitError, match=r"'one' \(1 image\), 'two' \(2 images\).*Every class needs at least 2"):
        make_folds(["a"] * 20 + ["one"] + ["two"] * 2, 3, seed=0)
    labels = np.array(["a", "b"] * 6)                                     # an array of labels is not a tag matrix
    assert np.array_equal(make_folds(labels, 3, seed=0), make_folds(labels.tolist(), 3, seed=0))
    tags = np.zeros((20, 7), dtype=int)
    tags[:, 0] = 1
    tags[np.arange(6), np.arange(1, 7)] = 1                               # six tags with one image each
    with pytest.raises(KitError) as refused:
        make_folds(tags, 3, seed=0, names=["common", *"pqrstu"])
    assert str(refused.value).count("(1 image)") == 5
    table, path, rows = _folds_file(competition, tmp_path)
    for header, body in ((["image_id", "label", "a"], rows[1:]), (rows[0], rows[1:-1] + [rows[-1] + ["x"]])):
        write_rows(path, header, body)
        with pytest.raises(KitError, match="is not a folds file"):
            load_or_create(path, table, table.labels, None, seed=0)
    write_rows(path, rows[0], [[rows[1][0], "zzz", rows[1][2]]] + rows[2:])          # sorts after every label
    with pytest.raises(KitError, match=rf"image {rows[1][0]!r} has label 'zzz' but"):
        load_or_create(path, table, table.labels, None, seed=0)
    write_rows(path, rows[0], rows[1:] + [["zz1", "cat", "0"], ["zz2", "cat", "1"]])
    with pytest.raises(KitError) as refused:
        load_or_create(path, table, table.labels, None, seed=0)
    assert "2 id(s) in it are no longer in" in str(refused.value) and "(e.g. 'zz1')" in str(refused.value)
    assert "are not in it" not in str(refused.value)
    from kit.prepare.folds import save
    save(tmp_path / "two.csv", table, np.arange(len(table.ids)) % 2)
    assert f"folds: wrote {tmp_path / 'two.csv'} (2 folds," in kit_log.text
