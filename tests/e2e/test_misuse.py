"""The second round of real-world data and misuse, one test per family, parametrized over its examples. Every
refusal is exit code 2, one `error:` line, no traceback, and every file it could touch exactly as it was (hashed
before and after). README's "Bad input" list is generated from FAMILIES (`python tests/e2e/test_misuse.py` rewrites it;
a test checks it is current)."""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import (ROOT, TINY, assert_user_error, digest, free_port, make_competition, request, run_entry, run_module, write_rows)

# family -> the README line saying what the kit does with it (the examples are the test parameters below)
FAMILIES = {
    "outputs_overwrite_inputs": "an output path that is one of the command's inputs (compared after symlinks, `..` and "
                                "hard links) or lies in the competition folder or a run dir (`--out`, `--probs`, "
                                "`--onnx-out`, the run dir and folds file of `train.py`, the folders of `kit.bundle` "
                                "and `kit.web`); a folder holding a run's files is a run dir whichever flag led "
                                "there (`--onnx RUN/ensemble.onnx --probs RUN/oof.csv`); two outputs naming one file",
    "refusals_change_nothing": "a refused command leaves every file as it was: it checks everything, takes the run's "
                               "and the folds' locks, and only then writes (a `--resume` under changed settings, a "
                               "second trainer of a busy fold, a fold of another setup)",
    "two_splits": "a run dir whose folds were trained on another split of the data (train.csv or the folds file "
                  "changed): refused up front, asking for a new run dir",
    "label_spelling": "labels that differ only in spelling (`\"3 \"` beside `\"3\"`, `\"1.0\"` beside `\"1\"`): "
                      "normalized, with one log line counting the changed cells; the log, classes.json and the "
                      "submission agree",
    "missing_group_ids": "group ids that are empty or the text of a missing value (`nan`, `None`, `NA`, ...)",
    "ambiguous_task": "labels that read both as class names with spaces and as tag lists (`cat`, `big cat`): "
                      "`--task auto` refuses and asks for `--task`",
    "class_named_like_missing": "a class really named `NA` or `none`: refused as a missing value, with the way out "
                                "named (`--missing-values ''`, or the texts that do mean missing)",
    "foreign_metadata": "an ONNX file that is no ONNX, has no or hand-edited `kit.*` metadata (non-numeric sizes, "
                        "malformed task parameters, a softmax graph relabelled multilabel): checked against the graph "
                        "before predicting",
    "many_classes": "thousands of classes: reports stay bounded (a top-confusions view, capped figures), and a report "
                    "that fails never stops training",
    "bad_cli_values": "a file where a folder is expected and the reverse, empty strings, `inf`/`nan` numbers, ports "
                      "out of range, malformed durations, on every command; builders write a temporary folder and "
                      "rename it, so a failure leaves nothing",
    "service_misuse": "the service: a client that disconnects mid-upload (one log line), settings that would make a "
                      "request wait forever (refused), SIGTERM with a stalled upload (stops in seconds), no Python "
                      "object reprs in error messages",
    "special_files": "named pipes and other files that are not regular files among the images: refused by the "
                     "pre-check, nothing blocks",
    "image_breaks_during_training": "an image that becomes unreadable after the pre-check: one line naming it, not "
                                    "a loader worker's traceback",
    "misleading_messages": "a one-hot table saved as 1.0/0.0 (accepted) or with a stray value (named), a regression "
                           "target that overflows float32 (said), a CSV cell over the reader's limit (its line named)",
    "stale_or_partial": "files derived from others that changed: an int8 twin made from another graph (`kit.web "
                        "--int8`), a teacher fold retrained while its student trains, an ensemble missing a fold that "
                        "is still training (refused unless `--folds` names the folds); a `--seeds` folder is taken as "
                        "a teacher as `infer.py` takes it",
    "hostile_page_and_service": "a graph whose metadata (or a `--title`) holds markup: escaped in the page; page and "
                                "bundle folders readable as the umask says, not 0700; the service's `/metadata` "
                                "names run dirs, never the server's paths",
    "hangs_and_tracebacks": "symlink loops under a `kit.predict` glob or folder (each image once, it ends), a file "
                            "name that is not UTF-8 (written back as its bytes), a read-only run dir or a full disk "
                            "(one line), a blend of runs sharing one fold (one line), temporary folders of killed "
                            "builds (cleared by the next build)",
}

README_START, README_END = "<!-- bad-input: generated by tests/e2e/test_misuse.py -->", "<!-- /bad-input -->"


def family(name):
    assert name in FAMILIES
    return pytest.mark.family(name)


def infer(comp, run, tmp, *extra):
    return ["infer.py", "--run-dir", run, "--data-dir", comp, *extra]


@pytest.fixture
def copied(trained, onnx_file, tmp_path):
    """A private copy of the session's trained run, its competition and its graph (refusals are hashed on it)."""
    comp, run, folds_csv, _ = trained
    shutil.copytree(comp, tmp_path / "comp")
    shutil.copytree(run, tmp_path / "run")
    shutil.copy(folds_csv, tmp_path / "folds.csv")
    shutil.copy(onnx_file, tmp_path / "graph.onnx")
    return tmp_path / "comp", tmp_path / "run", tmp_path / "graph.onnx"


# --- outputs never overwrite inputs ------------------------------------------------------------------------------

def _link(kind):
    def make(comp, run, graph, tmp):
        target = tmp / "elsewhere.csv"
        (os.symlink if kind == "symlink" else os.link)(comp / "sample_submission.csv", target)
        return target
    return make


OVERWRITES = {
    "out=sample_submission": (lambda c, r, g, t: ["--onnx", g, "--out", c / "sample_submission.csv"], "inputs|inside"),
    "probs=train.csv": (lambda c, r, g, t: ["--onnx", g, "--out", t / "s.csv", "--probs", c / "train.csv"],
                        "inputs|inside"),
    "out=the onnx read": (lambda c, r, g, t: ["--onnx", g, "--out", g], "one of this command's inputs"),
    "out=a checkpoint": (lambda c, r, g, t: ["--onnx", g, "--out", r / "fold0" / "best.pt"], "inside the run dir"),
    "out via ..": (lambda c, r, g, t: ["--onnx", g, "--out", c / "test_images" / ".." / "x.csv"],
                   "inside the competition folder"),
    "out=symlink to an input": (lambda c, r, g, t: ["--onnx", g, "--out", _link("symlink")(c, r, g, t)],
                                "one of this command's inputs"),
    "out=hard link to an input": (lambda c, r, g, t: ["--onnx", g, "--out", _link("hardlink")(c, r, g, t)],
                                  "one of this command's inputs|hard link"),
    "onnx-out in the data": (lambda c, r, g, t: ["--onnx-out", c / "graph.onnx", "--out", t / "s.csv"],
                             "inside the competition folder"),
    "onnx-out=a checkpoint": (lambda c, r, g, t: ["--onnx-out", r / "fold1" / "last.pt", "--out", t / "s.csv"],
                              "inside the run dir"),
    "out=probs": (lambda c, r, g, t: ["--onnx", g, "--out", t / "s.csv", "--probs", t / "s.csv"], "name the same file"),
}


