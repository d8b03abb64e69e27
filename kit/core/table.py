"""The competition folder: read and validate train.csv / sample_submission.csv and locate their images.

Torch-free (the predictor uses it). CSVs are read as UTF-8 (a BOM is allowed). Line numbers in messages are
the file's own line numbers (the header is line 1; blank lines count). Label cells are kept as written ("1" and
"01" are two classes), but for two spreadsheet artefacts, each said in one log line with the count of cells it
changed: surrounding spaces are removed, and an integer written as a float ("3.0") becomes the integer where that
integer is also written plainly ("3"). What a label means is the task's business (kit.core.task).
"""
from __future__ import annotations

import contextlib
import csv
import logging
import os
import re
import stat
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Optional

from kit.core.errors import KitError
from kit.core.images import ImageError, open_rgb
from kit.core.task import task_class

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".gif")
# what pandas and friends write for a missing value; as a label or group id it would silently become a class or a
# group (the setting missing_values replaces the list, an empty one included, for a class that is really called NA)
MISSING_TEXT = frozenset({"nan", "NaN", "NAN", "None", "none", "null", "NULL", "NA", "N/A", "n/a", "<NA>", "#N/A"})
_INT_AS_FLOAT = re.compile(r"^([+-]?\d+)\.0+$")
log = logging.getLogger(__name__)


def missing_texts(setting: Optional[str]) -> frozenset:
    """The texts that mean a missing value: the setting's comma-separated list, or MISSING_TEXT when unset."""
    if setting is None:
        return MISSING_TEXT
    return frozenset(t.strip() for t in setting.split(",") if t.strip())


@dataclass(frozen=True)
class Layout:
    """The competition folder's file and folder names (Kaggle's by default; a run's config.yaml may rename them)."""
    train_csv: str = "train.csv"
    train_images: str = "train_images"
    test_images: str = "test_images"
    sample_submission: str = "sample_submission.csv"

    @classmethod
    def of(cls, settings) -> "Layout":
        """The layout named in a Config or a settings dict (unknown keys ignored)."""
        values = settings if isinstance(settings, dict) else settings.to_dict()
        return cls(**{f: values[f] for f in cls.__dataclass_fields__ if values.get(f)})


@dataclass
class Table:
    """The rows of a competition CSV, image files resolved."""
    csv_path: Path
    ids: list[str]                  # image ids, surrounding spaces removed
    paths: list[Path]
    lines: list[int]                # the file line of each row
    labels: list[str]               # label cells exactly as written; empty for a submission table
    groups: Optional[list[str]]
    header: list[str]
    rows: list[list[str]]           # every cell as written, for tables that are written back (submission)
    tag_columns: Optional[list[str]] = None     # multilabel 0/1 columns the labels were built from

    missing: frozenset = MISSING_TEXT           # the texts that mean a missing value

    def require_labels(self, column: str) -> None:
        """Refuse empty label cells (every task but multilabel, where an image may have no tag)."""
        check_label_cells(self.labels, self.lines, self.csv_path, column, self.missing, allow_empty=False)


def read_csv(path: Path, required: list[str], fix: str) -> tuple[list[str], list[list[str]], list[int]]:
    """(header, rows, file line of each row), after checking the file exists, decodes as UTF-8, has the
    columns, and has at least one row."""
    if not path.is_file():
        raise KitError(f"{path} does not exist. {fix}")
    reader = None
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = next(reader, [])
            rows, lines = [], []
            for row in reader:
                if row:                                     # a blank line is no row
                    rows.append(row)
                    lines.append(reader.line_num)
    except UnicodeDecodeError as e:
        raise KitError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start}); save it as UTF-8") from None
    except csv.Error as e:
        where = f" line {reader.line_num}" if reader is not None else ""
        raise KitError(f"{path}{where} is not a readable CSV: {e}") from None
    if not header:
        raise KitError(f"{path} is empty; it needs a header row with columns {', '.join(required)} and data rows")
    check_columns(path, header, required)
    if len(set(header)) != len(header):
        twice = sorted({c for c in header if header.count(c) > 1})
        raise KitError(f"{path}: column {twice[0]!r} appears more than once in the header; rename one of them")
    for row, line in zip(rows, lines):
        if len(row) != len(header):
            raise KitError(f"{path} line {line}: {len(row)} cells but the header has {len(header)} columns")
    if not rows:
        raise KitError(f"{path} has a header but no rows")
    return header, rows, lines


