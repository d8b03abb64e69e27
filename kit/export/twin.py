"""A graph's twin at lower precision, written beside it: `int8` (kit.export.int8: static QDQ, calibrated on training
images; for CPUs) or `fp16` (kit.export.fp16; for GPUs). Each is checked against its fp32 graph on OOF images the
same way: the share of rows that give the same submission cell, and how far the outputs move."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from kit.core.artifact import INPUT
from kit.core.atomic import atomic_path
from kit.core.paths import twin_path

EVAL_IMAGES = 512
log = logging.getLogger(__name__)


def _run(session, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    return np.concatenate([session.run(None, {INPUT: images[i:i + batch_size]})[0]
                           for i in range(0, len(images), batch_size)])


def make(kind: str, fp32_path: Path, evaluation: np.ndarray, write_meta: Callable, task,
         calibration: Optional[np.ndarray] = None, out: Optional[Path] = None) -> dict:
    """Write the `kind` twin of `fp32_path` (atomically; `write_meta(path, agreement)` labels it) and compare it with
    the fp32 graph on `evaluation` images.

    Only agreement is reported: the evaluation images are OOF rows, but each was in the training set of every
    fold model except one, so an accuracy of the whole ensemble on them would not be out-of-fold.
    """
    import onnxruntime as ort
    out = out or twin_path(fp32_path, kind)
    with atomic_path(out) as tmp:
        if kind == "int8":
            from kit.export.int8 import quantize_graph
            quantize_graph(fp32_path, tmp, calibration)
        else:
            from kit.export.fp16 import convert_graph
            convert_graph(fp32_path, tmp)
        fp32 = _run(ort.InferenceSession(str(fp32_path), providers=["CPUExecutionProvider"]), evaluation)
        low = _run(ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"]), evaluation)
        agreement = float(np.mean(task.same_decision(fp32, low)))
        write_meta(tmp, agreement)
        graph = tmp.read_bytes()
    result = {"path": str(out), "graph": graph, "images": len(evaluation), "agreement": agreement,
              "max_abs_diff": float(np.abs(fp32 - low).max()), "mean_abs_diff": float(np.abs(fp32 - low).mean())}
    log.info(f"{kind}: {out} | fp32/{kind} agreement on {len(evaluation)} training images: same submission cell on "
             f"{100 * result['agreement']:.1f}%, mean |Δprob| {result['mean_abs_diff']:.2g} (agreement only: these "
             f"images trained most of the fold models, so no accuracy is claimed)")
    return result
