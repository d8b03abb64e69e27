"""Real-data faults that used to give a silently wrong result or a traceback; each test fails without its fix."""
import errno
import os
import re
import shutil
import stat
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch

from helpers import TINY, csv_rows, make_competition, run_cli, run_entry, write_rows
from kit.core import atomic
from kit.store import checkpoint
from kit.core.errors import KitError
from kit.core.images import load_rgb
from kit.runtime.predictor import Predictor


def train_args(comp, tmp_path, *extra):
    return ["--data-dir", comp, "--run-dir", tmp_path / "run", "--folds-csv", tmp_path / "folds.csv",
            "--num-folds", "2", *TINY[:-4], "--epochs", "1", "--num-workers", "0", *extra]


def test_labels_round_trip_exactly_as_written(tmp_path, capsys):
    """'1' and '01' stay two classes, '007' is submitted as '007', class-named columns match."""
    comp = make_competition(tmp_path / "comp", per_class=6, classes=("1", "01", "007"))
    sample = csv_rows(comp / "sample_submission.csv")
    write_rows(comp / "sample_submission.csv", ["image_id", "label", "01", "1", "007"],
               [[r[0], "x", "0", "0", "0"] for r in sample[1:]])
    assert run_entry(capsys, "train.py", *train_args(comp, tmp_path), "--fold", "0").returncode == 0
    import json
    assert json.loads((tmp_path / "run" / "classes.json").read_text()) == ["01", "1", "007"]
    out = tmp_path / "sub.csv"
    r = run_entry(capsys, "infer.py", "--run-dir", tmp_path / "run", "--out", out)
    assert r.returncode == 0, r.stderr
    sub = csv_rows(out)
    assert sub[0] == ["image_id", "label", "01", "1", "007"]
    for row in sub[1:]:
        probs = {c: float(v) for c, v in zip(sub[0][2:], row[2:])}
        assert sum(probs.values()) == pytest.approx(1, abs=1e-4)
        assert row[1] == max(probs, key=probs.get)           # the label is one of the three strings, as written
    assert {r[1] for r in csv_rows(tmp_path / "folds.csv")[1:]} == {"1", "01", "007"}


def test_infer_predicts_with_the_graph_it_exported(trained, tmp_path, capsys, monkeypatch):
    """Another export replacing ensemble.onnx between this run's export and its prediction changes nothing."""
    run = tmp_path / "run"
    shutil.copytree(trained[1], run)
    import kit.export.build
    real = kit.export.build.export

    def export_then_replaced(*args, **kwargs):
        summary = real(*args, **kwargs)
        shutil.copy(summary["path"], tmp_path / "genuine.onnx")
        graph = onnx.load(summary["path"])
        weight = next(i for i in graph.graph.initializer if len(i.dims) == 4)
        weight.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(weight) * 3, weight.name))
        onnx.save(graph, summary["path"])                     # what a concurrent `infer.py --folds 0` would do
        return summary

    monkeypatch.setattr(kit.export.build, "export", export_then_replaced)
    probs = tmp_path / "probs.csv"
    r = run_entry(capsys, "infer.py", "--run-dir", run, "--out", tmp_path / "sub.csv", "--probs", probs)
    assert r.returncode == 0, r.stderr
    got = np.array([[float(v) for v in row[1:]] for row in csv_rows(probs)[1:]])
    paths = sorted((trained[0] / "test_images").iterdir(), key=lambda p: int(p.stem.split("_")[1]))
    images = np.stack([load_rgb(p, 32) for p in paths])
    genuine = Predictor(tmp_path / "genuine.onnx", "cpu").predict_images(images)
    replaced = Predictor(run / "ensemble.onnx", "cpu").predict_images(images)
    assert np.abs(genuine - replaced).max() > 1e-3                  # the replacement does predict differently
    np.testing.assert_allclose(got, genuine, atol=2e-6)