@family("outputs_overwrite_inputs")
@pytest.mark.parametrize("case", OVERWRITES, ids=list(OVERWRITES))
def test_outputs_never_overwrite_inputs(copied, tmp_path, capsys, case):
    comp, run, graph = copied
    make, pattern = OVERWRITES[case]
    args = make(comp, run, graph, tmp_path)
    before = (digest(comp), digest(run), graph.read_bytes())
    assert_user_error(run_entry(capsys, *infer(comp, run, tmp_path, *args)), pattern)
    assert (digest(comp), digest(run), graph.read_bytes()) == before


def test_the_default_places_still_work(copied, tmp_path, capsys):
    """The rule lets the kit's own outputs be: the run dir's ensemble.onnx, a submission beside the data."""
    comp, run, graph = copied
    r = run_entry(capsys, *infer(comp, run, tmp_path, "--out", tmp_path / "sub" / "s.csv", "--folds", "0"))
    assert r.returncode == 0, r.stderr
    assert (run / "ensemble.onnx").is_file() and (tmp_path / "sub" / "s.csv").is_file()


@family("outputs_overwrite_inputs")
@pytest.mark.parametrize("flag,where", [("--run-dir", "comp/run"), ("--folds-csv", "comp/folds.csv"),
                                        ("--folds-csv", "comp/train.csv")])
def test_training_outputs_stay_out_of_the_competition_folder(tmp_path, capsys, flag, where):
    comp = make_competition(tmp_path / "comp", per_class=4)
    before = digest(comp)
    args = ["train.py", "--data-dir", comp, "--run-dir", tmp_path / "run", "--folds-csv", tmp_path / "f.csv",
            *TINY, flag, tmp_path / where]
    assert_user_error(run_entry(capsys, *args), "inside the competition folder|one of this command's inputs")
    assert digest(comp) == before


@family("outputs_overwrite_inputs")
@pytest.mark.parametrize("module", ["kit.web", "kit.bundle"])
def test_builders_refuse_an_out_inside_what_they_read(copied, tmp_path, capsys, module):
    comp, run, graph = copied
    before = digest(run)
    args = ["--run-dir", run, "--out", run / "page"] if module == "kit.bundle" else \
        ["--onnx", run / "fold0" / "best.pt", "--out", tmp_path / "p"]
    assert_user_error(run_module(capsys, module, *args), "inside the run dir|cannot load|is not")
    assert digest(run) == before and not (tmp_path / "p").exists()


# --- a refused command changes nothing ---------------------------------------------------------------------------

def small_run(tmp_path, capsys, epochs="1", *extra):
    comp = make_competition(tmp_path / "comp", per_class=4)
    args = ["train.py", "--data-dir", comp, "--run-dir", tmp_path / "run", "--folds-csv", tmp_path / "folds.csv",
            "--num-folds", "2", *TINY[:3], "--img-size", "16", "--batch-size", "4", "--num-workers", "0",
            "--epochs", epochs, *extra]
    r = run_entry(capsys, *args, "--fold", "0")
    assert r.returncode == 0, r.stderr
    return comp, args


@family("refusals_change_nothing")
def test_a_refused_resume_leaves_the_run_dir_byte_identical(tmp_path, capsys):
    comp, args = small_run(tmp_path, capsys)
    run = tmp_path / "run"
    before = digest(run)
    r = run_entry(capsys, *[a if a != "1" or i != len(args) - 1 else "2" for i, a in enumerate(args)], "--fold", "0",
                  "--resume")
    assert_user_error(r, r"cannot resume fold 0: epochs: 1 -> 2")
    assert digest(run) == before
    r = run_entry(capsys, "infer.py", "--run-dir", run, "--export-only", "--onnx-out", tmp_path / "e.onnx")
    assert r.returncode == 0 and "leaving out" not in r.stdout            # fold 0 still counts as finished


@family("refusals_change_nothing")
def test_a_second_trainer_of_a_busy_fold_writes_nothing(tmp_path, capsys):
    from kit.store.lock import fold_lock
    comp, args = small_run(tmp_path, capsys)
    run = tmp_path / "run"
    (run / "fold1").mkdir()
    with fold_lock(run / "fold1") as lock:                          # another process is training fold 1
        lock.claim()
        before = digest(run)
        r = run_entry(capsys, *args, "--fold", "1", "--lr", "0.2")               # other settings, a busy fold
        assert_user_error(r, r"is being trained by another process|another setup")
        assert digest(run) == before
        # and a third process training fold 0 with other settings is refused by the busy fold 1's setup
        r = run_entry(capsys, *args, "--fold", "0", "--lr", "0.3")
        assert_user_error(r, r"another setup \(lr: ")
        assert digest(run) == before


@family("refusals_change_nothing")
def test_a_fold_of_another_setup_writes_nothing(tmp_path, capsys):
    comp, args = small_run(tmp_path, capsys)
    run = tmp_path / "run"
    before = digest(run), (tmp_path / "folds.csv").read_bytes()
    assert_user_error(run_entry(capsys, *args, "--fold", "1", "--epochs", "3"), r"another setup \(epochs: 1 -> 3\)")
    assert (digest(run), (tmp_path / "folds.csv").read_bytes()) == before


@family("refusals_change_nothing")
def test_a_refusal_on_a_fresh_run_dir_leaves_no_folder(tmp_path, capsys):
    comp = make_competition(tmp_path / "comp", per_class=4)
    r = run_entry(capsys, "train.py", "--data-dir", comp, "--run-dir", tmp_path / "run", "--folds-csv",
                  tmp_path / "folds.csv", *TINY, "--model", "no_such_model")
    assert r.returncode == 2
    assert not (tmp_path / "run").exists() and not (tmp_path / "folds.csv").exists()


