"""What MixUp/CutMix and RandAugment cost against the training step they feed, measured in one run.

    python bench/augment_cost.py [--model eca_nfnet_l0] [--img-size 64] [--batch-size 32]

- MixUp/CutMix run on the device, in the training step's critical path: the time of `Mixer` on a normalized
  batch, as a fraction of one training step (forward + backward + SGD) of the model on that batch.
- RandAugment runs in the loader workers, beside the step: the extra worker time per batch (RandAugment on vs
  off, same images and seeds), against the step. It costs the step nothing while the workers' time per batch
  stays below the step's time (bench/data.py: the default 2 workers feed the CPU step 100x over).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import median_time  # noqa: E402


def median_ms(fn, rounds: int) -> float:
    fn()                                                        # warm-up
    return 1000 * median_time(fn, rounds)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="eca_nfnet_l0")
    p.add_argument("--img-size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--rounds", type=int, default=10)
    args = p.parse_args()
    import timm
    from kit.train.augment import TrainAugment
    from kit.train.batch import Mixer
    from kit.settings.config import load_config
    torch.manual_seed(0)
    cfg = load_config(None, {"pretrained": False, "img_size": args.img_size, "batch_size": args.batch_size,
                             "mixup": 0.2, "cutmix": 1.0, "mix_prob": 1.0})
    b, s = args.batch_size, args.img_size
    model = timm.create_model(args.model, num_classes=10)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.randn(b, 3, s, s), torch.randint(0, 10, (b,))

    def step():
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()

    step_ms = median_ms(step, args.rounds)
    mixer = Mixer(cfg, b)
    counter = iter(range(10 ** 9))
    mix_ms = median_ms(lambda: mixer(x.clone(), 0, next(counter)), args.rounds * 20)
    clone_ms = median_ms(lambda: x.clone(), args.rounds * 20)     # the clone above is the benchmark's, not Mixer's
    images = [np.random.default_rng(i).integers(0, 256, (s, s, 3), dtype=np.uint8) for i in range(b)]
    plain = TrainAugment(load_config(None, {"pretrained": False, "img_size": s}))
    randaug = TrainAugment(load_config(None, {"pretrained": False, "img_size": s, "randaugment": 7}))
    plain_ms = median_ms(lambda: [plain(im, i) for i, im in enumerate(images)], args.rounds)
    ra_ms = median_ms(lambda: [randaug(im, i) for i, im in enumerate(images)], args.rounds)
    mix_net = mix_ms - clone_ms
    print(f"{args.model} @ {s} px, batch {b}, {torch.get_num_threads()} threads: training step {step_ms:.1f} ms")
    print("| piece | where | ms per batch | % of the step |\n|---|---|---:|---:|")
    print(f"| MixUp/CutMix (timm Mixup, batch mode) | step, critical path | {mix_net:.2f} | {100 * mix_net / step_ms:.2f} % |")
    print(f"| RandAugment (2 ops, magnitude 7), extra over the default augmentation | loader worker, beside the step "
          f"| {ra_ms - plain_ms:.2f} (worker total {ra_ms:.2f}) | {100 * (ra_ms - plain_ms) / step_ms:.2f} % of one "
          f"core's time per step |")


if __name__ == "__main__":
    main()
