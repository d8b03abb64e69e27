"""Predict test images with the exported ONNX ensemble and write the submission. Needs no PyTorch:
onnxruntime, numpy and Pillow are enough, so this module (with kit.images, kit.data, kit.atomic and
kit.errors) runs wherever onnxruntime does.

Submission: exactly the rows (ids, order) and columns of sample_submission.csv. The label column gets the
predicted class as its original training value; a column named after a class gets that class's probability.
"""
from __future__ import annotations

import csv
import json
import math
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import numpy as np
import onnxruntime as ort
from tqdm import tqdm

from .atomic import write_csv
from .data import Table, class_list, parse_labels, read_csv, submission_table
from .errors import KitError
from .images import load_rgb

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


def create_session(onnx_path: str | Path, provider: str = "auto", threads: int = 0) -> ort.InferenceSession:
    """An onnxruntime session on the asked provider; a session that fell back to CPU is an error.

    Session options: full graph optimization (constant folding, conv+activation fusion) and intra-op threads
    = all cores (0 lets onnxruntime choose one per physical core).
    """
    path = Path(onnx_path)
    if not path.is_file():
        raise KitError(f"ONNX file {path} does not exist; export it first with `python infer.py --export-only`")
    available = ort.get_available_providers()
    if provider == "auto":
        wanted = PROVIDERS["cuda"] if PROVIDERS["cuda"] in available else PROVIDERS["cpu"]
    elif provider in PROVIDERS:
        wanted = PROVIDERS[provider]
        if wanted not in available:
            raise KitError(f"--provider {provider}: onnxruntime here has no {wanted} (available: "
                           f"{', '.join(available)}). Install onnxruntime-gpu with a matching CUDA, or use "
                           f"--provider cpu")
    else:
        raise KitError(f"--provider must be cpu, cuda or auto, got {provider!r}")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    providers = [wanted] if wanted == PROVIDERS["cpu"] else [wanted, PROVIDERS["cpu"]]
    try:
        session = ort.InferenceSession(str(path), options, providers=providers)
    except Exception as e:  # noqa: BLE001 - onnxruntime raises several unrelated types for a bad file
        raise KitError(f"onnxruntime cannot load {path}: {str(e).splitlines()[0]}") from None
    if session.get_providers()[0] != wanted:
        raise KitError(f"onnxruntime fell back to {session.get_providers()[0]} instead of {wanted}; check the "
                       f"CUDA/cuDNN installation, or use --provider cpu")
    return session


def read_metadata(session: ort.InferenceSession, path: str | Path = "") -> dict:
    props = session.get_modelmeta().custom_metadata_map
    if "kit.classes" not in props:
        raise KitError(f"{path} is not an ensemble exported by this kit (no kit.* metadata); export it with "
                       f"`python infer.py --export-only`")
    return {k[4:]: json.loads(v) for k, v in props.items() if k.startswith("kit.")}


def check_graph(session: ort.InferenceSession, meta: dict, path: str | Path = "") -> None:
    """The graph's own shapes must agree with its metadata (a file from another run or a hand-edited one)."""
    shape = session.get_inputs()[0].shape
    classes = session.get_outputs()[0].shape[-1]
    if shape[1:] != [meta["img_size"], meta["img_size"], 3]:
        raise KitError(f"{path}: the graph takes images of shape {shape[1:]} but its metadata says "
                       f"{meta['img_size']}px; re-export it")
    if isinstance(classes, int) and classes != len(meta["classes"]):
        raise KitError(f"{path}: the graph outputs {classes} classes but its metadata lists {len(meta['classes'])}")


def check_classes(meta: dict, train_csv: Path, onnx_path: str | Path = "") -> None:
    """A graph exported from another competition's run must not label this one's test set."""
    if not train_csv.is_file():
        return
    _, rows = read_csv(train_csv, [meta["label_col"]], "")
    labels = class_list(parse_labels([r[meta["label_col"]].strip() for r in rows]))
    if labels != meta["classes"]:
        raise KitError(f"{onnx_path} was exported for {len(meta['classes'])} classes {meta['classes'][:10]} but "
                       f"{train_csv} has {len(labels)} classes {labels[:10]}: it comes from another run. Export "
                       f"the ensemble of this competition's run (python infer.py --run-dir RUN --export-only)")


def image_batches(paths: list[Path], size: int, batch_size: int, workers: int) -> Iterator[np.ndarray]:
    """uint8 [B, size, size, 3] batches in order; decoding runs in threads, at most 2 batches in flight."""
    with ThreadPoolExecutor(workers) as pool:
        pending: deque = deque()
        for start in range(0, len(paths), batch_size):
            pending.append([pool.submit(load_rgb, p, size) for p in paths[start:start + batch_size]])
            if len(pending) == 2:
                yield np.stack([f.result() for f in pending.popleft()])
        while pending:
            yield np.stack([f.result() for f in pending.popleft()])


