"""Fill, validate and write the Kaggle submission from an exported ensemble's predictions. Torch-free.

The submission has exactly the rows (ids as written, order) and columns of sample_submission.csv. The label
column gets the task's decoded prediction (multiclass: the predicted class, exactly as written in train.csv); a
column named after a class gets that class's probability. It is validated before anything is written, and
written atomically.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from kit.core.artifact import Metadata
from kit.core.atomic import write_csv
from kit.core.table import Layout, Table, label_cells, normalize_labels, read_csv, submission_table
from kit.core.entry import number, option, parse_request
from kit.core.errors import KitError
from kit.core.providers import PROVIDER_CHOICES
from kit.core.paths import Outputs
from kit.runtime.predictor import Predictor
from kit.core.task import Task

log = logging.getLogger(__name__)
_MISSING = ("", "nan", "NaN", "inf", "-inf")


def check_classes(task: Task, meta: Metadata, train_csv: Path, onnx_path: str | Path = "") -> None:
    """A graph exported from another competition's run must not label this one's test set."""
    if not train_csv.is_file():
        return
    header, rows, lines = read_csv(train_csv, [meta.id_col], "")
    labels, tags = label_cells(header, rows, meta.label_col, meta.id_col, tag_columns_ok=task.reads_tag_columns,
                               lines=lines, csv_path=train_csv)
    if labels is not None and tags is None:
        labels = normalize_labels(labels, lines, train_csv, quiet=True)           # as training read them
    if labels is None:
        raise KitError(f"{train_csv} has no column {meta.label_col!r}, which {onnx_path} was trained on: it comes "
                       f"from another competition")
    try:
        here = type(task).from_labels(labels, name=meta.label_col).names
    except KitError as e:
        raise KitError(f"{onnx_path} is a {meta.task} model but {train_csv} does not fit it ({e}): it comes from "
                       f"another competition") from None
    if here != task.names:
        raise KitError(f"{onnx_path} was exported for {len(task.names)} classes {task.names[:10]} but {train_csv} has "
                       f"{len(here)} classes {here[:10]}: it comes from another run. Export the ensemble of this "
                       f"competition's run (python infer.py --run-dir RUN --export-only)")


def fill(sample: Table, outputs: np.ndarray, task: Task, meta: Metadata) -> list[list[str]]:
    """The sample's rows with every column but the id filled from `outputs` (one row per sample row)."""
    if len(outputs) != len(sample.ids) or not np.isfinite(outputs).all():
        raise KitError(f"predictions are incomplete or not finite ({len(outputs)} rows for {len(sample.ids)} ids); "
                       f"nothing was written")
    by_name = {c: i for i, c in enumerate(task.names)}
    columns = []
    for column in sample.header:
        if column == meta.id_col:
            columns.append(None)
        elif column == meta.label_col:
            columns.append(task.label_cells(outputs))
        elif column in by_name:
            columns.append([f"{p:.9g}" for p in outputs[:, by_name[column]]])
        else:
            raise KitError(f"{sample.csv_path}: column {column!r} is neither the label column {meta.label_col!r} nor "
                           f"a class name; the kit does not know how to fill it")
    id_at = sample.header.index(meta.id_col)
    return [[row[id_at] if values is None else values[r] for values in columns] for r, row in enumerate(sample.rows)]


def validate_submission(header: list[str], rows: list[list], expected_ids: list[str], expected_header: list[str],
                        id_col: str, may_be_empty: str | None = None) -> None:
    """Exactly the sample's columns, ids once each in the sample's order (as written), no empty or NaN cell but
    in the column `may_be_empty` (a multilabel tag list: an image with no tag is a prediction)."""
    if header != expected_header:
        raise KitError(f"submission columns {header} differ from sample_submission's {expected_header}")
    id_at = header.index(id_col)
    ids = [r[id_at] for r in rows]
    if len(set(ids)) != len(ids):
        raise KitError("submission has duplicate ids; nothing was written")
    if ids != expected_ids:
        missing = set(expected_ids) - set(ids)
        detail = f"{len(missing)} id(s) missing (e.g. {sorted(missing)[0]!r})" if missing else "ids out of order"
        raise KitError(f"submission does not match sample_submission: {detail}; nothing was written")
    for line, row in enumerate(rows, start=2):
        if len(row) != len(header) or any(str(v).strip() in _MISSING and not (c == may_be_empty and v == "")
                                          for c, v in zip(header, row)):
            raise KitError(f"submission line {line}: empty or NaN value in {row}; nothing was written")