def test_predictions_land_on_their_own_ids(onnx_file, trained, tmp_path):
    """sample_submission in shuffled order, batches of 2: every row gets the prediction of its own image."""
    from kit.runtime.submission import make_submission
    comp = tmp_path / "comp"
    shutil.copytree(trained[0], comp)
    rows = csv_rows(comp / "sample_submission.csv")[1:]
    order = np.random.default_rng(3).permutation(len(rows))
    write_rows(comp / "sample_submission.csv", ["image_id", "label"], [rows[i] for i in order])
    make_submission(onnx_file, str(comp), tmp_path / "sub.csv", provider="cpu", batch_size=2, probs_out=tmp_path / "p.csv")
    predictor = Predictor(onnx_file, "cpu")
    got = {row[0]: np.array([float(v) for v in row[1:]]) for row in csv_rows(tmp_path / "p.csv")[1:]}
    assert list(got) == [rows[i][0] for i in order]
    alone = {i: predictor.predict_images(load_rgb(comp / "test_images" / f"{i}.png", 32)[None])[0] for i in got}
    assert len({tuple(np.round(p, 4)) for p in alone.values()}) > len(alone) // 2     # the images do differ
    for image_id, p in got.items():
        np.testing.assert_allclose(p, alone[image_id], atol=1e-5, err_msg=image_id)


def test_sample_ids_as_written_and_id_column_anywhere(onnx_file, trained, tmp_path):
    from kit.runtime.submission import make_submission
    comp = tmp_path / "comp"
    shutil.copytree(trained[0], comp)
    rows = csv_rows(comp / "sample_submission.csv")[1:]
    padded = [[lab, f" {i} " if k % 2 else i] for k, (i, lab) in enumerate(rows)]
    write_rows(comp / "sample_submission.csv", ["label", "image_id"], padded)
    make_submission(onnx_file, str(comp), tmp_path / "sub.csv", provider="cpu")
    sub = csv_rows(tmp_path / "sub.csv")
    assert sub[0] == ["label", "image_id"]
    assert [r[1] for r in sub[1:]] == [r[1] for r in padded]          # ' te_1 ' comes back as ' te_1 '
    assert {r[0] for r in sub[1:]} <= {"cat", "dog", "fox"}


def test_read_only_run_dir_still_predicts(trained, tmp_path, capsys, monkeypatch):
    """An uploaded run dir (read-only under /kaggle/input): export beside the submission, say where."""
    run = tmp_path / "input" / "run"
    shutil.copytree(trained[1], run)
    (run / "ensemble.onnx").unlink(missing_ok=True)
    before = sorted(p.name for p in run.rglob("*"))
    real = atomic.writable
    monkeypatch.setattr(atomic, "writable", lambda d: False if os.path.realpath(d) == os.path.realpath(run) else real(d))
    os.chmod(run, stat.S_IRUSR | stat.S_IXUSR)                  # also truly read-only where not root
    try:
        out = tmp_path / "working" / "submission.csv"
        r = run_entry(capsys, "infer.py", "--run-dir", run, "--out", out)
        assert r.returncode == 0, r.stderr
        assert f"{run} is read-only; exporting to {out.parent / 'run.ensemble.onnx'} instead" in r.stdout
        assert (out.parent / "run.ensemble.onnx").is_file() and len(csv_rows(out)) == 10
        r = run_entry(capsys, "infer.py", "--run-dir", run, "--out", out, "--onnx-out", tmp_path / "mine.onnx")
        assert r.returncode == 0 and (tmp_path / "mine.onnx").is_file()
    finally:
        os.chmod(run, stat.S_IRWXU)
    assert sorted(p.name for p in run.rglob("*")) == before


def test_writable_is_tried_not_guessed(tmp_path, monkeypatch):
    assert atomic.writable(tmp_path) and atomic.writable(tmp_path / "not" / "yet")
    monkeypatch.setattr(atomic.tempfile, "mkstemp", lambda **k: (_ for _ in ()).throw(PermissionError(13, "denied")))
    assert not atomic.writable(tmp_path)


@pytest.mark.parametrize("failure", [RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0"),
                                     OSError(errno.ENOSPC, "No space left on device")])
