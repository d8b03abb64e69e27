"""Image files -> uint8 RGB arrays: the one decoder of training, validation, int8 calibration and the predictor,
so all of them see identical pixels. Torch-free: the deployed predictor imports it with numpy and Pillow only.

The decoding rule, for every mode Pillow opens:
  - 8-bit modes (1, L, P, RGB, RGBA, LA, PA, CMYK, YCbCr, ...): Pillow's conversion to RGB; alpha is dropped.
    16-bit-per-channel RGB files open as 8-bit RGB (Pillow keeps each channel's high byte).
  - 16-bit grayscale (I;16, I;16B, ...; medical and satellite scans): value * 255 / 65535, rounded.
  - 32-bit integer (I): the same rule when every value is in 0..65535 (16-bit data stored as I); refused
    otherwise, since no bit depth says what the values mean.
  - 32-bit float (F): value * 255 when every value is in [0, 1]; refused otherwise (NaN, or another range).
Then EXIF orientation is applied (as browsers and OpenCV do), then the bilinear resize.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from kit.core.errors import KitError

_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N")
_OBJECT_REPR = re.compile(r"<[^<>]* at 0x[0-9a-fA-F]+>")


class ImageError(KitError):
    """An image file that cannot be decoded into RGB; `reason` says why without naming the file."""

    def __init__(self, message: str, reason: str = ""):
        super().__init__(message)
        self.reason = reason


def _scaled(values: np.ndarray, scale: float) -> np.ndarray:
    return np.clip(np.rint(values * scale), 0, 255).astype(np.uint8)


def to_rgb(im: Image.Image) -> Image.Image:
    """Any mode -> 8-bit RGB by the rule in the module docstring."""
    if im.mode in _SIXTEEN_BIT or im.mode in ("I", "F"):
        values = np.asarray(im)
        if im.mode == "F":
            if not np.isfinite(values).all() or values.min() < 0 or values.max() > 1:
                raise ValueError(f"floating-point pixels must lie in [0, 1] (found {np.nanmin(values):.4g}.."
                                 f"{np.nanmax(values):.4g}{', NaN' if np.isnan(values).any() else ''}); scale the "
                                 f"images to [0, 1] or save them as 8/16-bit")
            gray = _scaled(values.astype(np.float64), 255.0)
        else:
            if im.mode == "I" and (values.min() < 0 or values.max() > 65535):
                raise ValueError(f"32-bit integer pixels outside 0..65535 (found {values.min()}..{values.max()}); "
                                 f"save the images as 8- or 16-bit")
            gray = _scaled(values.astype(np.float64), 255.0 / 65535.0)
        return Image.fromarray(gray).convert("RGB")
    return im if im.mode == "RGB" else im.convert("RGB")


def open_rgb(path: str | Path, draft_size: int | None = None) -> Image.Image:
    """Decode `path` to an upright 8-bit RGB image. `draft_size`: let a JPEG decode at the smallest DCT scale
    (1/2, 1/4, 1/8) that still covers that size on both sides, which makes large photos several times cheaper."""
    try:
        with Image.open(path) as im:
            if draft_size:
                im.draft("RGB", (draft_size, draft_size))
            im = ImageOps.exif_transpose(im)
            return to_rgb(im)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        reason = _OBJECT_REPR.sub("the data", f"{type(e).__name__}: {e}")       # never a Python object's repr
        name = path if isinstance(path, (str, Path)) else "the uploaded data"
        raise ImageError(f"cannot read image {name}: {reason}. Replace the file", reason) from None


def load_rgb(path: str | Path, size: int) -> np.ndarray:
    """Image file -> uint8 array [size, size, 3]: decoded by the rule above, resized bilinearly."""
    im = open_rgb(path, size)
    if im.size != (size, size):
        im = im.resize((size, size), Image.BILINEAR)
    return np.array(im, dtype=np.uint8)


def load_source(path: str | Path, side: int) -> np.ndarray:
    """Image file -> uint8 array [H, W, 3] with its shorter side at most `side`, aspect kept: the source that
    training crops are cut from (kit.train.augment). JPEGs decode at the smallest DCT scale that still covers it."""
    im = open_rgb(path, side)
    scale = side / min(im.size)
    if scale < 1:
        im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), Image.BILINEAR)
    return np.array(im, dtype=np.uint8)