# --- two splits in one run dir -----------------------------------------------------------------------------------

@family("two_splits")
@pytest.mark.parametrize("change", ["fewer rows", "relabelled"])
def test_a_run_dir_of_another_split_is_refused_up_front(tmp_path, capsys, change):
    comp, args = small_run(tmp_path, capsys)
    rows = list(__import__("csv").reader(open(comp / "train.csv")))
    if change == "fewer rows":
        rows = rows[:-3]
    else:
        rows[1][1] = "dog" if rows[1][1] != "dog" else "cat"
    write_rows(comp / "train.csv", rows[0], rows[1:])
    (tmp_path / "folds.csv").unlink()                                  # as the stale-folds message tells the user
    before = digest(tmp_path / "run")
    r = run_entry(capsys, *args, "--fold", "1")
    assert_user_error(r, r"holds fold 0 trained on another split of the data .* train into a new --run-dir")
    assert digest(tmp_path / "run") == before and not (tmp_path / "folds.csv").exists()


# --- labels that differ only in spelling -------------------------------------------------------------------------

def plan_of(comp, tmp_path, **settings):
    from kit.settings.config import load_config
    from kit.train.run import plan
    cfg = load_config(None, {"data_dir": str(comp), "run_dir": str(tmp_path / "run"), "folds_csv":
                             str(tmp_path / "folds.csv"), "num_folds": 2, **settings})
    return plan(cfg, "0", False, False)


@family("label_spelling")
@pytest.mark.parametrize("spelled,plain", [("3 ", "3"), ("1.0", "1"), (" 7", "7"), ("2.00", "2")])
def test_labels_that_differ_only_in_spelling_are_one_class(tmp_path, kit_log, spelled, plain):
    comp = make_competition(tmp_path / "comp", per_class=6, classes=(plain, "5", "8"))
    rows = list(__import__("csv").reader(open(comp / "train.csv")))
    changed = [i for i, r in enumerate(rows[1:], 1) if r[1] == plain][:2]
    for i in changed:
        rows[i][1] = spelled
    write_rows(comp / "train.csv", rows[0], rows[1:])
    p = plan_of(comp, tmp_path)
    assert p.task.names == sorted({plain, "5", "8"}, key=int)
    log = kit_log.text
    assert re.search(rf"labels: 2 cell\(s\) of .*train.csv .* \(e.g. line {changed[0] + 1}: {re.escape(repr(spelled))}",
                     log), log
    assert "the labels are 3 distinct integers" in log                  # what the log says is classes.json


def test_a_float_column_alone_keeps_its_spelling(tmp_path):
    """'1.0' is rewritten only beside a plain '1': a column written all as floats keeps its classes as written."""
    comp = make_competition(tmp_path / "comp", per_class=6, classes=("1.0", "2.0", "3.0"))
    assert plan_of(comp, tmp_path, task="multiclass").task.names == ["1.0", "2.0", "3.0"]


# --- group ids and class names that look missing ------------------------------------------------------------------

@family("missing_group_ids")
@pytest.mark.parametrize("text", ["nan", "NaN", "None", "NA", "", " "])
def test_missing_value_text_as_a_group_id_is_refused(tmp_path, capsys, text):
    comp = make_competition(tmp_path / "comp", per_class=5)
    rows = list(__import__("csv").reader(open(comp / "train.csv")))
    write_rows(comp / "train.csv", ["image_id", "label", "patient"],
               [[r[0], r[1], text if i % 3 == 0 else f"p{i}"] for i, r in enumerate(rows[1:])])
    r = run_entry(capsys, "train.py", "--data-dir", comp, "--run-dir", tmp_path / "run", "--folds-csv",
                  tmp_path / "f.csv", "--group-col", "patient", *TINY)
    assert_user_error(r, r"line 2: 'patient' is empty or the text of a missing value \(5 row\(s\) in all\)")
    assert not (tmp_path / "f.csv").exists()


@family("ambiguous_task")
@pytest.mark.parametrize("names", [("cat", "big cat", "dog", "hot dog"), ("scab", "scab complex", "rust")])
def test_labels_that_read_two_ways_ask_for_the_task(tmp_path, capsys, names):
    comp = make_competition(tmp_path / "comp", per_class=4, classes=names)
    r = run_entry(capsys, "train.py", "--data-dir", comp, "--run-dir", tmp_path / "run", "--folds-csv",
                  tmp_path / "f.csv", "--num-folds", "2", *TINY)
    assert_user_error(r, r"the labels read two ways: .* Pass --task multiclass .* or --task multilabel")
    assert plan_of(comp, tmp_path, task="multiclass").task.names == sorted(names)


@family("class_named_like_missing")
@pytest.mark.parametrize("name", ["NA", "none", "None"])
def test_a_class_named_like_a_missing_value_has_a_way_out(tmp_path, capsys, name):
    comp = make_competition(tmp_path / "comp", per_class=5, classes=(name, "cat", "dog"))
    r = run_entry(capsys, "train.py", "--data-dir", comp, "--run-dir", tmp_path / "run", "--folds-csv",
                  tmp_path / "f.csv", *TINY)
    assert_user_error(r, rf"'label' is '{name}', the text of a missing value.*set missing_values")
    assert name in plan_of(comp, tmp_path, missing_values="").task.names
    assert name in plan_of(comp, tmp_path, missing_values="nan,null").task.names


# --- foreign or hand-edited graph metadata -----------------------------------------------------------------------

def edited(graph: Path, out: Path, **changes) -> Path:
    import onnx
    model = onnx.load(str(graph))
    props = {p.key: p.value for p in model.metadata_props}
    props.update({f"kit.{k}": v for k, v in changes.items()})
    del model.metadata_props[:]
    for k, v in props.items():
        model.metadata_props.add(key=k, value=v)
    onnx.save(model, str(out))
    return out


METADATA = {
    "img_size text": ({"img_size": '"big"'}, r"kit.img_size is 'big', not a int"),
    "img_size not json": ({"img_size": "{32"}, r"metadata kit.img_size is not valid JSON"),
    "thresholds short": ({"task": '"multilabel"', "task_params": '{"thresholds": [0.5]}'},
                         r"kit.task / kit.task_params do not describe a task"),
    "softmax as multilabel": ({"task": '"multilabel"', "task_params": '{"thresholds": [0.5, 0.5, 0.5]}'},
                              r"its metadata says multilabel but its outputs sum to 1 for every image"),
    "scale malformed": ({"task": '"regression"', "task_params": '{"scale": 3}', "classes": '["y"]'},
                        r"do not describe a task|outputs 3 classes"),
    "classes not a list": ({"classes": '"cat"'}, r"kit.classes is 'cat', not a list"),
}


