"""Shared by the benchmarks: a timer and a synthetic photo-sized JPEG competition."""
from __future__ import annotations

import csv
import statistics
import time
from pathlib import Path

import numpy as np
from PIL import Image


def median_time(fn, repeats: int) -> float:
    """Median wall time of `repeats` calls of fn, in seconds."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def make_jpeg_competition(root: Path, n: int, size: int, num_classes: int = 2) -> None:
    """`n` JPEG images of size x size (digit scans upscaled, plus colour noise) with a train.csv, in Kaggle
    layout; decoding them costs what decoding real photos of that size costs."""
    from sklearn.datasets import load_digits
    digits = load_digits()
    rng = np.random.default_rng(0)
    (root / "train_images").mkdir(parents=True)
    rows = []
    for i in range(n):
        img = np.kron(digits.images[i % len(digits.images)] * 15, np.ones((size // 8, size // 8)))
        img = np.clip(img[..., None] + rng.normal(0, 20, (*img.shape, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(root / "train_images" / f"{i}.jpg", quality=90)
        rows.append((f"{i}.jpg", int(digits.target[i % len(digits.images)] % num_classes)))
    with open(root / "train.csv", "w", newline="") as f:
        csv.writer(f).writerows([("image_id", "label"), *rows])
