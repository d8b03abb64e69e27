"""Does the kit's default recipe beat what people do by hand? The demo config (eca_nfnet_l0 + AGC + SGD,
warmup-cosine, EMA, augmentation) against a BatchNorm ResNet18 trained by a plain hand-written loop
(AdamW 1e-3, cosine, no augmentation), same epochs, image size, batch and folds, best epoch by validation
accuracy for both. On the demo digits and on a harder variant (rotated, blurred by down/up-scaling, noisy).

    python bench/recipe.py [--folds 0,1]
"""
from __future__ import annotations

import argparse
import csv
import math
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from kit import demo, training  # noqa: E402
from kit.config import load_config  # noqa: E402
from kit.data import train_table  # noqa: E402
from kit.folds import load_or_create  # noqa: E402
from kit.images import load_rgb  # noqa: E402
from kit.model import IMAGENET_MEAN, IMAGENET_STD, create_model  # noqa: E402
from kit.task import Multiclass  # noqa: E402


def hard_variant(src: Path, dst: Path, seed: int = 0) -> Path:
    """Same ids, labels and split; each image rotated up to ±30°, down-scaled to 5x5 and back, noised."""
    if (dst / "train.csv").exists():
        return dst
    rng = np.random.default_rng(seed)
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for folder in ("train_images", "test_images"):
        (tmp / folder).mkdir(parents=True)
        for path in sorted((src / folder).iterdir()):
            img = Image.open(path).convert("L").resize((32, 32), Image.BILINEAR)
            img = img.rotate(float(rng.uniform(-30, 30)), resample=Image.BILINEAR)
            img = img.resize((5, 5), Image.BILINEAR).resize((8, 8), Image.BILINEAR)
            arr = np.clip(np.asarray(img, np.float32) + rng.normal(0, 40, (8, 8)), 0, 255).astype(np.uint8)
            Image.fromarray(arr).save(tmp / folder / path.name)
    for name in ("train.csv", "sample_submission.csv", "solution.csv"):
        shutil.copy(src / name, tmp / name)
    tmp.rename(dst)
    return dst


def kit_score(data_dir: Path, fold: int, run_dir: Path, folds_csv: Path) -> float:
    shutil.rmtree(run_dir, ignore_errors=True)
    cfg = load_config(None, {"data_dir": str(data_dir), "run_dir": str(run_dir), "folds_csv": str(folds_csv)},
                      base=demo.DEMO_CONFIG)
    return training.run(cfg, str(fold))["folds"][fold]["score"]


def resnet_score(data_dir: Path, fold: int, folds_csv: Path) -> float:
    """The hand-written baseline: what a competitor types in a notebook."""
    base = load_config(None, {"data_dir": str(data_dir)}, base=demo.DEMO_CONFIG)
    table = train_table(base)
    fold_of = load_or_create(folds_csv, table, table.labels, None, base.seed)
    y = Multiclass.from_labels(table.labels).encode(table.labels)
    mean = np.array(IMAGENET_MEAN, np.float32) * 255
    std = np.array(IMAGENET_STD, np.float32) * 255
    x = np.stack([(load_rgb(p, base.img_size).astype(np.float32) - mean) / std for p in table.paths])
    x = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
    tr, va = np.flatnonzero(fold_of != fold), np.flatnonzero(fold_of == fold)
    torch.manual_seed(0)
    model = create_model("resnet18", len(set(y)))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    steps = base.epochs * (len(tr) // base.batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
    g = torch.Generator().manual_seed(0)
    best = 0.0
    for _ in range(base.epochs):
        model.train()
        order = tr[torch.randperm(len(tr), generator=g).numpy()]
        for i in range(0, len(order) - base.batch_size + 1, base.batch_size):
            b = order[i:i + base.batch_size]
            loss = torch.nn.functional.cross_entropy(model(x[b]), torch.from_numpy(y[b]))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        model.eval()
        with torch.no_grad():
            pred = torch.cat([model(x[va[i:i + 256]]).argmax(1) for i in range(0, len(va), 256)]).numpy()
        best = max(best, float(np.mean(pred == y[va])))
    return best


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--folds", default="0,1")
    p.add_argument("--work-dir", default="runs/bench_recipe")
    args = p.parse_args()
    work = Path(args.work_dir)
    digits = demo.materialize()
    datasets = {"digits": digits, "digits-hard": hard_variant(digits, Path("data/digits_hard"))}
    folds_csv = work / "folds.csv"                      # the same ids and labels: one split serves both
    print(f"{'dataset':<12} {'fold':>4} {'kit NFNet+AGC':>14} {'ResNet18 BN hand loop':>22} {'kit s':>6} {'hand s':>7}")
    results = []
    for name, data_dir in datasets.items():
        for fold in [int(k) for k in args.folds.split(",")]:
            t = time.time()
            kit = kit_score(data_dir, fold, work / f"{name}_fold{fold}", folds_csv)
            t_kit, t = time.time() - t, time.time()
            hand = resnet_score(data_dir, fold, folds_csv)
            results.append((name, kit, hand))
            print(f"{name:<12} {fold:>4} {kit:>14.4f} {hand:>22.4f} {t_kit:>6.0f} {time.time() - t:>7.0f}", flush=True)
    for name in datasets:
        kit = np.mean([k for n, k, _ in results if n == name])
        hand = np.mean([h for n, _, h in results if n == name])
        print(f"{name}: mean val accuracy kit {kit:.4f} vs hand ResNet18 {hand:.4f} ({100 * (kit - hand):+.2f} points)")


if __name__ == "__main__":
    main()
