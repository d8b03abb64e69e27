"""Pretrained weights with no download, for measuring the fine-tuning path (issue 34).

The kit trains MODEL on every image of a pretraining set that is none of the evaluation sets (bench/datasets.py:
`pretrain-mix`, 64 classes, photo windows of 12 bundled photos that photo-patches does not use and the letters A-z
drawn in bundled fonts and scanned as the digits are; `pretrain-photos`, the photo windows alone, the first round's)
with its own `--fold full`, and the weights are saved the way timm publishes a model on the Hugging Face hub:
OUT/DATASET/MODEL/config.json + model.safetensors. Then bench/recipe.py fine-tunes from that folder
(`--pretrained-file`) beside training from scratch, on the same folds:

    python bench/pretrain.py [--dataset pretrain-mix --model nf_resnet26 --epochs 6]
        # -> bench/pretrained/pretrain-mix/nf_resnet26/
    python bench/recipe.py run --datasets photo-patches --arms kit --seeds 0 --results bench/results/finetune.jsonl \
        --extra-arm 'finetune=["--pretrained-file","bench/pretrained/pretrain-mix/nf_resnet26"]'

The weights are not kept in git (bench/pretrained/ is ignored); the script rebuilds them in minutes.
"""
from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="pretrain-mix", choices=["pretrain-mix", "pretrain-photos"])
    p.add_argument("--model", default="nf_resnet26")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--img-size", type=int, default=32)
    p.add_argument("--data-root", default="data")
    p.add_argument("--work", default="runs/bench_pretrain")
    p.add_argument("--out", default="bench/pretrained")
    args = p.parse_args()
    from bench.datasets import build
    data = build(args.dataset, Path(args.data_root))
    run_dir = Path(args.work) / args.dataset / args.model
    if not (run_dir / "full" / "best.pt").is_file():         # trained already: only the hub folder is written again
        subprocess.run([sys.executable, "train.py", "--data-dir", str(data), "--fold", "full", "--model", args.model,
                        "--no-pretrained", "--img-size", str(args.img_size), "--epochs", str(args.epochs),
                        "--run-dir", str(run_dir), "--folds-csv", str(run_dir.parent / "folds.csv")], cwd=ROOT,
                       check=True)
    with open(data / "train.csv", newline="") as f:
        images = sum(1 for _ in f) - 1
    with open(run_dir / "full" / "metrics.csv", newline="") as f:       # the epochs' own seconds, reused or not
        seconds = sum(float(row["seconds"]) for row in csv.DictReader(f))

    import torch
    from safetensors.torch import save_file
    checkpoint = torch.load(run_dir / "full" / "best.pt", map_location="cpu", weights_only=True)
    state = {k: v.contiguous() for k, v in checkpoint["model"].items()}         # kit/store/state.py: best.pt
    classes = checkpoint["classes"]
    out = Path(args.out) / args.dataset / args.model
    out.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out / "model.safetensors"))
    (out / "config.json").write_text(json.dumps({
        "architecture": args.model, "num_classes": len(classes), "label_names": classes,
        "pretrained_cfg": {"input_size": [3, args.img_size, args.img_size],
                           "mean": checkpoint["mean"], "std": checkpoint["std"]},
        "kit_pretraining": {"data": args.dataset, "images": images, "epochs": args.epochs,
                            "seconds": round(seconds, 1), "date": time.strftime("%Y-%m-%d")}}, indent=1) + "\n")
    print(f"{out}: {args.model} pretrained {args.epochs} epochs on {data} in {seconds:.0f} s")


if __name__ == "__main__":
    main()
