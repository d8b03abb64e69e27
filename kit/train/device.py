"""Where and how reproducibly a fold trains: the device, the activation layout, determinism and the RNGs."""
from __future__ import annotations

import ctypes
import random
from dataclasses import dataclass
from typing import Optional

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


def cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AVX512-BF16 or AMX); without it PyTorch emulates bf16 and
    autocast is slower than fp32."""
    checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(check() for check in checks if check is not None)


@dataclass(frozen=True)
class Precision:
    """The arithmetic of the forward and backward passes: autocast's dtype (None: fp32) and whether the loss is
    scaled (fp16 only; its gradients are unscaled before AGC)."""
    name: str
    dtype: Optional[torch.dtype]
    scaled: bool

    def autocast(self, device: torch.device):
        return torch.autocast(device.type, dtype=self.dtype, enabled=self.dtype is not None)


# bf16 autocast against fp32 on this kit's CPU (2-core AMD EPYC with AVX512-BF16), bench/throughput.py, 2 rounds in
# alternating order (bench/results/precision_ab.jsonl): nf_resnet18 b64 488 vs 478 images/s (+2 %), nf_resnet26 b32
# 216 vs 202 (+7 %), while the same arm moved 15-30 % between rounds. Not faster beyond the noise, and fp32 is
# bit-identical across CPUs: the CPU default stays fp32; --precision bf16 is there to try (bench/RESULTS.md
# "Training throughput, fourth wave").
CPU_AUTO = "fp32"


def resolve_precision(setting: str, device: torch.device) -> Precision:
    """The Precision for the `precision` setting on `device`; one a device cannot do is an error, never a fallback."""
    name = setting
    if setting == "auto":
        name = "fp16" if device.type == "cuda" else CPU_AUTO
    if name == "fp16" and device.type != "cuda":
        raise KitError("--precision fp16 needs a CUDA GPU (PyTorch's CPU autocast has no fast fp16); use bf16 on a CPU "
                       "with AVX512-BF16 or AMX, or fp32")
    if name == "bf16" and device.type == "cpu" and not cpu_has_bf16():
        raise KitError("--precision bf16: this CPU has no native bfloat16 (AVX512-BF16 or AMX), where PyTorch emulates "
                       "it slower than fp32; use --precision fp32 (or auto)")
    if name == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise KitError(f"--precision bf16: {torch.cuda.get_device_name(device)} has no bfloat16; use fp16 or fp32")
    return Precision(name, {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[name], name == "fp16")


def activation_layout(channels_last, device: torch.device) -> torch.memory_format:
    """channels_last where asked for; by default (None) on CUDA only (see Config.channels_last)."""
    on = device.type == "cuda" if channels_last is None else channels_last
    return torch.channels_last if on else torch.contiguous_format


def keep_freed_memory() -> None:
    """Have glibc keep the buffers PyTorch frees for reuse instead of giving them back to the kernel and faulting
    fresh zeroed pages in at the next step (the advice of PyTorch's CPU performance guide, done with mallopt).
    Measured on a 6,000-image fold at 32 px: ~700,000 page faults an epoch and 1.3 s of system time -> none.
    Speed only; elsewhere than glibc nothing happens."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-1, 1 << 30)           # M_TRIM_THRESHOLD: keep up to 1 GiB of free heap
        libc.mallopt(-3, 32 << 20)          # M_MMAP_THRESHOLD: the heap, not mmap, up to glibc's 32 MiB maximum
    except (OSError, AttributeError):
        pass


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
