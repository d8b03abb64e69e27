"""albumentations training augmentation. Images arrive decoded and resized by kit.images.load_rgb and leave
as uint8; normalization happens on the batch, where the model runs (kit.model.ImageNormalizer)."""
from __future__ import annotations

import albumentations as A
import cv2

# OpenCV's own thread pool does not survive fork(): a DataLoader worker forked after the parent ran an OpenCV
# op can hang on it. Parallelism comes from the workers, so OpenCV runs single-threaded everywhere.
cv2.setNumThreads(1)


def train_transform(cfg) -> A.Compose:
    size = cfg.img_size
    steps = [
        A.HorizontalFlip(p=cfg.aug_hflip),
        A.VerticalFlip(p=cfg.aug_vflip),
        A.Affine(translate_percent=(-0.0625, 0.0625), scale=(0.9, 1.1), rotate=(-15, 15),
                 p=cfg.aug_shift_scale_rotate),
        A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2, p=cfg.aug_brightness_contrast),
        A.CoarseDropout(num_holes_range=(1, 4), hole_height_range=(max(1, size // 16), max(1, size // 6)),
                        hole_width_range=(max(1, size // 16), max(1, size // 6)), p=cfg.aug_coarse_dropout),
    ]
    return A.Compose([s for s in steps if s.p > 0], p=1.0)

