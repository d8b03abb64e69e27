"""The training CLI end to end on a small generated competition: every output file and its schema."""
import csv
import inspect
import json
import re

import numpy as np
import pytest
import torch
import yaml

from helpers import ROOT, TINY, make_competition, run_cli, run_entry
from kit.store import checkpoint



def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_folds_and_run_files(trained):
    comp, run_dir, folds_csv, result = trained
    train = read_csv(comp / "train.csv")
    folds = read_csv(folds_csv)
    assert list(folds[0]) == ["image_id", "label", "fold"]
    assert [r["image_id"] for r in folds] == [r["image_id"] for r in train]
    assert sorted({r["fold"] for r in folds}) == ["0", "1", "2"]
    assert json.loads((run_dir / "classes.json").read_text()) == ["cat", "dog", "fox"]
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert cfg["model"] == "test_nfnet" and cfg["num_folds"] == 3 and cfg["data_dir"] == str(comp)


def test_fold_outputs(trained):
    comp, run_dir, folds_csv, _ = trained
    fold_of = {r["image_id"]: r["fold"] for r in read_csv(folds_csv)}
    for k in range(3):
        d = run_dir / f"fold{k}"
        metrics = read_csv(d / "metrics.csv")
        assert [m["epoch"] for m in metrics] == ["1", "2"]
        assert list(metrics[0]) == ["epoch", "lr", "train_loss", "val_loss", "metric", "score", "is_best", "seconds",
                                    "train_images_per_s"]
        assert all(float(m["train_images_per_s"]) > 0 for m in metrics)
        assert all(np.isfinite(float(m["train_loss"])) for m in metrics)
        oof = read_csv(d / "oof.csv")
        assert list(oof[0]) == ["image_id", "label", "fold", "prob_cat", "prob_dog", "prob_fox"]
        assert {r["image_id"] for r in oof} == {i for i, f in fold_of.items() if f == str(k)}
        probs = np.array([[float(r[c]) for c in ("prob_cat", "prob_dog", "prob_fox")] for r in oof])
        assert np.allclose(probs.sum(1), 1, atol=1e-4)
        best = checkpoint.load(d / "best.pt")
        assert best["fold"] == k and best["classes"] == ["cat", "dog", "fox"] and best["metric"] == "accuracy"
        best_row = [m for m in metrics if m["is_best"] == "1"][-1]
        assert int(best_row["epoch"]) == best["epoch"]
        assert best["score"] == pytest.approx(float(best_row["score"]), abs=1e-6)
        # the OOF file holds the predictions of exactly the best checkpoint
        acc = np.mean([r["label"] == ["cat", "dog", "fox"][int(np.argmax(p))] for r, p in zip(oof, probs)])
        assert acc == pytest.approx(best["score"], abs=1e-6)
        last = checkpoint.load(d / "last.pt")
        assert last["epoch"] == 2 and last["updates"] > 0 and {"optimizer", "rng", "ema"} <= set(last)


def test_overall_oof_and_cv(trained):
    comp, run_dir, _, result = trained
    oof = read_csv(run_dir / "oof.csv")
    ids = [r["image_id"] for r in oof]
    assert sorted(ids) == sorted(r["image_id"] for r in read_csv(comp / "train.csv")) and len(set(ids)) == len(ids)
    line = [ln for ln in result.stdout.splitlines() if ln.startswith("CV accuracy:")]
    assert len(line) == 1
    acc = np.mean([r["label"] == max(("cat", "dog", "fox"), key=lambda c: float(r[f"prob_{c}"])) for r in oof])
    assert f"CV accuracy: {acc:.4f} over {len(oof)} OOF images" in line[0]


def test_same_seed_same_weights(tmp_path):
    comp = make_competition(tmp_path / "comp", per_class=6)
    states = []
    for name in ("a", "b"):
        r = run_cli("train.py", "--data-dir", comp, "--fold", "1", "--num-folds", "2", "--run-dir",
                    tmp_path / name, "--folds-csv", tmp_path / "folds.csv", *TINY)
        assert r.returncode == 0, r.stderr
        states.append(checkpoint.load(tmp_path / name / "fold1" / "last.pt")["model"])
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_pretrained_file_is_used(tmp_path):
    comp = make_competition(tmp_path / "comp", per_class=6)
    from kit.train.model import create_model
    torch.manual_seed(123)
    weights = create_model("test_nfnet", 1000).state_dict()
    torch.save(weights, tmp_path / "w.pth")
    r = run_cli("train.py", "--data-dir", comp, "--fold", "0", "--num-folds", "2", "--run-dir", tmp_path / "run",
                "--folds-csv", tmp_path / "folds.csv", "--pretrained-file", tmp_path / "w.pth", *TINY[3:-4],
                "--epochs", "1", "--lr", "1e-9", "--model", "test_nfnet")
    assert r.returncode == 0, r.stderr
    trained = checkpoint.load(tmp_path / "run" / "fold0" / "last.pt")["model"]
    stem = "stem.conv1.weight"
    assert torch.allclose(trained[stem], weights[stem], atol=1e-6)      # lr ~ 0: still the file's weights


