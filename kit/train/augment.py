"""Per-image training augmentation, run by the loader workers; images leave as uint8 and are normalized (and
mixed, kit.train.batch) on the device.

Two input paths (kit.train.loader picks the decoder):
  - resize-first (crop_scale 0): the image arrives at the training size (kit.core.images.load_rgb), for tiny images
    such as digits, where cropping would cut away most of the little there is;
  - crops from the source (crop_scale > 0): the image arrives at a bounded size above the training size
    (kit.core.images.load_source) and RandomResizedCrop cuts the training view from it, so zooming in shows real
    pixels instead of magnified ones (natural photos).
Then flips, the affine/brightness/contrast steps (or RandAugment / TrivialAugment, timm's), and cutout.
Every image's randomness comes from its own seed (kit.train.loader.EpochSampler), so runs are reproducible and
resumable whatever the number of workers.
"""
from __future__ import annotations

import random

import albumentations as A
import cv2
import numpy as np
from PIL import Image
from timm.data.auto_augment import rand_augment_transform

# OpenCV's own thread pool does not survive fork(): a DataLoader worker forked after the parent ran an OpenCV
# op can hang on it. Parallelism comes from the workers, so OpenCV runs single-threaded everywhere.
cv2.setNumThreads(1)


def source_side(cfg) -> int:
    """Shorter side of the decoded source image in crop mode: large enough that even the smallest crop
    (area crop_scale) holds img_size pixels per side, and at most 4x the training size."""
    return int(min(4.0, max(1.25, 1.0 / cfg.crop_scale ** 0.5)) * cfg.img_size)


def policy_name(cfg) -> str | None:
    """timm's config string of the RandAugment / TrivialAugment policy, or None."""
    if cfg.trivialaugment:
        return "rand-n1-m10-mstd101-p1.0"          # one op per image, magnitude uniform in [0, 10]
    if cfg.randaugment:
        return f"rand-n{cfg.randaugment_ops}-m{cfg.randaugment}-mstd0.5"
    return None


class TrainAugment:
    """uint8 HWC image + seed -> augmented uint8 [img_size, img_size, 3]."""

    def __init__(self, cfg):
        size = cfg.img_size
        first = [A.RandomResizedCrop(size=(size, size), scale=(cfg.crop_scale, 1.0), area_for_downscale="image")] \
            if cfg.crop_scale > 0 else []
        steps = first + [
            A.HorizontalFlip(p=cfg.aug_hflip),
            A.VerticalFlip(p=cfg.aug_vflip),
            A.Affine(translate_percent=(-0.0625, 0.0625), scale=(0.9, 1.1), rotate=(-15, 15),
                     p=cfg.aug_shift_scale_rotate),
            A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2, p=cfg.aug_brightness_contrast),
        ]
        self.spatial = A.Compose([s for s in steps if s.p > 0], p=1.0)
        self.cutout = A.CoarseDropout(num_holes_range=(1, 4), hole_height_range=(max(1, size // 16), max(1, size // 6)),
                                      hole_width_range=(max(1, size // 16), max(1, size // 6)),
                                      p=cfg.aug_coarse_dropout) if cfg.aug_coarse_dropout > 0 else None
        name = policy_name(cfg)
        self.policy = rand_augment_transform(name, {"translate_const": int(size * 0.45), "img_mean": (124, 116, 104)}) \
            if name else None

    def __call__(self, image: np.ndarray, seed: int) -> np.ndarray:
        np_rng, py_rng = np.random.default_rng(seed), random.Random(seed)
        self.spatial.set_random_state(np_rng, py_rng)
        image = self.spatial(image=image)["image"]
        if self.policy is not None:
            image = self._policy(image, seed)
        if self.cutout is not None:
            self.cutout.set_random_state(np_rng, py_rng)
            image = self.cutout(image=image)["image"]
        return image

    def _policy(self, image: np.ndarray, seed: int) -> np.ndarray:
        """timm's RandAugment draws from the global `random` and numpy RNGs: seed them for this image and put
        them back, so the process's own streams (saved in resumable checkpoints) are untouched."""
        py_state, np_state = random.getstate(), np.random.get_state()
        random.seed(seed)
        np.random.seed(seed % 2**32)
        try:
            return np.array(self.policy(Image.fromarray(image)), dtype=np.uint8)
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)
