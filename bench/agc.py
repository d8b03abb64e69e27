"""Cost of Adaptive Gradient Clipping in a CPU training step: none vs timm's adaptive_clip_grad vs kit.train.agc.

    python bench/agc.py [--models nfnet_l0,dm_nfnet_f0] [--img-size 160] [--batch-size 8]

The clipping cost does not depend on the image size (it touches every parameter once), so a smaller step
(small images) is the harder case for the percentage. Clipping is timed alone on the model's real gradients,
interleaved timm/kit, median of repeats; the step (forward, backward, SGD) is timed without clipping.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch
from timm.utils.agc import adaptive_clip_grad

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import median_time  # noqa: E402
from kit.train.agc import adaptive_clip_grad_  # noqa: E402
from kit.train.model import create_model, split_head_params  # noqa: E402


def bench(name: str, img_size: int, batch_size: int, steps: int, repeats: int) -> None:
    torch.manual_seed(0)
    model = create_model(name, 10)
    body, _ = split_head_params(model)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    x, y = torch.randn(batch_size, 3, img_size, img_size), torch.randint(0, 10, (batch_size,))

    def step():
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    step()
    step_s = median_time(step, steps)
    grads = [p.grad.clone() for p in body]

    def restore():
        for p, g in zip(body, grads):
            p.grad.copy_(g)

    n = sum(p.numel() for p in body) / 1e6
    print(f"{name:>12} {img_size}px b{batch_size}: {len(body)} tensors, {n:.1f}M params, step {step_s * 1e3:.1f} ms")
    # lambda 0.05 is the kit default; 1e-6 clips every unit, the worst case for the kit (every tensor rescaled)
    for clip in (0.05, 1e-6):
        timm_s, kit_s = [], []
        for _ in range(repeats):
            restore()
            timm_s.append(median_time(lambda: adaptive_clip_grad(body, clip), 1))
            restore()
            kit_s.append(median_time(lambda: adaptive_clip_grad_(body, clip), 1))
        t, k = statistics.median(timm_s), statistics.median(kit_s)
        print(f"    lambda {clip:g}: timm AGC {t * 1e3:6.1f} ms ({100 * t / step_s:4.1f}% of step) | kit AGC "
              f"{k * 1e3:6.1f} ms ({100 * k / step_s:4.1f}% of step) | kit {t / k:.2f}x faster", flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="nfnet_l0,dm_nfnet_f0")
    p.add_argument("--img-size", type=int, default=160)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--repeats", type=int, default=15)
    args = p.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for name in args.models.split(","):
        bench(name, args.img_size, args.batch_size, args.steps, args.repeats)


if __name__ == "__main__":
    main()