def write_probabilities(path: str | Path, sample: Table, outputs: np.ndarray, task: Task, id_col: str) -> None:
    """One column per output. 9 significant digits round-trip float32 exactly: with fewer, a probability within
    rounding of a fitted threshold reads back on the other side of it."""
    write_csv(path, [id_col] + task.output_columns(),
              ([i, *(f"{p:.9g}" for p in row)] for i, row in zip(sample.ids, outputs)))


def output_paths(onnx_path, data_dir: str, layout: Layout, out, probs_out, guard: Outputs | None = None):
    """(--out, --probs) after checking that neither overwrites an input (the graph, the competition's CSVs) nor
    lies in the competition folder. `guard`: a caller's, already holding more inputs (run dirs)."""
    guard = guard or Outputs()
    guard.reads(onnx_path, Path(data_dir) / layout.sample_submission, Path(data_dir) / layout.train_csv)
    guard.protects(data_dir, "the competition folder")
    return guard.check("--out", out), guard.check("--probs", probs_out)


def make_submission(onnx_path: str | Path, data_dir: str, out: str | Path, *, provider: str = "auto",
                    batch_size: int = 32, probs_out: str | Path | None = None, layout: Layout = Layout(),
                    workers: int = 4, graph: bytes | None = None) -> dict:
    """Predict the sample submission's images with the graph at `onnx_path` (or its bytes, `graph`) and write
    the submission (and, with `probs_out`, every output's value per image)."""
    if batch_size < 1:
        raise KitError(f"--batch-size must be at least 1, got {batch_size}")
    out, probs_out = output_paths(onnx_path, data_dir, layout, out, probs_out)
    predictor = Predictor(onnx_path, provider, graph=graph)
    meta, task = predictor.meta, predictor.task
    check_classes(task, meta, Path(data_dir) / layout.train_csv, onnx_path)
    sample = submission_table(data_dir, layout, meta.id_col)
    t0 = time.perf_counter()
    outputs = predictor.predict_files(sample.paths, batch_size, workers)
    seconds = time.perf_counter() - t0
    rows = fill(sample, outputs, task, meta)
    validate_submission(sample.header, rows, [r[sample.header.index(meta.id_col)] for r in sample.rows],
                        sample.header, meta.id_col, meta.label_col if task.empty_label_is_a_prediction else None)
    write_csv(out, sample.header, rows)
    if probs_out:
        write_probabilities(probs_out, sample, outputs, task, meta.id_col)
    rate = len(sample.ids) / seconds if seconds > 0 else math.inf
    log.info(f"predict: {len(sample.ids)} images with {onnx_path} on {', '.join(predictor.providers)}: "
             f"{seconds:.2f}s ({rate:.1f} images/s, decode included) -> {out}")
    return {"images": len(sample.ids), "providers": predictor.providers, "seconds": seconds, "images_per_s": rate,
            "outputs": outputs, "meta": meta}


@dataclass
class SubmissionRequest:
    """A deployed graph's flags (kit.deploy.bundle's predict.py), as one value (kit.core.entry.add_flags)."""
    data_dir: str = option(None, "the competition folder (may be read-only)", required=True)
    out: str = option(None, "the submission CSV to write", required=True)
    probs: Optional[str] = option(None, "also write per-class probabilities to this CSV")
    onnx: Optional[str] = option(None, "the exported graph (default: the bundled one)")
    provider: str = option("auto", "onnxruntime's execution provider", choices=PROVIDER_CHOICES)
    batch_size: int = option(32, "images per onnxruntime call", parse=number(1, None, int))


def main(onnx_path: str | Path, settings: dict) -> None:
    """The command line of a deployed graph (kit.deploy.bundle's predict.py): the competition folder in, the CSV out."""
    r = parse_request(SubmissionRequest, description="Predict a competition folder's test images and write the "
                                                     "submission.")
    make_submission(r.onnx or str(onnx_path), r.data_dir, r.out, provider=r.provider, batch_size=r.batch_size,
                    probs_out=r.probs, layout=Layout.of(settings))
