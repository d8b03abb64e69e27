"""The one image decoder: every Pillow mode becomes 8-bit RGB by the documented rule, keeping the information,
and training, validation and the predictor get the same pixels from it."""
import numpy as np
import pytest
import torch
from PIL import Image

from kit.core.errors import KitError
from kit.core.images import load_rgb, open_rgb
from kit.train.cache import FileImages
from kit.train.loader import ImageDataset, decoder
from kit.runtime.predictor import image_batches

GRADIENT = np.linspace(0, 65535, 16 * 16).reshape(16, 16)


def _save(path, array, mode=None):
    (Image.fromarray(array, mode) if mode else Image.fromarray(array)).save(path)
    return path


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16_bit_grayscale_is_scaled_by_its_bit_depth(tmp_path, suffix):
    path = _save(tmp_path / f"x{suffix}", GRADIENT.astype(np.uint16))
    assert Image.open(path).mode.startswith("I;16")
    out = load_rgb(path, 16)
    want = np.rint(GRADIENT * 255 / 65535).astype(np.uint8)
    assert np.array_equal(out[..., 0], want) and np.array_equal(out[..., 0], out[..., 2])
    assert len(np.unique(out)) > 200            # convert("RGB") clipped all this to one or two values


def test_32_bit_integer_holding_16_bit_data(tmp_path):
    path = _save(tmp_path / "x.tif", GRADIENT.astype(np.int32), "I")
    assert np.array_equal(load_rgb(path, 16)[..., 1], np.rint(GRADIENT * 255 / 65535).astype(np.uint8))
    _save(path, (GRADIENT * 100).astype(np.int32), "I")
    with pytest.raises(KitError, match=r"cannot read image .*x.tif: ValueError: 32-bit integer pixels outside 0..65535"):
        load_rgb(path, 16)


def test_float_images_in_0_1_are_scaled_and_others_refused(tmp_path):
    unit = (GRADIENT / 65535).astype(np.float32)
    path = _save(tmp_path / "f.tif", unit, "F")
    assert np.array_equal(load_rgb(path, 16)[..., 0], np.rint(unit.astype(np.float64) * 255).astype(np.uint8))
    _save(path, unit * 1000, "F")
    with pytest.raises(KitError, match=r"floating-point pixels must lie in \[0, 1\] \(found 0\.\.1000\)"):
        load_rgb(path, 16)
    bad = unit.copy()
    bad[3, 3] = np.nan
    _save(path, bad, "F")
    with pytest.raises(KitError, match="NaN"):
        load_rgb(path, 16)


def test_exif_orientation_is_applied(tmp_path):
    pixels = np.zeros((4, 8, 3), np.uint8)
    pixels[:, :4] = 255                             # left half white
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6                                # "rotate 90° clockwise to display"
    image.save(tmp_path / "r.jpg", exif=exif, quality=100)
    out = np.asarray(open_rgb(tmp_path / "r.jpg"))
    assert out.shape == (8, 4, 3)                   # upright: as a browser or OpenCV shows it
    assert out[:2].mean() > 200 and out[-2:].mean() < 50


def test_training_validation_and_predictor_see_the_same_pixels(tmp_path):
    paths = [_save(tmp_path / "a.png", GRADIENT.astype(np.uint16)),
             _save(tmp_path / "b.png", (np.arange(16 * 16 * 3) % 256).reshape(16, 16, 3).astype(np.uint8))]
    dataset = ImageDataset(FileImages(paths, decoder(12)), np.zeros(2, dtype=np.int64))
    loaded = np.stack([dataset[(i, -1)][0].numpy() for i in range(2)])
    predicted = next(image_batches(paths, 12, 2, workers=2))
    assert np.array_equal(loaded, predicted)
    assert np.array_equal(loaded, np.stack([load_rgb(p, 12) for p in paths]))
    assert isinstance(dataset[(0, -1)][0], torch.Tensor)