def test_a_full_disk_names_the_file_and_keeps_the_old_one(tmp_path, monkeypatch, failure):
    path = tmp_path / "last.pt"
    checkpoint.save({"model": {"w": torch.ones(3)}}, path)

    def full_disk(obj, f):
        with open(f, "wb") as fh:
            fh.write(b"x" * 3 * 2**20)
        raise failure

    monkeypatch.setattr(checkpoint.torch, "save", full_disk)
    with pytest.raises(KitError, match=rf"no space left on the device while writing {re.escape(str(path))} \(it needs "
                                       rf"more than the 3\.0 MB written so far; [0-9.]+ MB free\); free some space.*"
                                       rf"Nothing was half-written: .*keeps its previous version"):
        checkpoint.save({"model": {"w": torch.zeros(3)}}, path)
    assert torch.equal(checkpoint.load(path)["model"]["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_training_onto_a_really_full_disk(tmp_path, capsys):
    """A 1 MB tmpfs as the run dir (needs root and mount; skipped elsewhere): one message, exit 2, no debris."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here")
    try:
        comp = make_competition(tmp_path / "comp", per_class=5)
        args = [a if a != tmp_path / "run" else disk / "run" for a in train_args(comp, tmp_path)]
        r = run_entry(capsys, "train.py", *args, "--fold", "0")
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert re.search(r"^error: no space left on the device while writing .*disk/run/fold0/(best|last).pt \(it "
                         r"needs more than", r.stderr, re.M), r.stderr
        assert not [p for p in disk.rglob(".*tmp*")]
    finally:
        subprocess.run(["umount", str(disk)])


def test_atomic_writes_fsync_the_directory_after_the_rename(tmp_path, monkeypatch):
    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(stat.S_ISDIR(os.fstat(fd).st_mode)) or real(fd))
    atomic.write_text(tmp_path / "a.txt", "x")
    assert synced == [False, True]                  # the file, then its directory (so the rename survives)


def test_side_files_of_a_killed_writer_are_removed(tmp_path):
    dead = 2**22 + 12345                            # above the default pid_max: no such process
    orphans = [tmp_path / f".ensemble.int8.onnx.tmp{dead}", tmp_path / f".ensemble.int8.onnx.tmp{dead}.pre.onnx"]
    for p in orphans:
        p.write_bytes(b"half")
    live = tmp_path / f".ensemble.int8.onnx.tmp{os.getpid()}.pre.onnx"
    live.write_bytes(b"in use")
    atomic.write_text(tmp_path / "ensemble.int8.onnx", "new")
    assert not any(p.exists() for p in orphans) and live.exists()


def test_a_crashed_first_run_does_not_block_a_retry(tmp_path, capsys):
    comp = make_competition(tmp_path / "comp", per_class=5)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("model: nf_resnet26\nepochs: 9\n")          # what the crashed run left
    (run / "classes.json").write_text('["cat", "dog", "fox"]\n')
    r = run_entry(capsys, "train.py", *train_args(comp, tmp_path), "--fold", "0")
    assert r.returncode == 0, r.stderr
    assert "model: test_nfnet" in (run / "config.yaml").read_text()


def test_int_labels_trained_fold_by_fold_into_one_run_dir(tmp_path, capsys):
    comp = make_competition(tmp_path / "comp", per_class=5, classes=("0", "1", "2"))
    for k in ("0", "1"):
        r = run_entry(capsys, "train.py", *train_args(comp, tmp_path), "--fold", k)
        assert r.returncode == 0, r.stderr
    r = run_entry(capsys, "infer.py", "--run-dir", tmp_path / "run", "--out", tmp_path / "sub.csv")
    assert r.returncode == 0, r.stderr
    assert "export: 2 fold model(s) [0, 1]" in r.stdout and {row[1] for row in csv_rows(tmp_path / "sub.csv")[1:]} <= {"0", "1", "2"}


def test_renamed_columns_and_folders_end_to_end(tmp_path, capsys):
    comp = make_competition(tmp_path / "comp", per_class=5)
    (comp / "train_images").rename(comp / "imgs")
    (comp / "test_images").rename(comp / "test_imgs")
    write_rows(comp / "labels.csv", ["file", "species"], csv_rows(comp / "train.csv")[1:])
    write_rows(comp / "sub_template.csv", ["file", "species"], csv_rows(comp / "sample_submission.csv")[1:])
    for name in ("train.csv", "sample_submission.csv"):
        (comp / name).unlink()
    config = tmp_path / "c.yaml"
    config.write_text(f"data_dir: {comp}\ntrain_csv: labels.csv\ntrain_images: imgs\ntest_images: test_imgs\n"
                      f"sample_submission: sub_template.csv\nid_col: file\nlabel_col: species\n")
    r = run_entry(capsys, "train.py", "--config", config, *train_args(comp, tmp_path)[2:], "--fold", "all")
    assert r.returncode == 0, r.stderr
    r = run_entry(capsys, "infer.py", "--run-dir", tmp_path / "run", "--out", tmp_path / "sub.csv")
    assert r.returncode == 0, r.stderr
    sub = csv_rows(tmp_path / "sub.csv")
    assert sub[0] == ["file", "species"] and [r[0] for r in sub[1:]] == [f"te_{j}" for j in range(9)]


def test_report_cli_rebuilds_the_reports(trained, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained[1], run)
    for name in ("cv.md", "report.csv", "curves.png"):
        (run / name).unlink()
    r = run_cli("-m", "kit.report", run)
    assert r.returncode == 0, r.stderr
    assert (run / "cv.md").read_text().count("| **CV** |") == 1 and (run / "curves.png").stat().st_size > 1000
    assert (run / "report.csv").read_text() == (trained[1] / "report.csv").read_text()
    r = run_cli("-m", "kit.report", tmp_path / "nowhere")
    assert r.returncode == 2 and "Traceback" not in r.stderr and "is not a run dir" in r.stderr


def test_demo_score_only_for_the_demo(onnx_file, trained, tmp_path, capsys):
    comp = tmp_path / "comp"
    shutil.copytree(trained[0], comp)
    shutil.copy(comp / "sample_submission.csv", comp / "solution.csv")      # someone else's solution.csv
    r = run_entry(capsys, "infer.py", "--onnx", onnx_file, "--data-dir", comp, "--out", tmp_path / "s.csv")
    assert r.returncode == 0 and "test accuracy" not in r.stdout


def test_undefined_metrics_are_nan_not_a_traceback():
    from kit.core.task import Multiclass
    task = Multiclass(["a", "b", "c"])
    nan_probs = np.full((4, 3), np.nan)
    for metric in ("accuracy", "macro_f1", "log_loss", "roc_auc"):
        assert np.isnan(task.score(metric, np.array([0, 1, 2, 0]), nan_probs)), metric
        assert not task.is_better(metric, float("nan"), None)          # a NaN epoch is never kept as best
    one_class = np.array([0, 0, 0])
    probs = np.array([[0.7, 0.2, 0.1]] * 3)
    assert task.score("log_loss", one_class, probs) == pytest.approx(-np.log(0.7))
    assert np.isnan(task.score("roc_auc", one_class, probs))


@pytest.mark.slow      # in CI's second pass (-m slow); the default run stays under ~10 minutes
def test_a_non_utf8_locale_changes_nothing(tmp_path):
    """Unicode ids and labels under LC_ALL=C with Python's UTF-8 mode off: every file is read and written as UTF-8."""
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0",
           "PYTHONIOENCODING": "utf-8"}
    probe = subprocess.run([sys.executable, "-c", "import locale; print(locale.getpreferredencoding(False))"],
                           env=env, capture_output=True, text=True).stdout.strip()
    if probe.lower().replace("-", "") == "utf8":
        pytest.skip("this Python uses UTF-8 whatever the locale")
    comp = make_competition(tmp_path / "comp", per_class=5, classes=("chat_é", "狐", "hund"))
    for p in (comp / "train_images").iterdir():
        p.rename(p.with_name("ü" + p.name))
    write_rows(comp / "train.csv", ["image_id", "label"], [["ü" + r[0], r[1]] for r in csv_rows(comp / "train.csv")[1:]])
    r = run_cli("train.py", *train_args(comp, tmp_path), "--fold", "all", env=env)
    assert r.returncode == 0, r.stderr
    r = run_cli("infer.py", "--run-dir", tmp_path / "run", "--out", tmp_path / "sub.csv", env=env)
    assert r.returncode == 0, r.stderr
    assert {row[1] for row in csv_rows(tmp_path / "sub.csv")[1:]} <= {"chat_é", "狐", "hund"}
    assert {row[0][:1] for row in csv_rows(tmp_path / "run" / "oof.csv")[1:]} == {"ü"}