def check_columns(path: Path, header: list[str], required: list[str]) -> None:
    missing = [c for c in required if c not in header]
    if missing:
        raise KitError(f"{path} has no column {', '.join(repr(c) for c in missing)} (its columns: "
                       f"{', '.join(map(repr, header))}). Rename the column, or set the column name in the config "
                       f"(id_col / label_col / group_col)")


def _safe_id(image_id: str, csv_path: Path, line: int) -> str:
    image_id = image_id.strip()
    if not image_id:
        raise KitError(f"{csv_path} line {line}: empty image id")
    parts = PurePosixPath(image_id.replace("\\", "/")).parts
    if image_id.startswith(("/", "\\")) or ".." in parts or re.match(r"^[A-Za-z]:", image_id):
        raise KitError(f"{csv_path} line {line}: image id {image_id!r} points outside the images folder; "
                       f"ids must be file names (optionally in sub-folders) inside it")
    return image_id


def _candidates(image_id: str):
    yield image_id
    for suffix in IMAGE_SUFFIXES:
        yield image_id + suffix
        yield image_id + suffix.upper()


def resolve_images(images_dir: Path, ids: list[str], csv_path: Path, lines: list[int] | None = None) -> list[Path]:
    """Find each id's file: the id itself, or the id plus an image suffix (Kaggle ids come both ways). Two ids
    that name one file (`x` and `x.png`) are an error: two rows would silently share one image."""
    if not images_dir.is_dir():
        raise KitError(f"image folder {images_dir} does not exist (needed by {csv_path}); set train_images / "
                       f"test_images in the config if the folder has another name")
    lines = lines or list(range(2, len(ids) + 2))
    # file names are bytes; ids are UTF-8 text. Compared as bytes, an id finds its file whatever the locale
    folder = os.fsencode(images_dir)
    names = set(os.listdir(folder))
    paths, owner = [], {}
    for line, image_id in zip(lines, ids):
        for candidate in _candidates(image_id):
            raw = candidate.encode("utf-8")
            if raw in names or ("/" in candidate and os.path.isfile(os.path.join(folder, raw))):
                path = images_dir / os.fsdecode(raw)
                break
        else:
            raise KitError(f"{csv_path} line {line}: image {image_id!r} not found in {images_dir} (also tried the "
                           f"suffixes {', '.join(IMAGE_SUFFIXES)} in either case); add the file or fix the id")
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise KitError(f"{csv_path} line {line}: {path} is not a regular file (a folder, named pipe or device); "
                           f"reading it could block forever. Replace it with the image file")
        if path in owner:
            raise KitError(f"{csv_path} line {line}: image id {image_id!r} names the same file ({path.name}) as "
                           f"line {owner[path][0]} ({owner[path][1]!r}); each row needs its own image")
        owner[path] = (line, image_id)
        paths.append(path)
    return paths


def check_label_cells(values: list[str], lines: list[int], csv_path: Path, column: str,
                      missing: frozenset = MISSING_TEXT, allow_empty: bool = False) -> None:
    """Refuse label cells that are empty or the text of a missing value ("nan", "None", ...): pandas writes
    those for a missing label, and trained as a class they would be submitted as an answer."""
    for value, line in zip(values, lines):
        text = value.strip()
        if not text and not allow_empty:
            raise KitError(f"{csv_path} line {line}: empty {column!r}; every training image needs a label. Fill it "
                           f"in or remove the row")
        if text in missing:
            raise KitError(f"{csv_path} line {line}: {column!r} is {value!r}, the text of a missing value (what "
                           f"pandas writes for NaN/None); fill in the real label or remove the row (a class really "
                           f"named {text!r}: set missing_values to the texts that do mean missing, '' for none)")


