"""int8 static quantization of an exported graph (onnxruntime.quantization: QDQ, per-channel int8 weights, uint8
activations), calibrated on training images, and how far it moves the fp32 graph's predictions."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from kit.core.artifact import INPUT
from kit.core.atomic import atomic_path
from kit.core.images import load_rgb

CALIBRATION_IMAGES = 128
EVAL_IMAGES = 512
log = logging.getLogger(__name__)


class _Batches:
    """onnxruntime CalibrationDataReader over uint8 image batches."""

    def __init__(self, images: np.ndarray, batch_size: int = 16):
        batches = [images[i:i + batch_size] for i in range(0, len(images), batch_size)]
        if len(batches) % 2 == 0:
            # ranges are merged every 2 batches (CalibMaxIntermediateOutputs); onnxruntime 1.32 then fails with
            # "No data is collected" after an even count. A repeated batch leaves every min/max unchanged.
            batches.append(batches[-1])
        self.batches = iter(batches)

    def get_next(self):
        batch = next(self.batches, None)
        return None if batch is None else {INPUT: batch}


def quantize_graph(fp32_path: Path, out: Path, calibration: np.ndarray) -> None:
    """Static QDQ int8 (uint8 activations, per-channel int8 weights: the VNNI-friendly U8S8 pairing) over every
    op type onnxruntime quantizes; ranges from `calibration` (uint8 images) merged every 2 batches of 4, so
    a 5-fold 224 px ensemble calibrates in bounded memory (all batches at once was killed at 24 GiB)."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process
    prepared = out.with_name(out.name + ".pre.onnx")      # beside the writer's temp file: cleaned up like it
    try:
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        quantize_static(str(prepared), str(out), _Batches(calibration, batch_size=4), quant_format=QuantFormat.QDQ,
                        per_channel=True, weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8,
                        extra_options={"CalibMaxIntermediateOutputs": 2})
    finally:
        prepared.unlink(missing_ok=True)


def sample_images(paths: list[Path], size: int, count: int, seed: int = 0) -> np.ndarray:
    """`count` of `paths` picked at random (seeded), decoded as the graph takes them."""
    pick = np.random.default_rng(seed).choice(len(paths), min(count, len(paths)), replace=False)
    return np.stack([load_rgb(paths[i], size) for i in sorted(pick)])


def _run(session, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    return np.concatenate([session.run(None, {INPUT: images[i:i + batch_size]})[0]
                           for i in range(0, len(images), batch_size)])


def quantize(fp32_path: Path, out: Path, calibration: np.ndarray, evaluation: np.ndarray, write_meta, task) -> dict:
    """Write the int8 graph of `fp32_path` to `out` (atomically; `write_meta(path, agreement)` labels it) and compare
    it with the fp32 graph on `evaluation` images.

    Only agreement is reported: the evaluation images are OOF rows, but each was in the training set of every
    fold model except one, so an accuracy of the whole ensemble on them would not be out-of-fold.
    """
    import onnxruntime as ort
    with atomic_path(out) as tmp:
        quantize_graph(fp32_path, tmp, calibration)
        fp32 = _run(ort.InferenceSession(str(fp32_path), providers=["CPUExecutionProvider"]), evaluation)
        int8 = _run(ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"]), evaluation)
        agreement = float(np.mean(task.same_decision(fp32, int8)))
        write_meta(tmp, agreement)
        graph = tmp.read_bytes()
    result = {"path": str(out), "graph": graph, "images": len(evaluation), "agreement": agreement,
              "max_abs_diff": float(np.abs(fp32 - int8).max()), "mean_abs_diff": float(np.abs(fp32 - int8).mean())}
    log.info(f"int8: {out} | fp32/int8 agreement on {len(evaluation)} training images: same submission cell on "
             f"{100 * result['agreement']:.1f}%, mean |Δprob| {result['mean_abs_diff']:.2g} (agreement only: these "
             f"images trained most of the fold models, so no accuracy is claimed)")
    return result