def predict(session: ort.InferenceSession, paths: list[Path], img_size: int, batch_size: int = 32,
            workers: int = 4) -> np.ndarray:
    out = []
    bar = tqdm(total=len(paths), disable=None, desc="predict", unit="img")
    for batch in image_batches(paths, img_size, batch_size, workers):
        out.append(session.run(None, {"images": batch})[0])
        bar.update(len(batch))
    bar.close()
    return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)


def submission_rows(sample_csv: Path, table: Table, probs: np.ndarray, meta: dict) -> tuple[list[str], list[list]]:
    """Fill the sample submission's columns; validate before anything is written."""
    header, rows = read_csv(sample_csv, [meta["id_col"]], "")
    classes = meta["classes"]
    by_name = {str(c): i for i, c in enumerate(classes)}
    fill = {}
    for column in header:
        if column == meta["id_col"]:
            continue
        if column == meta["label_col"]:
            fill[column] = lambda p: classes[int(np.argmax(p))]
        elif column in by_name:
            fill[column] = lambda p, i=by_name[column]: f"{p[i]:.6g}"
        else:
            raise KitError(f"{sample_csv}: column {column!r} is neither the label column {meta['label_col']!r} "
                           f"nor a class name; the kit does not know how to fill it")
    if len(probs) != len(table.ids) or not np.isfinite(probs).all():
        raise KitError(f"predictions are incomplete or not finite ({len(probs)} rows for {len(table.ids)} ids); "
                       f"nothing was written")
    out = [[image_id] + [fill[c](p) for c in header[1:]] for image_id, p in zip(table.ids, probs)]
    validate_submission(header, out, [r[meta["id_col"]].strip() for r in rows], header, meta["id_col"])
    return header, out


def validate_submission(header: list[str], rows: list[list], expected_ids: list[str], expected_header: list[str],
                        id_col: str) -> None:
    """Exactly the sample's columns, ids once each in the sample's order, no empty or NaN cell."""
    if header != expected_header:
        raise KitError(f"submission columns {header} differ from sample_submission's {expected_header}")
    ids = [r[0] for r in rows]
    if len(set(ids)) != len(ids):
        raise KitError("submission has duplicate ids; nothing was written")
    if ids != expected_ids:
        missing = set(expected_ids) - set(ids)
        detail = f"{len(missing)} id(s) missing (e.g. {sorted(missing)[0]!r})" if missing else "ids out of order"
        raise KitError(f"submission does not match sample_submission: {detail}; nothing was written")
    for line, row in enumerate(rows, start=2):
        if len(row) != len(header) or any(str(v).strip() in ("", "nan", "NaN") for v in row):
            raise KitError(f"submission line {line}: empty or NaN value in {row}; nothing was written")


def write_probabilities(path: Path, ids: list[str], probs: np.ndarray, meta: dict) -> None:
    write_csv(path, [meta["id_col"]] + [f"prob_{c}" for c in meta["classes"]],
              ([i, *(f"{p:.6g}" for p in row)] for i, row in zip(ids, probs)))


def run(onnx_path: str | Path, data_dir: str, out: str | Path, provider: str = "auto", batch_size: int = 32,
        probs_out: str | Path | None = None, sample_submission: str = "sample_submission.csv",
        test_images: str = "test_images", workers: int = 4, train_csv: str = "train.csv") -> dict:
    """Predict the sample submission's images and write the submission atomically."""
    session = create_session(onnx_path, provider)
    meta = read_metadata(session, onnx_path)
    check_graph(session, meta, onnx_path)
    check_classes(meta, Path(data_dir) / train_csv, onnx_path)
    table = submission_table(data_dir, sample_submission, test_images, meta["id_col"])
    t0 = time.perf_counter()
    probs = predict(session, table.paths, meta["img_size"], batch_size, workers)
    seconds = time.perf_counter() - t0
    header, rows = submission_rows(table.csv_path, table, probs, meta)
    write_csv(out, header, rows)
    if probs_out:
        write_probabilities(Path(probs_out), table.ids, probs, meta)
    result = {"images": len(table.ids), "providers": session.get_providers(), "seconds": seconds,
              "images_per_s": len(table.ids) / seconds if seconds > 0 else math.inf, "probs": probs, "meta": meta}
    print(f"predict: {len(table.ids)} images with {onnx_path} on {', '.join(session.get_providers())}: "
          f"{seconds:.2f}s ({result['images_per_s']:.1f} images/s, decode included) -> {out}")
    return result