@family("foreign_metadata")
@pytest.mark.parametrize("case", METADATA, ids=list(METADATA))
def test_hand_edited_metadata_is_checked_against_the_graph(copied, tmp_path, capsys, case):
    comp, run, graph = copied
    changes, pattern = METADATA[case]
    bad = edited(graph, tmp_path / "bad.onnx", **changes)
    r = run_entry(capsys, "infer.py", "--onnx", bad, "--data-dir", comp, "--out", tmp_path / "s.csv")
    assert_user_error(r, pattern)
    assert not (tmp_path / "s.csv").exists()


@family("foreign_metadata")
@pytest.mark.parametrize("what", ["text", "empty", "no metadata"])
@pytest.mark.parametrize("module", ["infer.py", "kit.web", "kit.serve", "kit.bundle"])
def test_a_file_that_is_no_kit_graph_is_one_line_everywhere(copied, tmp_path, capsys, what, module):
    import onnx
    comp, run, graph = copied
    bad = tmp_path / "bad.onnx"
    if what == "text":
        bad.write_text("this is not an ONNX file\n")
    elif what == "empty":
        bad.write_bytes(b"")
    else:
        model = onnx.load(str(graph))
        del model.metadata_props[:]
        onnx.save(model, str(bad))
    pattern = r"cannot load|not an ensemble exported by this kit"
    if module == "infer.py":
        r = run_entry(capsys, "infer.py", "--onnx", bad, "--data-dir", comp, "--out", tmp_path / "s.csv")
    elif module == "kit.serve":
        r = run_module(capsys, "kit.runtime.serve", "--onnx", bad, "--port", free_port())
    else:
        r = run_module(capsys, module, "--onnx", bad, "--out", tmp_path / "out")
        assert not (tmp_path / "out").exists()
    assert_user_error(r, pattern)


# --- many classes --------------------------------------------------------------------------------------------------

@family("many_classes")
def test_the_confusion_figure_is_bounded_for_10000_classes(tmp_path):
    import tracemalloc
    from kit.evaluate.report import plot_confusion
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10_000, 30_000)
    pred = np.where(rng.random(30_000) < 0.7, y, rng.integers(0, 10_000, 30_000))
    tracemalloc.start()
    t0 = time.perf_counter()
    plot_confusion(y, pred, [f"class_{i}" for i in range(10_000)], tmp_path / "cm.png")
    seconds, peak = time.perf_counter() - t0, tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    with Image.open(tmp_path / "cm.png") as im:
        assert max(im.size) < 3000, im.size
    assert peak < 200 * 2**20 and seconds < 60, (peak, seconds)        # a 10k x 10k matrix alone would be 800 MB


@family("many_classes")
def test_hundreds_of_classes_train_every_fold_and_a_failing_report_never_stops_training(tmp_path, capsys, monkeypatch):
    classes = [f"c{i:03d}" for i in range(300)]
    comp = tmp_path / "comp"
    for folder in ("train_images", "test_images"):
        (comp / folder).mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []
    for i, c in enumerate(classes):
        for j in range(2):
            Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(comp / "train_images" / f"{c}_{j}.png")
            rows.append((f"{c}_{j}", c))
    write_rows(comp / "train.csv", ["image_id", "label"], rows)
    args = ["train.py", "--data-dir", comp, "--run-dir", tmp_path / "run", "--folds-csv", tmp_path / "f.csv",
            "--num-folds", "2", *TINY[:3], "--img-size", "8", "--epochs", "1", "--batch-size", "64",
            "--num-workers", "0", "--fold", "all"]
    r = run_entry(capsys, *args)
    assert r.returncode == 0, r.stderr
    with Image.open(tmp_path / "run" / "confusion_matrix.png") as im:
        assert max(im.size) < 3000
    import kit.evaluate.report

    def fail(*_):
        raise MemoryError("boom")
    monkeypatch.setattr(kit.evaluate.report, "plot_curves", fail)
    shutil.rmtree(tmp_path / "run")
    r = run_entry(capsys, *args)
    assert r.returncode == 0, r.stderr
    assert "could not be rebuilt (MemoryError: boom); training goes on" in r.stdout
    assert (tmp_path / "run" / "fold1" / "best.pt").is_file()


# --- every command line answers bad paths and values in one line ---------------------------------------------------

def _bad_cli(tmp, comp, run, graph):
    (tmp / "afile").write_text("x")
    (tmp / "adir").mkdir()
    train = ["train.py", "--data-dir", comp, "--run-dir", tmp / "r", "--folds-csv", tmp / "f.csv", *TINY]
    return {
        "train --run-dir a file": (train + ["--run-dir", tmp / "afile"], r"--run-dir .*afile is a file"),
        "train --folds-csv a folder": (train + ["--folds-csv", tmp / "adir"], r"--folds-csv .*adir is a folder"),
        "train --run-dir empty": (train + ["--run-dir", ""], r"argument --run-dir: it is empty"),
        "train --data-dir empty": (train + ["--data-dir", ""], r"argument --data-dir: it is empty"),
        "train --warmup-epochs inf": (train + ["--warmup-epochs", "inf"], r"'warmup_epochs' must be a finite float"),
        "train --lr nan": (train + ["--lr", "nan"], r"'lr' must be a finite float"),
        "train --epochs inf": (train + ["--epochs", "inf"], r"argument --epochs: invalid int value"),
        "infer --onnx-out a folder": (["infer.py", "--run-dir", run, "--onnx-out", tmp / "adir"],
                                      r"--onnx-out .*adir is a folder"),
        "infer --out empty": (["infer.py", "--onnx", graph, "--data-dir", comp, "--out", ""],
                              r"argument --out|--out is empty"),
        "infer --batch-size nan": (["infer.py", "--onnx", graph, "--batch-size", "nan"], r"argument --batch-size"),
        "report of a file": (["-m", "kit.evaluate.report", tmp / "afile"], r"afile is a file; give the run dir"),
        "report empty": (["-m", "kit.evaluate.report", ""], r"it is empty"),
        "serve --port 70000": (["-m", "kit.runtime.serve", "--onnx", graph, "--port", "70000"], r"'70000' is outside"),
        "serve --port 0": (["-m", "kit.runtime.serve", "--onnx", graph, "--port", "0"], r"'0' is outside"),
        "serve --max-wait-ms inf": (["-m", "kit.runtime.serve", "--onnx", graph, "--max-wait-ms", "inf"],
                                    r"'inf' is outside"),
        "serve --max-wait-ms nan": (["-m", "kit.runtime.serve", "--onnx", graph, "--max-wait-ms", "nan"],
                                    r"'nan' is outside"),
        "serve --max-batch 0": (["-m", "kit.runtime.serve", "--onnx", graph, "--max-batch", "0"], r"'0' is outside"),
        "bundle --time-limit 1.2.3": (["-m", "kit.deploy.bundle", "--onnx", graph, "--out", tmp / "b", "--time-limit",
                                       "1.2.3"], r"'1.2.3' is not a duration"),
        "bundle --out a file": (["-m", "kit.deploy.bundle", "--onnx", graph, "--out", tmp / "afile"],
                                r"--out .*afile is a file"),
        "web --out a file": (["-m", "kit.deploy.web", "--onnx", graph, "--out", tmp / "afile"], r"--out .*afile is a file"),
        "web --out empty": (["-m", "kit.deploy.web", "--onnx", graph, "--out", ""], r"argument --out: it is empty"),
    }


