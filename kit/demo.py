"""The embedded demo competition: scikit-learn's UCI handwritten digits (1797 real 8x8 scans, 10 classes),
written out in the Kaggle layout so the whole kit runs on a fresh offline machine."""
from __future__ import annotations

import csv
import logging
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

log = logging.getLogger(__name__)

DEMO_DIR = "data/digits"
SOLUTION = "solution.csv"          # the hidden test labels, for scoring the demo submission
MARKER = "DEMO"                    # marks a folder written by materialize(): only there is a test score printed

# Settings for the demo: a small image and an NFNet that trains one fold in about 2 minutes on 2 CPU cores.
DEMO_CONFIG = dict(
    model="eca_nfnet_l0", pretrained=False, img_size=32, epochs=8, batch_size=64, lr=0.05,
    warmup_epochs=1.0, drop_path_rate=0.0, drop_rate=0.1,
    aug_hflip=0.0,                       # a mirrored digit is another glyph
    aug_coarse_dropout=0.0,              # at 8x8 source resolution a hole erases the digit
    ema_decay=0.99,
)


def materialize(root: str | Path = DEMO_DIR, test_fraction: float = 0.2, seed: int = 0) -> Path:
    """Write train.csv, train_images/, test_images/, sample_submission.csv and solution.csv (the hidden test
    labels, for scoring the demo submission) under `root`, unless already there. Ids carry no extension."""
    root = Path(root)
    if (root / "train.csv").exists():
        return root
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    ids = [f"digit_{i:04d}" for i in range(len(images))]
    train_idx, test_idx = train_test_split(np.arange(len(images)), test_size=test_fraction,
                                           stratify=digits.target, random_state=seed)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".{root.name}."))
    try:
        for split, idx in (("train_images", train_idx), ("test_images", test_idx)):
            (tmp / split).mkdir()
            for i in idx:
                Image.fromarray(images[i]).save(tmp / split / f"{ids[i]}.png")
        for name, idx, label in (("train.csv", train_idx, lambda i: digits.target[i]),
                                 ("sample_submission.csv", sorted(test_idx), lambda i: 0),
                                 (SOLUTION, sorted(test_idx), lambda i: digits.target[i])):
            with open(tmp / name, "w", newline="", encoding="utf-8") as f:
                w = csv.writer(f)
                w.writerow(["image_id", "label"])
                w.writerows([ids[i], int(label(i))] for i in idx)
        (tmp / MARKER).write_text("the kit's digits demo competition (kit/demo.py); solution.csv holds the test labels\n",
                                  encoding="utf-8")
        tmp.rename(root)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    log.info(f"demo: wrote the digits competition to {root} ({len(train_idx)} train, {len(test_idx)} test images)")
    return root


def test_accuracy(data_dir: str | Path, submission: str | Path) -> tuple[float, int, int] | None:
    """(accuracy, correct, total) of a submission against the demo's hidden labels; None for any folder that
    materialize() did not write (another folder's solution.csv is none of the kit's business)."""
    root = Path(data_dir)
    if not (root / MARKER).is_file() or not (root / SOLUTION).is_file():
        return None
    with open(root / SOLUTION, newline="", encoding="utf-8") as f, open(submission, newline="", encoding="utf-8") as g:
        truth = {r["image_id"]: r["label"] for r in csv.DictReader(f)}
        pred = {r["image_id"]: r["label"] for r in csv.DictReader(g)}
    correct = sum(pred.get(i) == v for i, v in truth.items())
    return correct / len(truth), correct, len(truth)
