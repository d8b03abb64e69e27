"""Images -> uint8 batches: the dataset, the sampler that makes data order and augmentation a pure function of
(seed, epoch, position), and the DataLoaders of one fold.

Items travel as uint8 NHWC (the layout the ONNX graph takes); kit.train.batch normalizes them where the model runs.
"""
from __future__ import annotations

import contextlib
import functools
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from kit.core.errors import KitError
from kit.train.augment import source_side
from kit.core.images import load_rgb, load_source


class ImageDataset(Dataset):
    """Items are keyed by (row index, augmentation seed); seed < 0 means no augmentation (validation).

    An item is (uint8 image [H, W, 3], target). `images[i]` is row i's decoded image (kit.train.cache: the file
    decoded now, or its copy in memory); `augment(image, seed)` is kit.train.augment.TrainAugment.
    """

    def __init__(self, images, targets: np.ndarray, augment=None):
        self.images, self.targets, self.augment = images, targets, augment

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key):
        i, seed = key
        image = self.images[i]
        if seed >= 0 and self.augment is not None:
            image = self.augment(image, seed)
        return torch.from_numpy(np.ascontiguousarray(image)), torch.as_tensor(self.targets[i])


def decoder(size: int) -> Callable[[Path], np.ndarray]:
    """Whole image at size x size: validation, the resize-first training path, and what the predictor does."""
    return functools.partial(load_rgb, size=size)


def train_decoder(cfg) -> Callable[[Path], np.ndarray]:
    return functools.partial(load_source, side=source_side(cfg)) if cfg.crop_scale > 0 else decoder(cfg.img_size)


class EpochSampler(Sampler):
    """Keys (row, augmentation seed) of this process's share of each global batch.

    The epoch's order and every sample's augmentation seed depend only on (seed, epoch, position), so training
    resumes mid-epoch exactly, and N processes at batch B see the same global batches as one process at
    batch N*B. Validation (shuffle=False) takes every world-th row, no augmentation. `weights` (per index): each
    epoch draws as many indices, with replacement, in proportion to them (the class-balanced samplers).
    """

    def __init__(self, indices: np.ndarray, seed: int, shuffle: bool, batch_size: int = 1, rank: int = 0,
                 world: int = 1, weights: np.ndarray | None = None):
        self.indices, self.seed, self.shuffle = indices, seed, shuffle
        self.weights = torch.as_tensor(weights, dtype=torch.float64) if weights is not None else None
        self.batch_size, self.rank, self.world = batch_size, rank, world
        self.epoch, self.start_batch, self.stop_batch = 0, 0, None
        self.idle = False                   # yields nothing while set (see start_workers)

    def set_epoch(self, epoch: int, start_batch: int = 0, stop_batch: int | None = None) -> None:
        """The epoch's global batches from `start_batch` (a resumed epoch) up to `stop_batch` (a budget's partial
        last epoch: its first batches in the same order; None: every batch)."""
        self.epoch, self.start_batch, self.stop_batch = epoch, start_batch, stop_batch

    @property
    def _stop(self) -> int:
        return self.global_batches if self.stop_batch is None else min(self.stop_batch, self.global_batches)

    @property
    def global_batches(self) -> int:
        return len(self.indices) // (self.batch_size * self.world)

    def __len__(self) -> int:
        if self.idle:
            return 0
        if not self.shuffle:
            return len(self.indices[self.rank::self.world])
        return (self._stop - self.start_batch) * self.batch_size

    def __iter__(self):
        if self.idle:
            return
        if not self.shuffle:
            yield from ((int(i), -1) for i in self.indices[self.rank::self.world])
            return
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        if self.weights is None:
            order = self.indices[torch.randperm(len(self.indices), generator=g).numpy()]
        else:
            order = self.indices[torch.multinomial(self.weights, len(self.indices), True, generator=g).numpy()]
        step = self.batch_size * self.world
        for k in range(self.start_batch, self._stop):
            first = k * step + self.rank * self.batch_size
            for pos in range(first, first + self.batch_size):
                seed = int(np.random.SeedSequence([self.seed, self.epoch, pos]).generate_state(1)[0])
                yield int(order[pos]), seed


@contextlib.contextmanager
def worker_errors(what: str):
    """A KitError raised while loading (an image that became unreadable after the pre-check passed) as one line
    saying `what` ran; from a loader worker it arrives wrapped in the worker's traceback text, which is dropped."""
    try:
        yield
    except KitError as e:
        text = str(e).strip()
        if "Traceback" in text:
            last = text.splitlines()[-1]
            text = last.split(": ", 1)[1] if ": " in last else last
        raise KitError(f"{what}: {text}") from None


def class_balance(classes: np.ndarray, rule: str) -> np.ndarray | None:
    """Sampling weights per image from its class: `balanced` 1/n (every class as often), `sqrt` 1/sqrt(n) (in
    proportion to the square root of its count); None for `none` (each image once per epoch)."""
    if rule == "none":
        return None
    counts = np.bincount(classes).astype(np.float64)[classes]
    return 1.0 / (counts if rule == "balanced" else np.sqrt(counts))


def _worker_init(_):
    torch.set_num_threads(1)            # the workers are the parallelism; don't oversubscribe the cores


def make_loader(dataset: Dataset, sampler: EpochSampler, batch_size: int, num_workers: int, pin_memory: bool,
                seed: int) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                      pin_memory=pin_memory, worker_init_fn=_worker_init, persistent_workers=num_workers > 0,
                      generator=torch.Generator().manual_seed(seed))        # keeps the global RNG untouched


def start_workers(loader: DataLoader) -> None:
    """Fork the loader's persistent workers now, with nothing to load.

    Forked while this process is small, they share no memory pages with the model and optimizer created
    afterwards; forked later, every page the training step writes is first copied (copy-on-write), which cost
    the epoch after the first validation ~10 % on the CPU (bench/train_step.py).
    """
    if loader.num_workers:
        loader.sampler.idle = True
        iter(loader)
        loader.sampler.idle = False
