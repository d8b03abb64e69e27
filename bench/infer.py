"""Inference throughput on one fold ensemble, every engine measured side by side in one run:
PyTorch eager, onnxruntime fp32 with weight standardization folded (what the kit exports), onnxruntime fp32
of the unfolded graph (timm's plain export), and onnxruntime int8 (static QDQ).

    python bench/infer.py                          # the trained run in runs/default (the demo); int8 agreement
    python bench/infer.py --synthetic nfnet_l0     # 5 random-weight nfnet_l0 folds at 224 px

Prints images/s per batch size, the ratios, and ORT's achieved GFLOP/s against bench/peak.py's GEMM peak.
Rounds alternate between engines and the median round counts, so a noisy machine hits all of them alike.
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
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.peak import gemm_peak  # noqa: E402
from kit.export.ensemble import Ensemble, WeightedHead  # noqa: E402
from kit.train.members import fold_weight_standardization, load_members  # noqa: E402
from kit.export.int8 import quantize_graph  # noqa: E402
from kit.train.model import create_model, normalization  # noqa: E402
from kit.export.onnx_export import export_onnx  # noqa: E402
from kit.runtime.predictor import create_session  # noqa: E402
from kit.store.rundir import RunDir  # noqa: E402
from kit.core.task import Multiclass  # noqa: E402


def build(args):
    if args.synthetic:
        torch.manual_seed(0)
        models = [create_model(args.synthetic, 10).eval() for _ in range(args.folds)]
        mean, std = normalization(models[0])
        return models, mean, std, args.img_size, None, f"{args.folds}x {args.synthetic} @ {args.img_size}px (random weights)"
    members = load_members(RunDir(args.run_dir))
    cfg = members[0].config
    return [m.model for m in members], members[0].mean, members[0].std, cfg.img_size, members, \
        f"{len(members)}x {cfg.model} @ {cfg.img_size}px ({args.run_dir})"


def ensemble(models, mean, std, size):
    n = len(models)
    classes = [str(i) for i in range(models[0].get_classifier().out_features)]
    return Ensemble(models, [size] * n, [mean] * n, [std] * n, [["identity"]] * n, [0] * n, Multiclass(classes),
                    WeightedHead([1.0])).eval()


def time_rounds(fns: dict, rounds: int) -> dict:
    times = {k: [] for k in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def quantized(fp32: Path, members, size: int) -> tuple[Path, str]:
    """int8 graph: calibrated like the kit does (training images of the run) or, without a run, on random images."""
    out = fp32.with_name("int8.onnx")
    if members is None:
        quantize_graph(fp32, out, np.random.default_rng(1).integers(0, 256, (32, size, size, 3), dtype=np.uint8))
        return out, "agreement: n/a (random weights)"
    from kit.core.table import train_table, training_images
    from kit.export.build import sample_rows
    from kit.core.images import load_rgb
    from kit.export import twin
    from kit.export.int8 import CALIBRATION_IMAGES, sample_images
    from kit.store.oof import read_oof
    cfg = members[0].config
    oof = read_oof([m.run.oof(m.fold) for m in members])
    rows = sample_rows(oof, twin.EVAL_IMAGES)
    evaluation = np.stack([load_rgb(p, size) for p in training_images(cfg, [oof.ids[i] for i in rows])])
    result = twin.make("int8", fp32, evaluation, lambda path, agreement: None, members[0].task,
                       sample_images(train_table(cfg).paths, size, CALIBRATION_IMAGES), out=out)
    return out, (f"fp32/int8 agreement on {result['images']} OOF images: {100 * result['agreement']:.1f}%, "
                 f"mean |Δprob| {result['mean_abs_diff']:.2g}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run-dir", default="runs/default")
    p.add_argument("--synthetic", help="timm model name: benchmark random-weight folds of it instead of a run")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--batches", default="1,16,64")
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()

    models, mean, std, size, members, what = build(args)
    torch.set_num_threads(os.cpu_count())
    eager = ensemble(models, mean, std, size)
    copies = [copy.deepcopy(m) for m in models]
    for m in copies:
        fold_weight_standardization(m)
    folded = ensemble(copies, mean, std, size)
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        folded(torch.zeros(1, size, size, 3, dtype=torch.uint8))
    flops_per_image = counter.get_total_flops()
    peak = gemm_peak(seconds=2.0)
    with tempfile.TemporaryDirectory() as tmp:
        paths = {"folded": Path(tmp) / "folded.onnx", "plain": Path(tmp) / "plain.onnx"}
        export_onnx(folded, size, paths["folded"])
        export_onnx(eager, size, paths["plain"])
        int8_path, int8_note = quantized(paths["folded"], members, size)
        sessions = {"folded": create_session(paths["folded"], "cpu"), "plain": create_session(paths["plain"], "cpu"),
                    "int8": create_session(int8_path, "cpu")}
        print(f"ensemble: {what}; {flops_per_image / 1e9:.2f} GFLOP/image; {os.cpu_count()} cores, torch "
              f"{torch.__version__} ({torch.get_num_threads()} threads), fp32 GEMM peak {peak:.0f} GFLOP/s")
        print(f"int8 {int8_note}")
        print(f"{'batch':>5} | images/s: {'pytorch':>8} {'ort fp32':>9} {'ort plain':>9} {'ort int8':>9} | "
              f"{'ort/pytorch':>11} {'folded/plain':>12} {'int8/fp32':>9} | ort fp32 GFLOP/s (% of peak)")
        rng = np.random.default_rng(0)
        for b in [int(x) for x in args.batches.split(",")]:
            images = rng.integers(0, 256, (b, size, size, 3), dtype=np.uint8)
            tensor = torch.from_numpy(images)

            def run_torch():
                with torch.inference_mode():
                    eager(tensor)

            fns = {"pytorch": run_torch}
            fns.update({name: (lambda s=s: s.run(None, {"images": images})) for name, s in sessions.items()})
            time_rounds(fns, 1)                                                  # warm-up
            t = time_rounds(fns, args.rounds)
            rate = {k: b / v for k, v in t.items()}
            gflops = flops_per_image * rate["folded"] / 1e9
            print(f"{b:>5} | {'':>9} {rate['pytorch']:>8.1f} {rate['folded']:>9.1f} {rate['plain']:>9.1f} "
                  f"{rate['int8']:>9.1f} | {rate['folded'] / rate['pytorch']:>10.2f}x "
                  f"{rate['folded'] / rate['plain']:>11.2f}x {rate['int8'] / rate['folded']:>8.2f}x | "
                  f"{gflops:.0f} ({100 * gflops / peak:.0f}%)", flush=True)


if __name__ == "__main__":
    main()
