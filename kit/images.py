"""Decode + resize, shared by training, validation and the predictor so all three see identical pixels.

Torch-free: the deployed predictor imports this with only numpy and Pillow.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from .errors import KitError


def load_rgb(path: str | Path, size: int) -> np.ndarray:
    """Image file -> uint8 array [size, size, 3]. Grayscale, palette and RGBA inputs are converted to RGB.

    JPEGs are decoded at the smallest DCT scale that still covers `size` (Pillow's draft mode), which makes
    large photos several times cheaper to load; the result is then resized bilinearly to exactly `size`.
    """
    try:
        with Image.open(path) as im:
            im.draft("RGB", (size, size))
            im = im.convert("RGB")
            if im.size != (size, size):
                im = im.resize((size, size), Image.BILINEAR)
            return np.array(im, dtype=np.uint8)
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise KitError(f"cannot read image {path}: {e}. Replace the file, or remove its row from the CSV") from None
