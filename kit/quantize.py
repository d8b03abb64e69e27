"""int8 static quantization of the exported ensemble (onnxruntime.quantization, QDQ, per-channel weights),
calibrated on training images, and its accuracy against the fp32 graph on out-of-fold images."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from .atomic import atomic_path
from .data import resolve_images
from .images import load_rgb

CALIBRATION_IMAGES = 128
EVAL_IMAGES = 512


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
        return None if batch is None else {"images": batch}


def _calibration_images(data_dir: str, cfg: dict) -> np.ndarray:
    root = Path(data_dir)
    with open(root / cfg["train_csv"], newline="", encoding="utf-8-sig") as f:
        ids = [row[cfg["id_col"]] for row in csv.DictReader(f)]
    pick = np.random.default_rng(0).choice(len(ids), min(CALIBRATION_IMAGES, len(ids)), replace=False)
    paths = resolve_images(root / cfg["train_images"], [ids[i] for i in sorted(pick)], root / cfg["train_csv"])
    return np.stack([load_rgb(p, cfg["img_size"]) for p in paths])


def accuracy(session, images: np.ndarray, labels: np.ndarray, classes: list, batch_size: int = 64) -> tuple[float, np.ndarray]:
    pred = np.concatenate([session.run(None, {"images": images[i:i + batch_size]})[0].argmax(1)
                           for i in range(0, len(images), batch_size)])
    names = np.array([str(c) for c in classes])
    return float(np.mean(names[pred] == labels)), pred


def quantize_graph(fp32_path: Path, out: Path, calibration: np.ndarray) -> None:
    """Static QDQ int8 (uint8 activations, per-channel int8 weights: the VNNI-friendly U8S8 pairing) over every
    op type onnxruntime quantizes; ranges from `calibration` (uint8 images) merged every 2 batches of 4, so
    a 5-fold 224 px ensemble calibrates in bounded memory (all batches at once was killed at 24 GiB)."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process
    prepared = out.with_name(out.name + ".pre.onnx")
    try:
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        quantize_static(str(prepared), str(out), _Batches(calibration, batch_size=4), quant_format=QuantFormat.QDQ,
                        per_channel=True, weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8,
                        extra_options={"CalibMaxIntermediateOutputs": 2})
    finally:
        prepared.unlink(missing_ok=True)


def quantize(fp32_path: Path, run_dir: Path, folds: list[int], data_dir: str, cfg: dict, metadata: dict) -> dict:
    import onnxruntime as ort

    from .export import oof_images, set_metadata
    out = fp32_path.with_name(fp32_path.stem + ".int8.onnx")
    with atomic_path(out) as tmp:
        quantize_graph(fp32_path, tmp, _calibration_images(data_dir, cfg))
        set_metadata(tmp, {**metadata, "int8": True})
        images, labels, _ = oof_images(run_dir, folds, data_dir, cfg, EVAL_IMAGES)
        options = ort.SessionOptions()
        fp32 = ort.InferenceSession(str(fp32_path), options, providers=["CPUExecutionProvider"])
        int8 = ort.InferenceSession(str(tmp), options, providers=["CPUExecutionProvider"])
        acc32, pred32 = accuracy(fp32, images, labels, metadata["classes"])
        acc8, pred8 = accuracy(int8, images, labels, metadata["classes"])
    result = {"path": str(out), "images": len(images), "fp32_accuracy": acc32, "int8_accuracy": acc8,
              "agreement": float(np.mean(pred32 == pred8))}
    print(f"int8: {out} | accuracy on {len(images)} OOF images: fp32 {acc32:.4f}, int8 {acc8:.4f} "
          f"(delta {100 * (acc8 - acc32):+.2f} points), same prediction on {100 * result['agreement']:.1f}%")
    return result
