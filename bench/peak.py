"""The machine's measured fp32 GEMM peak (GFLOP/s), the yardstick for bench/infer.py's achieved GFLOP/s.

    python bench/peak.py
"""
from __future__ import annotations

import os
import time

import torch


def gemm_peak(n: int = 2048, seconds: float = 3.0) -> float:
    torch.set_num_threads(os.cpu_count())
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    best, t_end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t = time.perf_counter()
        a @ b
        best = max(best, 2 * n ** 3 / (time.perf_counter() - t) / 1e9)
    return best


if __name__ == "__main__":
    print(f"fp32 GEMM peak: {gemm_peak():.1f} GFLOP/s ({os.cpu_count()} cores, torch {torch.__version__}, "
          f"best of 2048x2048 matmuls over 3 s)")