@family("bad_cli_values")
@pytest.mark.parametrize("case", [
    "train --run-dir a file", "train --folds-csv a folder", "train --run-dir empty", "train --data-dir empty",
    "train --warmup-epochs inf", "train --lr nan", "train --epochs inf", "infer --onnx-out a folder",
    "infer --out empty", "infer --batch-size nan", "report of a file", "report empty", "serve --port 70000",
    "serve --port 0", "serve --max-wait-ms inf", "serve --max-wait-ms nan", "serve --max-batch 0",
    "bundle --time-limit 1.2.3", "bundle --out a file", "web --out a file", "web --out empty"])
def test_bad_paths_and_values_are_one_line(copied, tmp_path, capsys, case):
    comp, run, graph = copied
    args, pattern = _bad_cli(tmp_path, comp, run, graph)[case]
    before = digest(run), digest(comp)
    r = run_module(capsys, args[1], *args[2:]) if args[0] == "-m" else run_entry(capsys, *args)
    assert_user_error(r, pattern)
    assert (digest(run), digest(comp)) == before


@family("bad_cli_values")
def test_a_builder_that_fails_leaves_nothing_and_the_retry_works(copied, tmp_path, capsys, monkeypatch):
    import kit.deploy.web as web
    from kit.core.errors import KitError
    comp, run, graph = copied
    real = web.page_graphs

    def fail(*_):
        raise KitError("disk on fire")
    monkeypatch.setattr(web, "page_graphs", fail)
    r = run_module(capsys, "kit.deploy.web", "--onnx", graph, "--out", tmp_path / "page")
    assert_user_error(r, "disk on fire")
    assert not (tmp_path / "page").exists() and not list(tmp_path.glob(".page*"))
    monkeypatch.setattr(web, "page_graphs", real)
    r = run_module(capsys, "kit.deploy.web", "--onnx", graph, "--out", tmp_path / "page")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "page" / "index.html").is_file()


# --- the service -----------------------------------------------------------------------------------------------------

@family("service_misuse")
def test_the_service_survives_misuse_and_stops_on_sigterm(onnx_file, trained):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "kit.serve", "--onnx", str(onnx_file), "--port", str(port)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if request(port, "GET", "/health")[0] == 200:
                    break
            except OSError:
                time.sleep(0.2)
        # garbage: a 400 whose message holds no Python object repr
        status, body = request(port, "POST", "/predict", b"not an image")
        assert status == 400 and "0x" not in body["error"] and "<_io" not in body["error"], body
        # a client that disconnects mid-upload
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + b"\x89PNG" * 10)
        s.close()
        time.sleep(0.5)
        image = sorted((trained[0] / "test_images").iterdir())[0].read_bytes()
        assert request(port, "POST", "/predict", image)[0] == 200             # it goes on
        # a stalled upload does not keep SIGTERM from stopping the process
        stalled = socket.create_connection(("127.0.0.1", port))
        stalled.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n\x89PNG")
        t0 = time.time()
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=20)[0]
        assert time.time() - t0 < 15, "SIGTERM took too long"
        stalled.close()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "Traceback" not in out, out
    assert "serve: " in out and "disconnected" in out, out


# --- special files, images breaking mid-training, misleading messages --------------------------------------------------

@family("special_files")
@pytest.mark.parametrize("where", ["train", "test"])
def test_a_named_pipe_among_the_images_is_refused_without_blocking(copied, tmp_path, capsys, where):
    comp, run, graph = copied
    folder = comp / ("train_images" if where == "train" else "test_images")
    victim = sorted(folder.iterdir())[0]
    victim.unlink()
    os.mkfifo(victim)
    if where == "train":
        r = run_entry(capsys, "train.py", "--data-dir", comp, "--run-dir", tmp_path / "r", "--folds-csv",
                      tmp_path / "f.csv", *TINY)
    else:
        r = run_entry(capsys, "infer.py", "--onnx", graph, "--data-dir", comp, "--out", tmp_path / "s.csv")
    assert_user_error(r, rf"{re.escape(victim.name)} is not a regular file")


@family("image_breaks_during_training")
@pytest.mark.parametrize("workers", ["0", "1"])
def test_an_image_that_breaks_during_training_is_one_line(tmp_path, capsys, monkeypatch, workers):
    import kit.train.run as run_mod
    comp = make_competition(tmp_path / "comp", per_class=4)
    victim = sorted((comp / "train_images").iterdir())[3]
    real = run_mod.check_images_readable

    def then_break(paths):
        real(paths)
        victim.write_bytes(b"\x89PNG broken after the check")
    monkeypatch.setattr(run_mod, "check_images_readable", then_break)
    r = run_entry(capsys, "train.py", "--data-dir", comp, "--run-dir", tmp_path / "run", "--folds-csv",
                  tmp_path / "f.csv", "--num-folds", "2", *TINY[:-4], "--num-workers", workers, "--epochs", "1",
                  "--cache-images", "off")           # images held in memory are decoded once, at the check
    assert_user_error(r, rf"fold 0, (epoch 1|validation): cannot read image .*{re.escape(victim.name)}")