def normalize_labels(labels: list[str], lines: list[int], csv_path: Path, quiet: bool = False) -> list[str]:
    """Surrounding spaces removed; "3.0" -> "3" where "3" is also written (a pandas float column beside an int
    one). Each change is counted in one log line: never silent, and classes.json is what the log says."""
    stripped = [cell.strip() for cell in labels]
    present = set(stripped)

    def canonical(cell: str) -> str:
        match = _INT_AS_FLOAT.match(cell)
        return match.group(1) if match and match.group(1) in present else cell

    out = [canonical(cell) for cell in stripped]
    if not quiet:
        for what, before, after in (("had surrounding spaces, removed", labels, stripped),
                                    ("wrote an integer class as a float (3.0 beside 3), read as the integer",
                                     stripped, out)):
            changed = [(line, a, b) for line, a, b in zip(lines, before, after) if a != b]
            if changed:
                line, a, b = changed[0]
                log.info(f"labels: {len(changed)} cell(s) of {csv_path} {what} (e.g. line {line}: {a!r} -> {b!r})")
    return out


def _binary(cell: str) -> Optional[float]:
    """The number in a cell (None when it is no number)."""
    try:
        return float(cell)
    except ValueError:
        return None


def _tag_columns(header: list[str], rows: list[list[str]], lines: list[int], csv_path: Path, id_col: str,
                 group_col: Optional[str]) -> Optional[list[str]]:
    """The columns of a multilabel table with one 0/1 column per tag (1.0/0.0 accepted: a pandas float column),
    or None if it is not one. A numeric table with a cell other than 0 or 1 is refused, naming the cell."""
    columns = [c for c in header if c not in (id_col, group_col)]
    if len(columns) < 2:
        return None
    index = [header.index(c) for c in columns]
    values = [[_binary(row[i]) for i in index] for row in rows]
    if any(v is None for row in values for v in row):
        return None
    for row, line in zip(values, lines):
        for column, v in zip(columns, row):
            if v not in (0.0, 1.0):
                raise KitError(f"{csv_path} line {line}, column {column!r}: {v:g} is not 0 or 1; a table of one 0/1 "
                               f"column per tag (multilabel) holds only 0 and 1. Fix the cell")
    return columns


def label_cells(header: list[str], rows: list[list[str]], label_col: str, id_col: str, group_col: Optional[str] = None,
                tag_columns_ok: bool = False, lines: Optional[list[int]] = None,
                csv_path: Path = Path("the CSV")) -> tuple[Optional[list[str]], Optional[list[str]]]:
    """(label cells, tag columns): the label column's cells; or, where there is no such column and
    `tag_columns_ok`, a table whose other columns are all 0/1 read as space-separated tags (and those columns);
    (None, None) when neither."""
    if label_col in header:
        column = header.index(label_col)
        return [row[column] for row in rows], None
    lines = lines or list(range(2, len(rows) + 2))
    tags = _tag_columns(header, rows, lines, csv_path, id_col, group_col) if tag_columns_ok else None
    if tags is None:
        return None, None
    at = [header.index(t) for t in tags]
    return [" ".join(t for t, i in zip(tags, at) if float(row[i]) == 1.0) for row in rows], tags


