"""int8 static quantization of an exported graph (onnxruntime.quantization: QDQ, per-channel int8 weights, uint8
activations), calibrated on training images. kit.export.twin writes it and measures how far it moves the fp32 graph's
predictions."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from kit.core.artifact import INPUT
from kit.core.images import load_rgb

CALIBRATION_IMAGES = 128


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