@family("misleading_messages")
@pytest.mark.parametrize("case", ["one-hot as floats", "stray 2", "overflowing target", "huge cell"])
def test_messages_say_what_is_really_wrong(tmp_path, capsys, case):
    comp = make_competition(tmp_path / "comp", per_class=5)
    rows = list(__import__("csv").reader(open(comp / "train.csv")))[1:]
    args = ["train.py", "--data-dir", comp, "--run-dir", tmp_path / "run", "--folds-csv", tmp_path / "f.csv",
            "--num-folds", "2", *TINY]
    if case in ("one-hot as floats", "stray 2"):
        tags = ["cat", "dog", "fox"]
        table = [[r[0]] + [f"{float(t in (r[1], 'fox')):.1f}" for t in tags] for r in rows]
        if case == "stray 2":
            table[4][2] = "2.0"
            write_rows(comp / "train.csv", ["image_id", *tags], table)
            assert_user_error(run_entry(capsys, *args), r"train.csv line 6, column 'dog': 2 is not 0 or 1")
            return
        write_rows(comp / "train.csv", ["image_id", *tags], table)
        p = plan_of(comp, tmp_path)
        assert p.task.kind == "multilabel" and p.task.names == tags
        return
    if case == "overflowing target":
        write_rows(comp / "train.csv", ["image_id", "label"], [[r[0], f"{(i % 7) * 1e307:g}"] for i, r in enumerate(rows)])
        assert_user_error(run_entry(capsys, *args, "--task", "regression"), r"overflows 32-bit floats")
        return
    text = (comp / "train.csv").read_text().splitlines()
    text[3] = text[3] + "x" * 200_000
    (comp / "train.csv").write_text("\n".join(text) + "\n")
    assert_user_error(run_entry(capsys, *args), r"train.csv line 4 is not a readable CSV: field larger than field limit")


# --- round 3: derived files, hostile input, hangs ---------------------------------------------------------------------

@family("outputs_overwrite_inputs")
@pytest.mark.parametrize("flag", ["--probs", "--out"])
def test_a_run_dir_is_protected_whichever_flag_leads_there(copied, tmp_path, capsys, flag):
    """No --run-dir given: the folder holding the graph is still a run dir (config.yaml and task.json say so)."""
    comp, run, graph = copied
    shutil.copy(graph, run / "ensemble.onnx")
    before = digest(run)
    args = ["infer.py", "--onnx", run / "ensemble.onnx", "--data-dir", comp, "--out", tmp_path / "s.csv", flag,
            run / "oof.csv"]
    if flag == "--out":
        args = args[:-4] + ["--out", run / "oof.csv"]
    assert_user_error(run_entry(capsys, *args), r"lies inside the run dir .*write it elsewhere")
    assert digest(run) == before


@family("stale_or_partial")
def test_an_int8_twin_of_another_graph_is_refused(copied, tmp_path, capsys):
    from kit.core.artifact import Metadata, write_metadata
    from kit.deploy.twins import twin_of
    from kit.runtime.predictor import Predictor
    comp, run, graph = copied
    meta = Predictor(graph, "cpu").meta
    assert meta.export_key                                   # every export carries a key, infer.py's or its own
    twin = graph.with_name("graph.int8.onnx")
    shutil.copy(graph, twin)
    write_metadata(twin, Metadata(**{**meta.__dict__, "int8": True, "int8_agreement": 1.0}))
    assert twin_of(graph, "int8") == twin                          # made from this graph: taken
    write_metadata(twin, Metadata(**{**meta.__dict__, "int8": True, "int8_agreement": 1.0, "export_key": "0" * 64}))
    assert_user_error(run_module(capsys, "kit.web", "--onnx", graph, "--out", tmp_path / "page", "--int8"),
                      r"graph.int8.onnx was made from another graph than .* --re-export")
    assert not (tmp_path / "page").exists()


@family("stale_or_partial")
def test_a_teacher_fold_retrained_while_its_student_trains_is_refused(copied, tmp_path, capsys, monkeypatch):
    import kit.train.run
    comp, teacher, _ = copied
    real = kit.train.run.train_fold

    def then_retrain_teacher(*a, **k):
        result = real(*a, **k)
        (teacher / "fold1" / "oof.csv").write_text((teacher / "fold1" / "oof.csv").read_text() + "\n")
        return result
    monkeypatch.setattr(kit.train.run, "train_fold", then_retrain_teacher)
    r = run_entry(capsys, "train.py", "--data-dir", comp, "--teacher", teacher, "--run-dir", tmp_path / "student",
                  *TINY[:-6], "--epochs", "1", "--batch-size", "8", "--fold", "all")
    assert_user_error(r, rf"--teacher {re.escape(str(teacher))}: fold 1 changed since this student started")
    assert (tmp_path / "student" / "fold0" / "best.pt").is_file() and not (tmp_path / "student" / "fold1" / "best.pt").exists()


@family("stale_or_partial")
def test_a_seeds_folder_teaches_as_infer_reads_it(copied, tmp_path, capsys):
    comp, run, _ = copied
    (tmp_path / "seeds").mkdir()
    shutil.copytree(run, tmp_path / "seeds" / "seed0")
    r = run_entry(capsys, "train.py", "--data-dir", comp, "--teacher", tmp_path / "seeds", "--run-dir",
                  tmp_path / "student", *TINY[:-6], "--epochs", "1", "--batch-size", "8", "--fold", "0")
    assert r.returncode == 0, r.stderr
    assert "distilled" in r.stdout


@family("stale_or_partial")
def test_an_ensemble_missing_a_fold_still_training_is_refused(copied, tmp_path, capsys):
    comp, run, _ = copied
    metrics = (run / "fold2" / "metrics.csv").read_text().splitlines()
    (run / "fold2" / "metrics.csv").write_text("\n".join(metrics[:-1]) + "\n")        # an epoch still to go
    before = digest(run)
    assert_user_error(run_entry(capsys, *infer(comp, run, tmp_path, "--out", tmp_path / "s.csv")),
                      r"fold\(s\) \[2\] of .* have not finished training .*--folds 0,1")
    assert digest(run) == before and not (tmp_path / "s.csv").exists()
    r = run_entry(capsys, *infer(comp, run, tmp_path, "--out", tmp_path / "s.csv", "--folds", "0,1"))
    assert r.returncode == 0, r.stderr


