"""Where and how reproducibly a fold trains: the device, the activation layout, determinism and the RNGs."""
from __future__ import annotations

import random

import numpy as np
import torch
import torch.utils.deterministic

from kit.core.errors import KitError


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise KitError("--device cuda was asked for, but PyTorch sees no CUDA GPU; use --device cpu or auto")
    return torch.device(name)


def activation_layout(channels_last, device: torch.device) -> torch.memory_format:
    """channels_last where asked for; by default (None) on CUDA only (see Config.channels_last)."""
    on = device.type == "cuda" if channels_last is None else channels_last
    return torch.channels_last if on else torch.contiguous_format


def make_deterministic() -> None:
    torch.use_deterministic_algorithms(True, warn_only=True)
    # deterministic mode also fills every new tensor with NaN, a debugging aid that costs an extra write pass:
    # eca_nfnet_l0 forward+backward on the CPU took 703 instead of 675 ms (33k vs 22k page faults)
    torch.utils.deterministic.fill_uninitialized_memory = False
    torch.backends.cudnn.benchmark = False


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)


def rng_state() -> dict:
    """Every global RNG's state, as tensors and plain data (checkpoints are read with weights_only=True)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": [kind, keys.tolist(), pos, has_gauss, gauss]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
