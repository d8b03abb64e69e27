"""The submission in-process (kit.runtime.submission): each sample row filled from its own outputs, the checks before
anything is written, a graph from another competition refused, probabilities that read back exactly, and outputs
that overwrite no input. The commands that use it (infer.py, a bundle's predict.py) are run in test_predict.py;
these tests are what mutation testing (pyproject's [tool.mutmut]) can see."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from helpers import csv_rows, make_competition, write_rows
from kit.core.errors import KitError
from kit.core.table import Layout, submission_table
from kit.core.task import Multiclass, Regression
from kit.runtime.submission import check_classes, fill, output_paths, validate_submission, write_probabilities

META = SimpleNamespace(id_col="image_id", label_col="label", task="multiclass")
TASK = Multiclass(["cat", "dog", "fox"])


@pytest.fixture
def comp(tmp_path):
    return make_competition(tmp_path / "comp", per_class=2, n_test=4)


def test_each_sample_row_gets_its_own_outputs_in_every_column(comp):
    write_rows(comp / "sample_submission.csv", ["fox", "image_id", "label", "cat"],
               [["0", f"te_{j}", "cat", "0"] for j in range(4)])
    sample = submission_table(str(comp))
    outputs = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6], [0.123456789012, 0.5, 0.376543210988]])
    rows = fill(sample, outputs, TASK, META)
    assert rows == [["0.1", "te_0", "cat", "0.7"], ["0.1", "te_1", "dog", "0.1"], ["0.6", "te_2", "fox", "0.2"],
                    ["0.376543211", "te_3", "dog", "0.123456789"]]


def test_incomplete_or_non_finite_predictions_and_unknown_columns_are_refused(comp):
    sample = submission_table(str(comp))
    good = np.full((4, 3), 1 / 3)
    with pytest.raises(KitError, match=r"^predictions are incomplete or not finite \(3 rows for 4 ids\); nothing was "
                                       r"written$"):
        fill(sample, good[:3], TASK, META)
    bad = good.copy()
    bad[2, 1] = np.nan
    with pytest.raises(KitError, match=r"\(4 rows for 4 ids\)"):
        fill(sample, bad, TASK, META)
    write_rows(comp / "sample_submission.csv", ["image_id", "label", "score"], [[f"te_{j}", "cat", "0"] for j in range(4)])
    with pytest.raises(KitError, match=r"sample_submission\.csv: column 'score' is neither the label column 'label' nor "
                                       r"a class name; the kit does not know how to fill it$"):
        fill(submission_table(str(comp)), good, TASK, META)


def test_a_submission_is_checked_against_the_sample_before_it_is_written():
    header, ids = ["image_id", "label", "tags"], ["a", "b", "c"]

    def check(rows, head=header, expected=ids):
        validate_submission(head, rows, expected, header, "image_id", may_be_empty="tags")
    check([["a", "x", "t"], ["b", "y", ""], ["c", "z", "t"]])           # an empty tag list is a prediction
    with pytest.raises(KitError, match=r"^submission columns \['image_id', 'label'\] differ from sample_submission's "
                                       r"\['image_id', 'label', 'tags'\]$"):
        check([["a", "x"]], head=header[:2])
    with pytest.raises(KitError, match=r"^submission has duplicate ids; nothing was written$"):
        check([["a", "x", "t"], ["a", "y", "t"], ["c", "z", "t"]])
    with pytest.raises(KitError, match=r"^submission does not match sample_submission: 2 id\(s\) missing \(e\.g\. 'b'\); "
                                       r"nothing was written$"):
        check([["a", "x", "t"]], expected=["a", "c", "b"])
    with pytest.raises(KitError, match=r"sample_submission: ids out of order; nothing was written$"):
        check([["b", "x", "t"], ["a", "y", "t"], ["c", "z", "t"]])
    for cell in ("", " ", "nan", "NaN", "inf", "-inf"):
        with pytest.raises(KitError, match=rf"^submission line 3: empty or NaN value in \['b', '{cell}', 't'\]; "
                                           rf"nothing was written$"):
            check([["a", "x", "t"], ["b", cell, "t"], ["c", "z", "t"]])
    with pytest.raises(KitError, match=r"^submission line 4: empty or NaN value"):
        check([["a", "x", "t"], ["b", "y", "t"], ["c", "z", "nan"]])           # only "" may be empty, not NaN
    with pytest.raises(KitError, match=r"^submission line 2: empty or NaN value"):
        check([["a", "x"], ["b", "y", "t"], ["c", "z", "t"]])                  # a short row


def test_a_graph_of_another_competition_is_refused(comp, tmp_path):
    check_classes(TASK, META, comp / "train.csv", "m.onnx")                      # the same classes: fine
    check_classes(TASK, META, tmp_path / "nowhere.csv", "m.onnx")               # no train.csv to compare: fine
    with pytest.raises(KitError, match=r"^m\.onnx was exported for 2 classes \['cat', 'dog'\] but .*train\.csv has 3 "
                                       r"classes \['cat', 'dog', 'fox'\]: it comes from another run\. Export"):
        check_classes(Multiclass(["cat", "dog"]), META, comp / "train.csv", "m.onnx")
    with pytest.raises(KitError, match=r"train\.csv has no column 'breed', which m\.onnx was trained on: it comes from "
                                       r"another competition$"):
        check_classes(TASK, SimpleNamespace(**vars(META) | {"label_col": "breed"}), comp / "train.csv", "m.onnx")
    regression = Regression(["label"], {"kind": "standard", "shift": 0.0, "factor": 1.0})
    with pytest.raises(KitError, match=r"^m\.onnx is a regression model but .*train\.csv does not fit it \(.*\): it "
                                       r"comes from another competition$"):
        check_classes(regression, SimpleNamespace(**vars(META) | {"task": "regression"}), comp / "train.csv", "m.onnx")


def test_train_csv_is_read_as_training_read_it_quietly(tmp_path, caplog):
    """Labels with surrounding spaces and "3.0" beside "3" name the classes training named (the graph's), without
    the log lines training wrote about them; twelve classes are named ten at most in the refusal."""
    import logging
    caplog.set_level(logging.INFO)
    write_rows(tmp_path / "train.csv", ["image_id", "label"],
               [["a", " 3"], ["b", "3.0"], ["c", "7 "], ["d", "12"]])
    check_classes(Multiclass(["3", "7", "12"]), META, tmp_path / "train.csv", "m.onnx")
    assert caplog.text == ""
    three = tmp_path / "three.csv"
    write_rows(three, ["image_id", "label"], [["a", "cat"], ["b", "dog"], ["c", "fox"]])
    write_rows(tmp_path / "train.csv", ["image_id", "label"], [[f"i{k}", f"c{k:02d}"] for k in range(12)])
    with pytest.raises(KitError, match=r"was exported for 3 classes \['cat', 'dog', 'fox'\] but .* has 12 classes "
                                       r"\['c00', 'c01', 'c02', 'c03', 'c04', 'c05', 'c06', 'c07', 'c08', 'c09'\]: "):
        check_classes(TASK, META, tmp_path / "train.csv", "m.onnx")
    with pytest.raises(KitError, match=r"was exported for 12 classes \['c00', .*'c09'\] but .* has 3 classes"):
        check_classes(Multiclass([f"c{k:02d}" for k in range(12)]), META, three, "m.onnx")


def test_probabilities_are_written_to_read_back_as_the_same_float32(comp, tmp_path):
    sample = submission_table(str(comp))
    outputs = np.random.default_rng(0).dirichlet(np.ones(3), 4).astype(np.float32)
    write_probabilities(tmp_path / "probs.csv", sample, outputs, TASK, "image_id")
    rows = csv_rows(tmp_path / "probs.csv")
    assert rows[0] == ["image_id", "prob_cat", "prob_dog", "prob_fox"] and [r[0] for r in rows[1:]] == sample.ids
    np.testing.assert_array_equal(np.array([r[1:] for r in rows[1:]], float).astype(np.float32), outputs)


def test_the_submission_and_probabilities_overwrite_no_input(comp, tmp_path):
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"graph")
    out, probs = output_paths(onnx, str(comp), Layout(), tmp_path / "sub.csv", tmp_path / "probs.csv")
    assert (out, probs) == (tmp_path / "sub.csv", tmp_path / "probs.csv")
    assert output_paths(onnx, str(comp), Layout(), tmp_path / "sub.csv", None)[1] is None
    for bad, why in ((onnx, "inputs"), (tmp_path / "comp" / "new.csv", "inside the competition folder")):
        with pytest.raises(KitError, match=why):
            output_paths(onnx, str(comp), Layout(), bad, None)
    with pytest.raises(KitError, match=r"sample_submission\.csv is one of this command's inputs"):
        output_paths(onnx, str(tmp_path / "elsewhere"), Layout(), tmp_path / "elsewhere" / "sample_submission.csv",
                     None)
    with pytest.raises(KitError, match=r"^--probs .* is one of this command's inputs"):
        output_paths(onnx, str(comp), Layout(train_csv="../t.csv"), tmp_path / "sub.csv", tmp_path / "t.csv")
    with pytest.raises(KitError, match=r"^--probs and --out name the same file"):
        output_paths(onnx, str(comp), Layout(), tmp_path / "sub.csv", tmp_path / "sub.csv")