@pytest.mark.parametrize("args,needle", [
    (["--data-dir", "/nonexistent/comp"], "data dir /nonexistent/comp does not exist"),
    (["--fold", "7"], "--fold 7 is out of range"),
    (["--model", "nfnet_q0"], "unknown timm model 'nfnet_q0'"),
    (["--device", "cuda"] if not torch.cuda.is_available() else ["--epochs", "0"], "cuda|epochs must be"),
])
def test_cli_user_errors_are_one_line(tmp_path, args, needle, capsys):
    comp = make_competition(tmp_path / "comp", per_class=4)
    base = ["--data-dir", comp, "--run-dir", tmp_path / "run", "--folds-csv", tmp_path / "folds.csv",
            "--num-folds", "2", *TINY]
    r = run_entry(capsys, "train.py", *base, *args)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and __import__("re").search(needle, errors[0]), r.stderr


def test_a_fold_trained_with_other_epochs_is_refused_and_never_silently_dropped(tmp_path, capsys, kit_log):
    """Fold 0 trained 2 epochs, fold 1 asked for 1: once that left fold 1 out of the ensemble as 'still
    training'. Now the run dir refuses the mixed setup, and when forced, each fold counts as finished by its
    own epochs."""
    from kit.train.members import load_members
    from kit.store.rundir import RunDir
    comp = make_competition(tmp_path / "comp", per_class=6)
    base = ["--data-dir", comp, "--num-folds", "2", "--run-dir", tmp_path / "run", "--folds-csv",
            tmp_path / "folds.csv", *TINY[:5], "--batch-size", "8", "--num-workers", "0"]
    assert run_entry(capsys, "train.py", *base, "--fold", "0", "--epochs", "2").returncode == 0
    r = run_entry(capsys, "train.py", *base, "--fold", "1", "--epochs", "1")
    assert r.returncode == 2 and "holds fold models trained with another setup (epochs: 2 -> 1)" in r.stderr
    assert not (tmp_path / "run" / "fold1").exists()
    r = run_entry(capsys, "train.py", *base, "--fold", "1", "--epochs", "1", "--force-resume")
    assert r.returncode == 0, r.stderr
    assert "training into it anyway because --force-resume was given" in kit_log.text
    run = RunDir(tmp_path / "run")
    assert run.finished(0) and run.finished(1)
    assert [m.fold for m in load_members(run)] == [0, 1]
    assert "fold 1 of" in kit_log.text and "was trained with another setup than fold 0 (epochs: 2 -> 1)" in kit_log.text


def documented_keys(doc: str, name: str) -> set[str]:
    """The quoted keys of the `name` entry of a schema docstring (the entry and its continuation lines)."""
    block = re.search(rf"^\s*{name}\s+\{{(.*?)\}}", doc, re.M | re.S)
    assert block, name
    return set(re.findall(r'"(\w+)"', block.group(1)))


def test_the_checkpoint_docstring_is_what_the_files_hold(trained):
    """kit/store/state.py describes best.pt and last.pt once; the files hold exactly those keys."""
    from kit.store import state
    run_dir = trained[1]
    identity = documented_keys(state.__doc__, "identity")
    assert set(checkpoint.load(run_dir / "fold0" / "best.pt")) == identity | documented_keys(state.__doc__, "best")
    assert set(checkpoint.load(run_dir / "fold0" / "last.pt")) == identity | documented_keys(state.__doc__, "resumable")


def test_the_file_formats_are_described_once_beside_their_writers(trained):
    """The headers of oof.csv, metrics.csv and folds.csv and the ONNX metadata keys are the ones documented in the
    modules that write them; the README links there instead of copying them."""
    from kit.core import artifact
    from kit.store import oof
    from kit.prepare import folds
    comp, run_dir, folds_csv, _ = trained
    header = lambda path: next(csv.reader(open(path, newline="")))      # noqa: E731
    assert ",".join(header(run_dir / "fold0" / "metrics.csv")) in oof.__doc__
    assert ",".join(header(run_dir / "fold0" / "oof.csv")[:3]) + ",<one column per model output>" in oof.__doc__
    assert ",".join(header(folds_csv)) in folds.__doc__
    for key in artifact.KEYS:                                   # every metadata field carries its description
        assert re.search(rf"^    {key}: [^#\n]+# \w", inspect.getsource(artifact.Metadata), re.M), key
    readme = (ROOT / "README.md").read_text()
    assert "step_in_epoch" not in readme and "train_images_per_s" not in readme        # no copied schemas
