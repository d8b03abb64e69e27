"""The parity gate: an exported graph is written only if onnxruntime agrees with the PyTorch module it came
from, on real images."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .artifact import INPUT
from .errors import KitError

PARITY_ATOL = 1e-4


def parity_check(onnx_path: Path, reference: torch.nn.Module, images: np.ndarray, atol: float = PARITY_ATOL) -> float:
    """Run the graph in onnxruntime and the PyTorch module on the same images; raise unless they agree.
    Returns the largest absolute difference."""
    import onnxruntime as ort
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = session.run(None, {INPUT: images})[0]
    with torch.no_grad():
        want = reference(torch.from_numpy(images)).numpy()
    err = float(np.abs(got - want).max())
    flips = int((got.argmax(1) != want.argmax(1)).sum())
    if not err <= atol or flips:
        raise KitError(f"ONNX parity check failed: max |Δprob| = {err:.3g} against PyTorch (limit {atol:g}, "
                       f"missed by {max(err - atol, 0):.3g}), {flips} of {len(images)} predictions differ; "
                       f"nothing was written")
    return err
