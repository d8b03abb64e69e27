"""Images decoded once per run and kept in memory as uint8, instead of decoded again every epoch.

A source of images maps an index to a uint8 HWC array: FileImages decodes the file each time (the worker pipeline
of large images), CachedImages returns a decoded copy held in memory. Both run the same decoder
(kit.core.images), so a cached and an uncached run see identical pixels and, since the augmentation is a pure
function of (image, seed) (kit.train.augment), train identical models: `cache_images` only decides how fast.

Why: on small images the decode is a real share of an epoch and, with loader worker processes, competes with
the model for the same cores. With the images cached, the augmentation runs in the training process (76 us an
image at 32 px, 3 % of a step; bench/RESULTS.md "Training throughput, fourth wave") and no worker process is
started. The cache is built once per run and shared by its folds; pseudo-labelled test images join it.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from kit.core.errors import KitError
from kit.core.table import decode_every
from kit.settings.config import test_size
from kit.train.augment import source_side
from kit.train.loader import decoder, train_decoder

log = logging.getLogger(__name__)

MB = 1 << 20


class FileImages:
    """Decode the file on every access."""

    def __init__(self, paths: Sequence[Path], decode: Callable[[Path], np.ndarray]):
        self.paths, self.decode = list(paths), decode

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.decode(self.paths[i])


class CachedImages:
    """The images decoded once, held in memory."""

    def __init__(self, images: list):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.images[i]


class ImageStore:
    """The run's decoded images, one copy per (file, decoder), made the first time a fold (or the run's checks)
    asks for them and shared from then on."""

    def __init__(self, setting: str, limit_mb: int):
        self.setting, self.limit = setting, limit_mb * MB
        self.images: dict = {}
        self.held = 0

    def caches(self, paths: Sequence[Path], size: int, crops: bool) -> bool:
        """Whether these images are cached: `on`, or `auto` when they are resized whole to `size` (not cropped from
        a larger source) and fit the memory limit beside what is held."""
        if self.setting != "auto":
            return self.setting == "on"
        return not crops and len(paths) * size * size * 3 + self.held <= self.limit

    def source(self, paths: Sequence[Path], decode: Callable[[Path], np.ndarray], key: tuple, cache: bool):
        """Where the loader reads `paths` decoded by `decode` (`key` names the decoding): from memory (decoded now
        where not yet held; a corrupt file is an error naming it), or from the files every time."""
        if not cache:
            return FileImages(paths, decode)
        todo = [p for p in dict.fromkeys(map(str, paths)) if (key, p) not in self.images]
        if todo:
            t = time.time()
            decode_every([Path(p) for p in todo], decode, workers=1, keep=self._keeper(key, todo))
            log.info(f"images: {len(todo)} decoded into memory ({self.held / MB:.0f} MB held, {time.time() - t:.1f}s); "
                     f"later epochs and folds read them from there")
        return CachedImages([self.images[(key, str(p))] for p in paths])

    def sources(self, cfg, train_paths: Sequence[Path], val_paths: Sequence[Path]) -> tuple:
        """(training source, validation source, whether training reads memory) for a fold: training images as the
        training decoder gives them (whole at img_size, or the source that crops are cut from), validation images
        whole at the test size."""
        size, crops = test_size(cfg), cfg.crop_scale > 0
        cached = self.caches(train_paths, cfg.img_size, crops)
        train = self.source(train_paths, train_decoder(cfg), ("source", source_side(cfg)) if crops else
                            ("whole", cfg.img_size), cached)
        val = self.source(val_paths, decoder(size), ("whole", size), self.caches(val_paths, size, False))
        return train, val, cached

    def _keeper(self, key: tuple, todo: list[str]):
        """Stores each decoded image in order; past the memory limit, an error naming the setting."""
        names = iter(todo)

        def keep(image: np.ndarray) -> None:
            self.held += image.nbytes
            if self.held > self.limit:
                raise KitError(f"--cache-images {self.setting}: the decoded images need more than --cache-memory-mb "
                               f"{self.limit // MB} MB; raise it, or use --cache-images off")
            self.images[(key, next(names))] = image
        return keep
