"""The competition folder: read and validate train.csv / sample_submission.csv and locate their images.

Torch-free (the predictor uses it). Row numbers in messages are file line numbers (the header is line 1).
"""
from __future__ import annotations

import csv
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Optional

import numpy as np
from PIL import Image

from .errors import KitError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")
_INT = re.compile(r"^[+-]?\d+$")


@dataclass
class Table:
    """The rows of a competition CSV, image files resolved."""
    csv_path: Path
    ids: list[str]
    paths: list[Path]
    labels: list                    # original label values (int or str); empty for a submission table
    groups: Optional[list[str]]


def read_csv(path: Path, required: list[str], fix: str) -> tuple[list[str], list[dict]]:
    """Rows of a CSV as dicts, after checking the file exists, has the columns, and has at least one row."""
    if not path.is_file():
        raise KitError(f"{path} does not exist. {fix}")
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        rows = list(reader)
    if not header:
        raise KitError(f"{path} is empty; it needs a header row with columns {', '.join(required)} and data rows")
    missing = [c for c in required if c not in header]
    if missing:
        raise KitError(f"{path} has no column {', '.join(repr(c) for c in missing)} (its columns: "
                       f"{', '.join(header)}). Rename the column, or set the column name in the config "
                       f"(id_col / label_col / group_col)")
    if not rows:
        raise KitError(f"{path} has a header but no rows")
    return header, rows


def parse_labels(raw: list[str]) -> list:
    """Label strings -> ints when every label is an integer, else the strings themselves."""
    if all(_INT.match(v) for v in raw):
        return [int(v) for v in raw]
    return list(raw)


def _safe_id(image_id: str, csv_path: Path, line: int) -> str:
    image_id = image_id.strip()
    if not image_id:
        raise KitError(f"{csv_path} line {line}: empty image id")
    parts = PurePosixPath(image_id.replace("\\", "/")).parts
    if image_id.startswith(("/", "\\")) or ".." in parts or re.match(r"^[A-Za-z]:", image_id):
        raise KitError(f"{csv_path} line {line}: image id {image_id!r} points outside the images folder; "
                       f"ids must be file names (optionally in sub-folders) inside it")
    return image_id


def resolve_images(images_dir: Path, ids: list[str], csv_path: Path) -> list[Path]:
    """Find each id's file: the id itself, or the id plus an image suffix (Kaggle ids come both ways)."""
    if not images_dir.is_dir():
        raise KitError(f"image folder {images_dir} does not exist (needed by {csv_path}); set train_images / "
                       f"test_images in the config if the folder has another name")
    names = set(os.listdir(images_dir))
    paths = []
    for line, image_id in enumerate(ids, start=2):
        for candidate in (image_id, *(image_id + s for s in IMAGE_SUFFIXES)):
            if candidate in names or ("/" in candidate and (images_dir / candidate).is_file()):
                paths.append(images_dir / candidate)
                break
        else:
            raise KitError(f"{csv_path} line {line}: image {image_id!r} not found in {images_dir} "
                           f"(also tried the suffixes {', '.join(IMAGE_SUFFIXES)}); add the file or remove the row")
    return paths


def read_table(csv_path: Path, images_dir: Path, id_col: str, label_col: Optional[str] = None,
               group_col: Optional[str] = None, fix: str = "") -> Table:
    required = [id_col] + [c for c in (label_col, group_col) if c]
    _, rows = read_csv(csv_path, required, fix)
    ids, seen = [], {}
    for line, row in enumerate(rows, start=2):
        image_id = _safe_id(row[id_col] or "", csv_path, line)
        if image_id in seen:
            raise KitError(f"{csv_path} line {line}: duplicate image id {image_id!r} (first seen on line "
                           f"{seen[image_id]}); each image must appear once")
        seen[image_id] = line
        ids.append(image_id)
    labels = []
    if label_col:
        raw = []
        for line, row in enumerate(rows, start=2):
            value = (row[label_col] or "").strip()
            if not value:
                raise KitError(f"{csv_path} line {line}: empty {label_col!r} for image {row[id_col]!r}")
            raw.append(value)
        labels = parse_labels(raw)
    groups = [row[group_col] for row in rows] if group_col else None
    return Table(csv_path, ids, resolve_images(images_dir, ids, csv_path), labels, groups)


def _unreadable(path: Path) -> Optional[str]:
    try:
        with Image.open(path) as im:
            im.draft("RGB", (64, 64))   # JPEG: decode the whole stream at 1/8 scale; catches truncation cheaply
            im.load()
        return None
    except Exception as e:  # noqa: BLE001 - any decoder failure means the same thing to the user
        return f"{type(e).__name__}: {e}"


def check_images_readable(paths: list[Path], workers: int = 8) -> None:
    """Decode every image once before training, so a corrupt file stops the run now, not in epoch 7."""
    with ThreadPoolExecutor(workers) as pool:
        problems = [(p, err) for p, err in zip(paths, pool.map(_unreadable, paths)) if err]
    if problems:
        listed = "; ".join(f"{p}: {err}" for p, err in problems[:5])
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise KitError(f"{len(problems)} image(s) cannot be decoded: {listed}{more}. "
                       f"Replace these files or remove their rows from the CSV")


def class_list(labels: list) -> list:
    """The sorted set of training labels: the model's class order."""
    return sorted(set(labels))


def targets(labels: list, classes: list) -> np.ndarray:
    index = {c: i for i, c in enumerate(classes)}
    return np.array([index[v] for v in labels], dtype=np.int64)


def data_root(data_dir: str) -> Path:
    root = Path(data_dir)
    if not root.is_dir():
        raise KitError(f"data dir {root} does not exist; pass --data-dir with your competition folder "
                       f"(train.csv, train_images/, test_images/, sample_submission.csv)")
    return root


def train_table(cfg) -> Table:
    root = data_root(cfg.data_dir)
    return read_table(root / cfg.train_csv, root / cfg.train_images, cfg.id_col, cfg.label_col, cfg.group_col,
                      fix=f"Put the competition's train.csv in {root}, or set train_csv in the config")


def submission_table(data_dir: str, sample_submission: str = "sample_submission.csv", test_images: str = "test_images",
               id_col: str = "image_id") -> Table:
    root = data_root(data_dir)
    return read_table(root / sample_submission, root / test_images, id_col,
                      fix=f"Put the competition's sample_submission.csv in {root}, or set sample_submission")
