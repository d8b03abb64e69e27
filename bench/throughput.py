"""Training images per second: the kit against the hand-written loop of bench/recipe.py, one change at a time.

Every arm trains fold 0 of one dataset for a few epochs in a fresh process; its rate is the mean over the epochs
after the first (the first builds kernels and fills caches). The arms run one after the other, `--rounds` times in
alternating order, on a quiet machine; the report gives each arm's rate and its ratio to the hand loop's.

    python bench/throughput.py run [--dataset photo-patches-6k] [--arms hand,kit-resnet18,...] [--rounds 2]
    python bench/throughput.py report

Arms (ARMS below): `hand` is bench/recipe.py's hand loop (timm resnet18, batch 64, images decoded once into one
float tensor, flips, AdamW); `kit-*` arms are train.py with the flags given, each changing one thing from its
neighbour. A flag "!compile" wraps the network in torch.compile (compile time counted in the first epoch and
reported as such).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

_R18 = ["--model", "resnet18", "--batch-size", "64"]
_BF16 = ["--precision", "bf16"]
# every kit arm names its precision, so no result depends on what `auto` was when it ran (bf16 on the CPU until
# 2026-12-06 20:48, fp32 since: the rows recorded before say bf16 as they ran it)
ARMS: dict[str, list | None] = {
    "hand": None,
    # the kit on the hand loop's model and batch: the pipeline alone
    "kit-resnet18-files-fp32": [*_R18, "--cache-images", "off", "--num-workers", "2", "--precision", "fp32"],
    "kit-resnet18-fp32": [*_R18, "--precision", "fp32"],
    "kit-resnet18-bf16": [*_R18, *_BF16],
    "kit-resnet18-cl-bf16": [*_R18, "--channels-last", *_BF16],
    # the NF models
    "kit-nf_resnet18-b64-fp32": ["--model", "nf_resnet18", "--batch-size", "64", "--precision", "fp32"],
    "kit-nf_resnet18-b64-bf16": ["--model", "nf_resnet18", "--batch-size", "64", *_BF16],
    "kit-nf_resnet18-b64-cl-bf16": ["--model", "nf_resnet18", "--batch-size", "64", "--channels-last", *_BF16],
    "kit-nf_resnet18-b128-bf16": ["--model", "nf_resnet18", "--batch-size", "128", *_BF16],
    "kit-nf_resnet18-b128-fp32": ["--model", "nf_resnet18", "--batch-size", "128", "--precision", "fp32"],
    "kit-nf_resnet26-b32-files-fp32": ["--model", "nf_resnet26", "--batch-size", "32", "--cache-images", "off",
                                       "--num-workers", "2", "--precision", "fp32"],
    "kit-nf_resnet26-b32-bf16": ["--model", "nf_resnet26", "--batch-size", "32", *_BF16],
    "kit-nf_resnet26-b32-fp32": ["--model", "nf_resnet26", "--batch-size", "32", "--precision", "fp32"],
    "kit-nf_resnet18-b64-compile-bf16": ["--model", "nf_resnet18", "--batch-size", "64", "!compile", *_BF16],
}


def run_kit(args, flags: list[str]) -> dict:
    import train
    from kit.settings.cli import config_overrides
    from kit.settings.config import load_config
    from kit.train import run as training
    if "!compile" in flags:
        import torch
        import kit.train.step
        init = kit.train.step.Step.__init__

        def compiled(self, net, *a, **k):
            init(self, torch.compile(net), *a, **k)
        kit.train.step.Step.__init__ = compiled
    ns = train.parse_args(["--data-dir", args.data, "--no-pretrained", "--img-size", str(args.img_size), "--epochs",
                           str(args.epochs), "--fold", "0", "--folds-csv", args.folds_csv, "--run-dir", args.run_dir,
                           *[f for f in flags if not f.startswith("!")]])
    cfg = load_config(None, config_overrides(ns))
    t = time.time()
    training.run(cfg, "0")
    seconds = time.time() - t
    rows = (Path(args.run_dir) / "fold0" / "metrics.csv").read_text().splitlines()[1:]
    rates = [float(r.split(",")[-1]) for r in rows]
    plan = json.loads((Path(args.run_dir) / "fold0" / "plan.json").read_text())
    return {"rates": rates, "seconds": seconds, "epoch_seconds": [float(r.split(",")[-2]) for r in rows],
            "plan": plan}


def run_hand(args) -> dict:
    from bench.recipe import run_hand as hand
    out = hand(argparse.Namespace(data=args.data, seed=0, fold=0, folds_csv=args.folds_csv, img_size=args.img_size,
                                  epochs=args.epochs))
    return {"rates": out["train_images_per_s"], "seconds": out["seconds"]}


def one(args) -> None:
    flags = json.loads(args.flags)
    result = run_hand(args) if flags is None else run_kit(args, flags)
    print(json.dumps(result))


def run_all(args) -> None:
    from bench.datasets import build
    from bench.recipe import make_split
    data = build(args.dataset, Path(args.data_root))
    work = Path(args.work)
    folds_csv = work / f"{args.dataset}-folds.csv"
    make_split(data, folds_csv, 0)
    arms = args.arms.split(",")
    for r in range(args.rounds):
        for arm in (arms if r % 2 == 0 else arms[::-1]):
            run_dir = work / "runs" / arm
            subprocess.run(["rm", "-rf", str(run_dir)], check=True)
            cmd = [sys.executable, __file__, "one", "--data", str(data), "--folds-csv", str(folds_csv), "--run-dir",
                   str(run_dir), "--img-size", str(args.img_size), "--epochs", str(args.epochs), "--flags",
                   json.dumps(ARMS[arm])]
            out = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            if out.returncode:
                print(f"{arm}: FAILED\n{out.stderr[-3000:]}", flush=True)
                continue
            result = json.loads(out.stdout.strip().splitlines()[-1])
            result.update(arm=arm, round=r, dataset=args.dataset, epochs=args.epochs, img_size=args.img_size,
                          date=time.strftime("%Y-%m-%d"), machine=f"{platform.processor() or platform.machine()}, "
                          f"{os.cpu_count()} cores", flags=ARMS[arm])
            with open(args.results, "a") as f:
                f.write(json.dumps(result) + "\n")
            steady = np.mean(result["rates"][1:]) if len(result["rates"]) > 1 else result["rates"][0]
            print(f"{arm:<32} round {r}: {steady:7.1f} images/s (epochs {', '.join(f'{x:.0f}' for x in result['rates'])})",
                  flush=True)


def report(args) -> None:
    rows = [json.loads(line) for line in Path(args.results).read_text().splitlines() if line.strip()]
    if args.dataset:
        rows = [r for r in rows if r["dataset"] == args.dataset]
    by_arm: dict = {}
    for r in rows:
        by_arm.setdefault(r["arm"], []).append(np.mean(r["rates"][1:]) if len(r["rates"]) > 1 else r["rates"][0])
    flags = {r["arm"]: r.get("flags") for r in rows}                # what ran, as recorded
    hand = np.mean(by_arm["hand"]) if "hand" in by_arm else None
    print("| arm | flags | training images/s (rounds) | / hand loop |")
    print("|---|---|---:|---:|")
    for arm, rates in by_arm.items():
        shown = " ".join(flags[arm]) if flags[arm] is not None else "(bench/recipe.py hand loop)"
        print(f"| {arm} | `{shown}` | {np.mean(rates):.1f} ({', '.join(f'{x:.0f}' for x in rates)}) | "
              f"{f'{np.mean(rates) / hand:.2f}x' if hand else '–'} |")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run")
    r.add_argument("--dataset", default="photo-patches-6k")
    r.add_argument("--arms", default=",".join(ARMS))
    r.add_argument("--rounds", type=int, default=2)
    r.add_argument("--epochs", type=int, default=3)
    r.add_argument("--img-size", type=int, default=32)
    r.add_argument("--data-root", default="data")
    r.add_argument("--work", default="runs/bench_throughput")
    r.add_argument("--results", default="bench/results/throughput.jsonl")
    rep = sub.add_parser("report")
    rep.add_argument("--results", default="bench/results/throughput.jsonl")
    rep.add_argument("--dataset")
    o = sub.add_parser("one")
    for name in ("--data", "--folds-csv", "--run-dir", "--flags"):
        o.add_argument(name)
    for name in ("--img-size", "--epochs"):
        o.add_argument(name, type=int)
    args = p.parse_args()
    if args.command == "run":
        Path(args.results).parent.mkdir(parents=True, exist_ok=True)
        run_all(args)
    elif args.command == "report":
        report(args)
    else:
        os.environ.setdefault("PYTHONHASHSEED", "0")
        one(args)


if __name__ == "__main__":
    main()
