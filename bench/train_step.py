"""Training throughput: the kit's real training loop vs a minimal hand-written PyTorch loop, same model,
batch and images, measured in one run.

    python bench/train_step.py [--model eca_nfnet_l0] [--img-size 64] [--batch-size 32] [--images 512]

The kit side is kit.train.fold.train_fold itself (its data pipeline with albumentations, AGC, EMA, warmup-cosine
schedule, NaN check, progress bar; AMP on CUDA); its images/s come from metrics.csv (training loop only,
validation excluded). The hand loop decodes the same files with the same loader, normalizes, and runs
forward/backward/SGD on the same model (the kit's architecture, dropout and drop-path rates and memory
layout: those define the model being trained, not the loop). Epoch 1 of each is warm-up; the ratio uses
the later epochs. --rounds N alternates hand and kit N times, so slow drift of the machine hits both; each
side runs in a fresh process.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import make_jpeg_competition  # noqa: E402
from kit.settings.config import load_config  # noqa: E402
from kit.core.table import train_table  # noqa: E402
from kit.train.device import activation_layout, resolve_device  # noqa: E402
from kit.train.fold import FoldData, train_fold  # noqa: E402
from kit.core.images import load_rgb  # noqa: E402
from kit.train.model import create_model, normalization  # noqa: E402
from kit.store.oof import read_history  # noqa: E402
from kit.store.rundir import RunDir  # noqa: E402
from kit.core.task import Multiclass  # noqa: E402


def hand_loop(table, y, train_rows, cfg, device, epochs) -> list[float]:
    torch.manual_seed(0)
    model = create_model(cfg.model, 2, drop_rate=cfg.drop_rate, drop_path_rate=cfg.drop_path_rate)
    layout = activation_layout(cfg.channels_last, device)
    model = model.to(device, memory_format=layout).train()
    mean, std = normalization(model)
    mean, std = np.array(mean, np.float32) * 255, np.array(std, np.float32) * 255
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=0.9, nesterov=True)

    class DS(torch.utils.data.Dataset):
        def __len__(self):
            return len(train_rows)

        def __getitem__(self, i):
            r = train_rows[i]
            x = (load_rgb(table.paths[r], cfg.img_size).astype(np.float32) - mean) / std
            return torch.from_numpy(x.transpose(2, 0, 1).copy()), int(y[r])

    loader = torch.utils.data.DataLoader(DS(), batch_size=cfg.batch_size, shuffle=True, drop_last=True,
                                         num_workers=cfg.num_workers, persistent_workers=cfg.num_workers > 0)
    rates = []
    for _ in range(epochs):
        t, n = time.time(), 0
        for xb, yb in loader:
            xb, yb = xb.to(device, memory_format=layout), yb.to(device)
            loss = torch.nn.functional.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            n += len(yb)
        rates.append(n / (time.time() - t))
    return rates


def run_side(args, kit_overrides: dict) -> list[float]:
    """One side's images/s per epoch after warm-up, in this (fresh) process."""
    data = Path(args.data)
    cfg = load_config(None, dict(data_dir=str(data), model=args.model, pretrained=False, img_size=args.img_size,
                                 batch_size=args.batch_size, epochs=args.epochs, num_workers=args.num_workers,
                                 device=args.device, run_dir=str(data.parent / f"run-{os.getpid()}"),
                                 **(kit_overrides if args.side == "kit" else {})))
    table = train_table(cfg)
    task = Multiclass.from_labels(table.labels)
    y = task.encode(table.labels)
    fold_of_row = np.arange(len(y)) % 8                          # fold 0 = 1/8 validation, as a stand-in
    if args.side == "hand":
        return hand_loop(table, y, np.flatnonzero(fold_of_row != 0), cfg, resolve_device(cfg.device), args.epochs)[1:]
    run = RunDir(cfg.run_dir)
    train_fold(cfg, task, FoldData(table, y, fold_of_row, 0), run)
    return [e.train_images_per_s for e in read_history(run.history(0))][1:]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="eca_nfnet_l0")
    p.add_argument("--img-size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--images", type=int, default=512)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--num-workers", type=int, default=2)
    p.add_argument("--rounds", type=int, default=2, help="hand, kit, hand, kit, ... (default 2 rounds)")
    p.add_argument("--device", default="auto")
    p.add_argument("--kit", action="append", default=[], metavar="KEY=VALUE",
                   help="a kit setting for the kit side only (repeatable), e.g. --kit ema=false to price a feature")
    p.add_argument("--side", choices=["hand", "kit"], help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    args = p.parse_args()
    import yaml
    kit_overrides = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.kit)}
    if args.side:
        print(json.dumps(run_side(args, kit_overrides)))
        return
    # each side runs in a fresh process, so neither inherits the other's global state (allocator, torch flags)
    rates = {"hand": [], "kit": []}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        make_jpeg_competition(data, args.images, max(args.img_size * 2, 64))
        for _ in range(args.rounds):
            for side in rates:
                out = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--side", side, "--data", str(data)],
                                     check=True, stdout=subprocess.PIPE, text=True).stdout
                rates[side] += json.loads(out.strip().splitlines()[-1])
    hand, kit = rates["hand"], rates["kit"]
    k, h = statistics.median(kit), statistics.median(hand)
    print(f"{args.model} @ {args.img_size}px, batch {args.batch_size}, {args.images * 7 // 8} train images, "
          f"{args.num_workers} workers, device {args.device}, {args.rounds} rounds of {args.epochs} epochs")
    print(f"hand loop: {', '.join(f'{r:.1f}' for r in hand)} images/s per epoch (after warm-up)")
    print(f"kit loop:  {', '.join(f'{r:.1f}' for r in kit)} images/s per epoch (kit defaults"
          f"{', ' + ', '.join(args.kit) if args.kit else ''})")
    print(f"kit / hand (medians): {k / h:.3f}x")


if __name__ == "__main__":
    main()
