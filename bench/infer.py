"""Inference throughput: onnxruntime (CPU) vs PyTorch eager on the same fold ensemble, measured side by side.

    python bench/infer.py                          # the trained run in runs/default (the demo)
    python bench/infer.py --synthetic nfnet_l0     # 5 random-weight nfnet_l0 folds at 224 px

Prints images/s per batch size and the ORT/PyTorch ratio; both use every core. Timings alternate between
the two engines round by round, and the median round counts, so a noisy machine hits both alike.
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from kit.export import Ensemble, export_onnx, fold_weight_standardization, load_fold_models  # noqa: E402
from kit.model import create_model, normalization  # noqa: E402
from kit.predict import create_session  # noqa: E402


def build(args):
    if args.synthetic:
        torch.manual_seed(0)
        models = [create_model(args.synthetic, 10).eval() for _ in range(args.folds)]
        mean, std = normalization(models[0])
        return models, mean, std, args.img_size, f"{args.folds}x {args.synthetic} @ {args.img_size}px (random weights)"
    models, ckpts = load_fold_models(Path(args.run_dir), None)
    cfg = ckpts[0]["config"]
    return models, ckpts[0]["mean"], ckpts[0]["std"], cfg["img_size"], \
        f"{len(models)}x {cfg['model']} @ {cfg['img_size']}px ({args.run_dir})"


def time_rounds(fns: dict, rounds: int) -> dict:
    times = {k: [] for k in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run-dir", default="runs/default")
    p.add_argument("--synthetic", help="timm model name: benchmark random-weight folds of it instead of a run")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--batches", default="1,16,64")
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()

    models, mean, std, size, what = build(args)
    torch.set_num_threads(os.cpu_count())
    eager = Ensemble(models, mean, std, tta=False).eval()
    copies = [copy.deepcopy(m) for m in models]
    for m in copies:
        fold_weight_standardization(m)
    folded = Ensemble(copies, mean, std, tta=False).eval()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "e.onnx"
        export_onnx(folded, size, path)
        session = create_session(path, "cpu")
        print(f"ensemble: {what}; torch {torch.__version__} threads {torch.get_num_threads()}, onnxruntime "
              f"intra-op threads = physical cores; CPU cores {os.cpu_count()}")
        print(f"{'batch':>5} {'pytorch img/s':>14} {'ort img/s':>10} {'ort/pytorch':>12}")
        rng = np.random.default_rng(0)
        for b in [int(x) for x in args.batches.split(",")]:
            images = rng.integers(0, 256, (b, size, size, 3), dtype=np.uint8)
            tensor = torch.from_numpy(images)

            def run_torch():
                with torch.inference_mode():
                    eager(tensor)

            def run_ort():
                session.run(None, {"images": images})

            time_rounds({"torch": run_torch, "ort": run_ort}, 1)          # warm-up
            t = time_rounds({"torch": run_torch, "ort": run_ort}, args.rounds)
            print(f"{b:>5} {b / t['torch']:>14.1f} {b / t['ort']:>10.1f} {t['torch'] / t['ort']:>11.2f}x", flush=True)


if __name__ == "__main__":
    main()