@family("hostile_page_and_service")
def test_markup_in_metadata_or_title_is_escaped_and_folders_are_readable(copied, tmp_path, capsys):
    from kit.core.artifact import Metadata, write_metadata
    from kit.runtime.predictor import Predictor
    comp, run, graph = copied
    meta = Predictor(graph, "cpu").meta
    write_metadata(graph, Metadata(**{**meta.__dict__, "model": "</title><script>alert(1)</script>"}))
    old = os.umask(0o022)
    try:
        r = run_module(capsys, "kit.web", "--onnx", graph, "--out", tmp_path / "page")
        assert r.returncode == 0, r.stderr
        r = run_module(capsys, "kit.web", "--onnx", graph, "--out", tmp_path / "titled", "--title", "<b>x</b>")
        assert r.returncode == 0, r.stderr
    finally:
        os.umask(old)
    page = (tmp_path / "page" / "index.html").read_text()
    assert "<script>alert(1)" not in page and "&lt;/title&gt;&lt;script&gt;alert(1)" in page
    assert "<b>x</b>" not in (tmp_path / "titled" / "index.html").read_text()
    assert (tmp_path / "page").stat().st_mode & 0o777 == 0o755          # a static server of another user can read it


@family("hostile_page_and_service")
def test_the_service_metadata_names_no_server_path(copied, tmp_path):
    comp, run, graph = copied
    from helpers import service
    with service(graph) as port:
        status, body = request(port, "GET", "/metadata")
    members = body["members"]
    assert status == 200 and members and all("/" not in m["run"] and m["run"] for m in members)


