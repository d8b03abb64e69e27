"""Reports after training: files exist, are valid PNG/CSV, and their numbers agree with the OOF file."""
import re

import numpy as np
import pytest
from PIL import Image

from helpers import TINY, csv_records, make_competition, run_cli
from kit.store import checkpoint

CLASSES = ["cat", "dog", "fox"]


def oof_accuracy(rows):
    return np.mean([r["label"] == max(CLASSES, key=lambda c: float(r[f"prob_{c}"])) for r in rows])


@pytest.mark.parametrize("name", ["curves.png", "confusion_matrix.png", "worst.png"])
def test_pngs_are_valid_images(trained, name):
    path = trained[1] / name
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG" and im.width > 300 and im.height > 200
        assert np.asarray(im.convert("L")).std() > 5          # not a blank canvas


def test_classification_report_matches_oof(trained):
    run_dir = trained[1]
    oof = csv_records(run_dir / "oof.csv")
    rep = {r["class"]: r for r in csv_records(run_dir / "report.csv")}
    assert list(csv_records(run_dir / "report.csv")[0]) == ["class", "precision", "recall", "f1", "support"]
    assert set(CLASSES) <= set(rep) and {"macro avg", "weighted avg"} <= set(rep)
    for c in CLASSES:
        truth = [r for r in oof if r["label"] == c]
        assert int(rep[c]["support"]) == len(truth)
        recall = np.mean([max(CLASSES, key=lambda k: float(r[f"prob_{k}"])) == c for r in truth])
        assert float(rep[c]["recall"]) == pytest.approx(recall, abs=1e-4)


def test_cv_md_agrees_with_oof_and_checkpoints(trained):
    run_dir = trained[1]
    text = (run_dir / "cv.md").read_text()
    overall = float(re.search(r"Overall OOF accuracy: \*\*([0-9.]+)\*\*", text).group(1))
    assert overall == pytest.approx(oof_accuracy(csv_records(run_dir / "oof.csv")), abs=1e-6)
    for k in range(3):
        best = checkpoint.load(run_dir / f"fold{k}" / "best.pt")
        row = re.search(rf"^\| {k} \| (\d+) \| ([0-9.]+) \| 2 \| (\d+) s \|$", text, re.M)
        assert row, text
        assert int(row.group(1)) == best["epoch"] and float(row.group(2)) == pytest.approx(best["score"], abs=1e-4)
    scores = [checkpoint.load(run_dir / f"fold{k}" / "best.pt")["score"] for k in range(3)]
    assert f"{np.mean(scores):.4f} ± {np.std(scores):.4f}" in text
    assert "model: test_nfnet" in text                      # the resolved config is included
    assert "| **CV** |" in trained[3].stdout                  # and the table was printed at the end of the run


def test_tensorboard_logging(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    comp = make_competition(tmp_path / "comp", per_class=5)
    r = run_cli("train.py", "--data-dir", comp, "--run-dir", tmp_path / "run", "--folds-csv", tmp_path / "f.csv",
                "--num-folds", "2", *TINY, "--tensorboard")
    assert r.returncode == 0, r.stderr
    events = EventAccumulator(str(tmp_path / "run" / "fold0" / "tb"))
    events.Reload()
    assert {"loss/train", "loss/val", "val/accuracy", "lr"} <= set(events.Tags()["scalars"])
    val = [e.value for e in events.Scalars("val/accuracy")]
    metrics = csv_records(tmp_path / "run" / "fold0" / "metrics.csv")
    assert val == pytest.approx([float(m["score"]) for m in metrics], abs=1e-6)
    assert (tmp_path / "run" / "curves.png").is_file() and (tmp_path / "run" / "cv.md").is_file()
