"""The parity gate: an exported graph is written only if onnxruntime agrees with the PyTorch module it came
from, on real images."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from kit.core.artifact import INPUT
from kit.core.errors import KitError

PARITY_ATOL = 1e-4


def parity_check(onnx_path: Path, reference: torch.nn.Module, images: np.ndarray, atol: float = PARITY_ATOL) -> float:
    """Run the graph in onnxruntime and the PyTorch module on the same images; raise unless both outputs agree:
    the ensemble's prediction and every member's own (so a member with a small weight cannot hide).
    Returns the largest absolute difference."""
    import onnxruntime as ort
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = session.run(None, {INPUT: images})
    with torch.no_grad():
        want = [t.numpy() for t in reference(torch.from_numpy(images))]
    err = max(float(np.abs(g - w).max()) for g, w in zip(got, want))
    flips = int((got[0].argmax(-1) != want[0].argmax(-1)).sum() + (got[1].argmax(-1) != want[1].argmax(-1)).sum())
    if not err <= atol or flips:
        worst = int(np.abs(got[1] - want[1]).max(axis=(0, 2)).argmax())
        raise KitError(f"ONNX parity check failed: max |Δprob| = {err:.3g} against PyTorch (limit {atol:g}, "
                       f"missed by {max(err - atol, 0):.3g}; worst member #{worst}), {flips} predictions differ on "
                       f"{len(images)} images; nothing was written")
    return err