def read_table(csv_path: Path, images_dir: Path, id_col: str, label_col: Optional[str] = None,
               group_col: Optional[str] = None, fix: str = "", tag_columns_ok: bool = False,
               missing: frozenset = MISSING_TEXT) -> Table:
    """The table of a competition CSV. `tag_columns_ok`: a table without `label_col` whose other columns are all
    0/1 is a multilabel table (one column per tag); its label cells become space-separated tags. `missing`: the
    texts that mean a missing label or group id."""
    header, rows, lines = read_csv(csv_path, [id_col] + ([group_col] if group_col else []), fix)
    labels, tags = label_cells(header, rows, label_col, id_col, group_col, tag_columns_ok, lines, csv_path) \
        if label_col else ([], None)
    if labels is None:
        check_columns(csv_path, header, [label_col])
    column = {c: header.index(c) for c in (id_col, group_col) if c}
    ids, seen = [], {}
    for line, row in zip(lines, rows):
        image_id = _safe_id(row[column[id_col]], csv_path, line)
        if image_id in seen:
            raise KitError(f"{csv_path} line {line}: duplicate image id {image_id!r} (first seen on line "
                           f"{seen[image_id]}); each image must appear once")
        seen[image_id] = line
        ids.append(image_id)
    if label_col and tags is None:
        check_label_cells(labels, lines, csv_path, label_col, missing, allow_empty=True)
    groups = [row[column[group_col]].strip() for row in rows] if group_col else None
    if groups is not None:
        empty = [line for line, g in zip(lines, groups) if not g or g in missing]
        if empty:
            raise KitError(f"{csv_path} line {empty[0]}: {group_col!r} is empty or the text of a missing value "
                           f"({len(empty)} row(s) in all); such group ids would all form one group. Fill them in (a "
                           f"unique id per row if the image belongs to no group)")
    return Table(csv_path, ids, resolve_images(images_dir, ids, csv_path, lines), lines, labels, groups, header, rows,
                 tags, missing)


def _probe(path: Path) -> None:
    open_rgb(path, 64)          # JPEG: the whole stream decoded at a small DCT scale catches truncation cheaply


def decode_every(paths: list[Path], decode=_probe, workers: int = 8, keep: Callable[[Any], None] | None = None,
                 refuse: bool = True, fix: str = "Replace these files or remove their rows from the CSV") \
        -> dict[Path, str]:
    """Decode every image (`decode`, in `workers` threads; 1: in this thread), handing each result to `keep` in
    order; a corrupt file stops the run now, not in epoch 7, with up to five of the bad files named. With `refuse`
    False: {file: why it cannot be decoded} instead."""
    problems = []

    def attempt(path):
        try:
            return decode(path), None
        except ImageError as e:
            return None, e.reason
    with ThreadPoolExecutor(workers) if workers > 1 else contextlib.nullcontext() as pool:
        results = pool.map(attempt, paths) if pool else map(attempt, paths)
        for path, (result, error) in zip(paths, results):
            if error:
                problems.append((path, error))
            elif keep is not None and not problems:
                keep(result)
    if problems and not refuse:
        return dict(problems)
    if problems:
        listed = "; ".join(f"{p}: {err}" for p, err in problems[:5])
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise KitError(f"{len(problems)} image(s) cannot be decoded: {listed}{more}. {fix}")
    return {}


def check_images_readable(paths: list[Path], workers: int = 8) -> None:
    """Decode every image once before training (kit.train.cache's decode into memory does the same check)."""
    decode_every(paths, workers=workers)


def data_root(data_dir: str) -> Path:
    root = Path(data_dir)
    if not root.is_dir():
        raise KitError(f"data dir {root} does not exist; pass --data-dir with your competition folder "
                       f"(train.csv, train_images/, test_images/, sample_submission.csv)")
    return root


def train_table(cfg) -> Table:
    """The training table, its label cells normalized (normalize_labels) and checked for missing values."""
    root = data_root(cfg.data_dir)
    table = read_table(root / cfg.train_csv, root / cfg.train_images, cfg.id_col, cfg.label_col, cfg.group_col,
                       fix=f"Put the competition's train.csv in {root}, or set train_csv in the config",
                       tag_columns_ok=cfg.task == "auto" or task_class(cfg.task).reads_tag_columns,
                       missing=missing_texts(cfg.missing_values))
    if table.tag_columns is None:
        table.labels = normalize_labels(table.labels, table.lines, table.csv_path)
    return table


def submission_table(data_dir: str, layout: Layout = Layout(), id_col: str = "image_id") -> Table:
    root = data_root(data_dir)
    return read_table(root / layout.sample_submission, root / layout.test_images, id_col,
                      fix=f"Put the competition's sample_submission.csv in {root}, or set sample_submission")


def training_images(cfg, ids: list[str]) -> list[Path]:
    """The training image files of these ids (OOF rows), for the reports, the parity gate and int8 checks."""
    root = data_root(cfg.data_dir)
    return resolve_images(root / cfg.train_images, ids, root / cfg.train_csv)