@family("hostile_page_and_service")
def test_huge_images_are_refused_from_their_headers_before_decoding(copied, tmp_path):
    """A 9000x9000 grayscale PNG is 630 KB on the wire and 243 MB decoded: refused from its header (413), alone and
    in a batch, while a concurrent small image is answered."""
    import io
    comp, run, graph = copied
    buffer = io.BytesIO()
    Image.new("L", (9000, 9000)).save(buffer, format="PNG")
    huge = buffer.getvalue()
    small = sorted((comp / "test_images").iterdir())[0].read_bytes()
    from helpers import service

    def form(*files):
        boundary = "kitboundary"
        body = b"".join(f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{i}.png\"\r\n"
                        f"Content-Type: image/png\r\n\r\n".encode() + f + b"\r\n" for i, f in enumerate(files))
        return body + f"--{boundary}--\r\n".encode(), {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    with service(graph, "--max-request-pixels", "3000000") as port:
        status, body = request(port, "POST", "/predict", huge)
        assert status == 413 and "81,000,000 pixels" in body["error"] and "--max-pixels" in body["error"]
        status, body = request(port, "POST", "/predict/batch", *form(huge, small))
        assert status == 413 and "image 1 has 81,000,000 pixels" in body["error"]
        status, body = request(port, "POST", "/predict/batch", *form(*[small] * 2))
        assert status == 200 and len(body) == 2
        import numpy as np
        big = io.BytesIO()
        Image.fromarray(np.zeros((1000, 1000), np.uint8)).save(big, format="PNG")
        status, body = request(port, "POST", "/predict/batch", *form(*[big.getvalue()] * 4))     # 4 Mpx together
        assert status == 413 and "--max-request-pixels" in body["error"]
        status, body = request(port, "POST", "/predict", small)
        assert status == 200 and body["label"]


@family("hostile_page_and_service")
def test_service_errors_have_one_shape_and_401_is_readable_by_an_allowed_page(copied, tmp_path):
    """Every refusal is {"error": ...} (Starlette's multipart errors too); a batch error names its file; a 401
    carries WWW-Authenticate and, for an allowed origin, the CORS headers; the OpenAPI spec declares the bearer key."""
    comp, run, graph = copied
    from helpers import exchange as call, service
    small = sorted((comp / "test_images").iterdir())[0].read_bytes()
    key = {"Authorization": "Bearer k"}
    with service(graph, "--api-key", "k", "--cors-origin", "https://a.example") as port:
        status, headers, body = call(port, "POST", "/predict", small, {"Origin": "https://a.example"})
        assert status == 401 and headers["www-authenticate"] == "Bearer" and body["error"].startswith("missing")
        assert headers["access-control-allow-origin"] == "https://a.example"
        status, headers, _ = call(port, "POST", "/predict", small, {"Origin": "https://evil.example"})
        assert status == 401 and "access-control-allow-origin" not in headers
        status, _, doc = call(port, "GET", "/openapi.json", headers=key)
        assert doc["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}
        assert doc["paths"]["/predict"]["post"]["security"] == [{"bearer": []}]
        assert doc["paths"]["/health"]["get"]["security"] == []
        broken = "multipart/form-data; boundary=xyz"
        status, _, body = call(port, "POST", "/predict/batch", b"--xyz\r\nnot a part", {**key, "Content-Type": broken})
        assert status == 400 and set(body) == {"error"}
        form = (b"--b\r\nContent-Disposition: form-data; name=\"files\"; filename=\"good.png\"\r\n\r\n" + small +
                b"\r\n--b\r\nContent-Disposition: form-data; name=\"files\"; filename=\"bad.png\"\r\n\r\n"
                b"\x89PNG broken\r\n--b--\r\n")
        status, _, body = call(port, "POST", "/predict/batch", form, {**key, "Content-Type": "multipart/form-data; boundary=b"})
        assert status == 400 and body["error"].startswith("file 2 of 2 (bad.png): ")
        status, _, body = call(port, "GET", "/nowhere", headers=key)
        assert status == 404 and set(body) == {"error"}


def _png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels, with almost no data after it (a decompression bomb's shape)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)) +
            chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


@family("hostile_page_and_service")
def test_service_fuzz_never_500_never_a_traceback_memory_bounded(copied, tmp_path):
    """Random and hostile bodies (noise, truncated images, forged huge dimensions, broken multipart forms) against the
    running service, under an alarm: every answer is a 2xx or 4xx in the error shape, its log holds no traceback, and
    its memory stays bounded."""
    import io
    comp, run, graph = copied
    from helpers import SERVICES, service, stop_service
    rng = np.random.default_rng(0)
    good = sorted((comp / "test_images").iterdir())[0].read_bytes()
    jpeg = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(jpeg, format="JPEG")
    seeds = [good, jpeg.getvalue(), _png_claiming(100_000, 100_000), _png_claiming(9000, 9000), _png_claiming(1, 1)]

    def mutant(i: int) -> bytes:
        base = seeds[i % len(seeds)]
        kind = i % 4
        if kind == 0:
            return base[:int(rng.integers(1, len(base)))]                       # truncated
        if kind == 1:
            data = bytearray(base)
            for j in rng.integers(0, len(data), 8):
                data[j] = int(rng.integers(0, 256))                             # flipped bytes
            return bytes(data)
        if kind == 2:
            return rng.integers(0, 256, int(rng.integers(0, 3000)), dtype=np.uint8).tobytes()    # noise
        return base

    def form(parts: list[bytes], broken: bool) -> tuple[bytes, dict]:
        body = b"".join(b"--zz\r\nContent-Disposition: form-data; name=\"files\"; filename=\"f.png\"\r\n\r\n" + p +
                        b"\r\n" for p in parts) + (b"--zz" if broken else b"--zz--\r\n")
        return body, {"Content-Type": "multipart/form-data; boundary=zz"}
    old = signal.signal(signal.SIGALRM, lambda *a: pytest.fail("the service fuzz did not finish in 240 s"))
    signal.alarm(240)
    try:
        with service(graph) as port:
            proc, peak = SERVICES[port], 0
            for i in range(80):
                if i % 3 == 0:
                    status, body = request(port, "POST", "/predict", mutant(i))
                else:
                    status, body = request(port, "POST", "/predict/batch",
                                           *form([mutant(i + k) for k in range(int(rng.integers(1, 4)))], i % 5 == 0))
                assert status < 500, (i, status, body)
                assert status == 200 or set(body) == {"error"}, (i, status, body)
                rss = int(next(line.split()[1] for line in open(f"/proc/{proc.pid}/status") if line.startswith("VmRSS")))
                peak = max(peak, rss)
            log = stop_service(port)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    assert "Traceback" not in log, log[-3000:]
    assert peak < 1_500_000, f"the service grew to {peak / 1e6:.1f} GB"          # kB: bounded well below 1.5 GB


@family("hangs_and_tracebacks")
def test_predict_ends_on_symlink_loops_and_writes_non_utf8_names(copied, tmp_path, capsys):
    comp, run, graph = copied
    images = tmp_path / "imgs"
    (images / "a" / "b").mkdir(parents=True)
    src = sorted((comp / "test_images").iterdir())
    shutil.copy(src[0], images / "a" / "x.png")
    shutil.copy(src[1], images / "a" / "b" / "y.png")
    os.symlink(images / "a", images / "a" / "b" / "up")                # two loops back up
    os.symlink(images, images / "a" / "root")
    odd = os.fsdecode(b"caf\xe9.png")                                  # Latin-1 bytes: not UTF-8
    shutil.copy(src[2], images / odd)
    for source in (str(images / "**" / "*.png"), str(images)):
        r = run_module(capsys, "kit.predict", "--onnx", graph, source, "--out", tmp_path / "p.csv")
        assert r.returncode == 0, r.stderr
        rows = (tmp_path / "p.csv").read_bytes().splitlines()[1:]
        assert len(rows) == 3 and any(b"caf\xe9.png" in row for row in rows)    # each image once, its name's bytes


@family("hangs_and_tracebacks")
def test_read_only_run_dir_full_disk_and_one_shared_fold_are_one_line(copied, tmp_path, capsys, monkeypatch):
    import errno
    import kit.deploy.web
    import kit.store.rundir
    comp, run, graph = copied

    def read_only(*a, **k):                  # as a read-only mount answers (root can write a chmod-ed folder)
        raise OSError(errno.EROFS, "Read-only file system")
    monkeypatch.setattr(kit.store.rundir.RunDir, "save_setup", read_only)
    assert_user_error(run_entry(capsys, "train.py", "--data-dir", comp, "--run-dir", tmp_path / "ro", "--folds-csv",
                                tmp_path / "f.csv", *TINY),
                      r"cannot write the run's setup into .*ro: Read-only file system; choose a writable --run-dir")
    assert not (tmp_path / "ro").exists() and not (tmp_path / "f.csv").exists()
    monkeypatch.undo()
    real = kit.deploy.web.write_text

    def full(path, text):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(kit.deploy.web, "write_text", full)
    assert_user_error(run_module(capsys, "kit.web", "--onnx", graph, "--out", tmp_path / "page"),
                      r"cannot write .*page: No space left on device \(the disk is full\)")
    assert not (tmp_path / "page").exists() and not list(tmp_path.glob(".page.tmp*"))
    monkeypatch.setattr(kit.deploy.web, "write_text", real)
    other = tmp_path / "other"
    shutil.copytree(run, other)
    assert_user_error(run_entry(capsys, *infer(comp, run, tmp_path, "--run-dir", other, "--folds", "0", "--out",
                                               tmp_path / "s.csv", "--onnx-out", tmp_path / "b.onnx")),
                      r"blending 2 runs needs the OOF predictions of at least 2 folds they share")


@family("hangs_and_tracebacks")
def test_a_build_clears_the_temporaries_a_killed_build_left(copied, tmp_path, capsys):
    comp, run, graph = copied
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".page.tmp{dead.pid}.abc"
    (stale / "ort").mkdir(parents=True)
    (stale / "model.onnx").write_bytes(b"x" * 1000)
    mine = tmp_path / f".page.tmp{os.getpid()}.live"           # a live process's build is left alone
    mine.mkdir()
    r = run_module(capsys, "kit.web", "--onnx", graph, "--out", tmp_path / "page")
    assert r.returncode == 0, r.stderr
    assert not stale.exists() and mine.exists() and (tmp_path / "page" / "index.html").is_file()


# --- README -----------------------------------------------------------------------------------------------------------

def render() -> str:
    lines = [README_START]
    for name, text in FAMILIES.items():
        lines.append(f"- {text[0].upper()}{text[1:]} (`tests/e2e/test_misuse.py`, family `{name}`).")
    lines.append(README_END)
    return "\n".join(lines)


def test_every_family_has_tests_and_the_readme_lists_them():
    import inspect
    source = inspect.getsource(sys.modules[__name__])
    for name in FAMILIES:
        assert f'@family("{name}")' in source, name
    readme = (ROOT / "README.md").read_text()
    assert render() in readme, "README's Bad input list is stale: run `python tests/e2e/test_misuse.py`"


if __name__ == "__main__":
    readme = ROOT / "README.md"
    text = readme.read_text()
    start, end = text.index(README_START), text.index(README_END) + len(README_END)
    readme.write_text(text[:start] + render() + text[end:])
    print(f"rewrote the Bad input list of {readme}")
