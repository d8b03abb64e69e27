"""Is the model fed? Decode + augment images/s of the kit's data pipeline for 0 (main process), 1, 2 and the
default number of workers, against the images/s the training step consumes, measured in one run.

    python bench/data.py [--img-size 224] [--source-size 512] [--model eca_nfnet_l0]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import make_jpeg_competition  # noqa: E402
from kit.train.augment import TrainAugment  # noqa: E402
from kit.settings.config import load_config  # noqa: E402
from kit.core.table import train_table  # noqa: E402
from kit.train.cache import FileImages  # noqa: E402
from kit.train.loader import EpochSampler, ImageDataset, make_loader, train_decoder  # noqa: E402
from kit.core.task import Multiclass  # noqa: E402
from kit.train.model import create_model  # noqa: E402


def pipeline_rate(dataset, rows, batch_size, workers, batches) -> float:
    sampler = EpochSampler(rows, 0, shuffle=True)
    loader = make_loader(dataset, sampler, batch_size, workers, pin_memory=False, seed=0)
    it = iter(loader)
    next(it)                                             # worker start-up is not throughput
    t, n = time.perf_counter(), 0
    for _ in range(batches):
        n += len(next(it)[0])
    return n / (time.perf_counter() - t)


def step_rates(model_name, img_size, batch_size, rounds: int = 4) -> tuple[float, float]:
    """Training-step images/s (contiguous, channels_last), the two layouts alternating step by step so that
    the machine's drift hits both alike."""
    x, y = torch.randn(batch_size, 3, img_size, img_size), torch.randint(0, 2, (batch_size,))
    sides = []
    for layout in (torch.contiguous_format, torch.channels_last):
        torch.manual_seed(0)
        model = create_model(model_name, 2).to(memory_format=layout)
        sides.append((model, torch.optim.SGD(model.parameters(), lr=1e-3), x.contiguous(memory_format=layout), []))
    for r in range(rounds + 1):
        for model, opt, xb, times in sides:
            t = time.perf_counter()
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(xb), y).backward()
            opt.step()
            if r:                                        # round 0 is warm-up
                times.append(time.perf_counter() - t)
    return tuple(batch_size / float(np.median(times)) for *_, times in sides)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--source-size", type=int, default=512, help="side of the JPEG files on disk")
    p.add_argument("--model", default="eca_nfnet_l0")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--batches", type=int, default=8)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        make_jpeg_competition(root, args.batch_size * (args.batches + 2), args.source_size)
        cfg = load_config(None, {"data_dir": str(root), "img_size": args.img_size})
        table = train_table(cfg)
        dataset = ImageDataset(FileImages(table.paths, train_decoder(cfg)),
                               Multiclass.from_labels(table.labels).encode(table.labels), TrainAugment(cfg))
        rows = np.arange(len(table.paths))
        print(f"{len(rows)} JPEGs of {args.source_size}px -> {args.img_size}px, batch {args.batch_size}, "
              f"{torch.get_num_threads()} torch threads")
        rates = {}
        for workers in (0, 1, 2):
            rates[workers] = pipeline_rate(dataset, rows, args.batch_size, workers, args.batches)
            print(f"data pipeline, {workers} worker(s){' (the default without a cache)' if workers == 2 else ''}: "
                  f"{rates[workers]:7.1f} images/s", flush=True)
        plain, last = step_rates(args.model, args.img_size, args.batch_size)
        print(f"training step {args.model} @ {args.img_size}px: {plain:.1f} images/s (contiguous), "
              f"{last:.1f} images/s (channels_last, {last / plain:.2f}x)")
        default = rates[2]
        print(f"default pipeline / step consumption: {default / max(plain, last):.1f}x "
              f"({'fed' if default >= max(plain, last) else 'STARVED'})")


if __name__ == "__main__":
    main()
