"""Benchmark competitions in Kaggle layout, built from data that ships inside installed packages (no download):

  digits        the kit's demo: scikit-learn's UCI handwritten digits (1797 8x8 scans), 1437 train / 360 test
  digits-hard   the same ids, labels and split; each scan rotated up to ±30°, blurred (5x5 and back), noised
  digits-hard-longtail  digits-hard with the training set cut to a 1:20 long tail over the classes (test untouched)
  photo-patches 12 classes = 12 of scikit-image's bundled sample photos (astronaut, brick, camera, chelsea, coffee,
                coins, grass, gravel, hubble_deep_field, immunohistochemistry, moon, rocket); each image is a
                random window (12-30 % of the photo's side, random aspect) of one of them, rotated, flipped,
                colour-jittered, sometimes grey, JPEG-compressed at 96x96 px. Train windows come from the left
                70 % of each photo and test windows from the right 30 %, so no test pixel was seen in training.
                1440 train / 480 test. A natural-photo task: which photo does this patch come from?
  photo-patches-6k  the same task at the scale of a small Kaggle set (CIFAR-10's shape): 10 of those photos, 600
                training and 200 test windows each, stored as 32x32 PNGs (6000 train / 2000 test). The set where
                throughput decides what fits a time budget (issue 28).
  pretrain-photos  12 other bundled images (PRETRAIN_PHOTOS: scikit-image's and scikit-learn's, none of the
                photo-patches photos), 1000 windows each at 32 px: the pretraining set of bench/pretrain.py (issue 34).
  glyphs        52 classes, the letters A-Z and a-z (no digit), each drawn in one of matplotlib's bundled fonts
                (DejaVu, STIX), scaled, rotated up to ±30°, stroked 1-3 px, and scanned as the digits
                are: 8x8 px, 17 grey levels, ink bright on black; then blurred and noised as digits-hard. 250 per class.
  pretrain-mix  pretrain-photos (500 windows per photo) and glyphs in one set of 64 classes (19,000 images): the
                pretraining set of bench/pretrain.py since the second fine-tuning round (issue 34), one checkpoint
                for photo-patches and digits-hard alike, as ImageNet weights are one checkpoint for every task.

Each folder also has solution.csv (the test labels) for scoring.
"""
from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

PHOTOS = ("astronaut", "brick", "camera", "chelsea", "coffee", "coins", "grass", "gravel", "hubble_deep_field",
          "immunohistochemistry", "moon", "rocket")


def _empty_competition(root: Path) -> Path:
    """ROOT.tmp with empty train_images/ and test_images/: a set is written there and renamed to ROOT when whole."""
    tmp = root.with_name(root.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "train_images").mkdir(parents=True)
    (tmp / "test_images").mkdir()
    return tmp


def _write_csvs(root: Path, train: list, test: list) -> None:
    for name, rows in (("train.csv", train), ("sample_submission.csv", [(i, train[0][1]) for i, _ in test]),
                       ("solution.csv", test)):
        with open(root / name, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["image_id", "label"])
            w.writerows(rows)


def digits(root: Path) -> Path:
    from kit.prepare import demo
    return demo.materialize(root)


def digits_hard(root: Path, seed: int = 0) -> Path:
    """Same ids, labels and split as digits; each image rotated up to ±30°, down-scaled to 5x5 and back, noised."""
    if (root / "train.csv").exists():
        return root
    src = digits(root.with_name("digits"))
    rng = np.random.default_rng(seed)
    tmp = root.with_name(root.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for folder in ("train_images", "test_images"):
        (tmp / folder).mkdir(parents=True)
        for path in sorted((src / folder).iterdir()):
            img = Image.open(path).convert("L").resize((32, 32), Image.BILINEAR)
            img = img.rotate(float(rng.uniform(-30, 30)), resample=Image.BILINEAR)
            img = img.resize((5, 5), Image.BILINEAR).resize((8, 8), Image.BILINEAR)
            arr = np.clip(np.asarray(img, np.float32) + rng.normal(0, 40, (8, 8)), 0, 255).astype(np.uint8)
            Image.fromarray(arr).save(tmp / folder / path.name)
    for name in ("train.csv", "sample_submission.csv", "solution.csv"):
        shutil.copy(src / name, tmp / name)
    tmp.rename(root)
    return root


def _photo(name: str) -> Image.Image:
    """scikit-image's sample photo `name`, or scikit-learn's ("sklearn:china.jpg")."""
    if name.startswith("sklearn:"):
        from sklearn.datasets import load_sample_image
        return Image.fromarray(load_sample_image(name.split(":", 1)[1]))
    import skimage.data
    arr = np.asarray(getattr(skimage.data, name)())
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, -1)
    return Image.fromarray(arr[..., :3].astype(np.uint8))


def _patch(photo: Image.Image, x0: float, x1: float, rng: np.random.Generator, out: int = 96) -> Image.Image:
    w, h = photo.size
    side = rng.uniform(0.12, 0.30) * min(w, h)
    aspect = np.exp(rng.uniform(np.log(0.75), np.log(1.33)))
    pw, ph = side * aspect ** 0.5, side / aspect ** 0.5
    left = rng.uniform(x0 * w, max(x0 * w, x1 * w - pw))
    top = rng.uniform(0, h - ph)
    im = photo.crop((int(left), int(top), int(left + pw), int(top + ph))).resize((out, out), Image.BILINEAR)
    im = im.rotate(float(rng.uniform(-180, 180)), resample=Image.BILINEAR, fillcolor=tuple(rng.integers(0, 256, 3)))
    if rng.random() < 0.5:
        im = im.transpose(Image.FLIP_LEFT_RIGHT)
    im = ImageEnhance.Brightness(im).enhance(rng.uniform(0.6, 1.4))
    im = ImageEnhance.Contrast(im).enhance(rng.uniform(0.6, 1.4))
    im = ImageEnhance.Color(im).enhance(rng.uniform(0.3, 1.7))
    if rng.random() < 0.25:
        im = im.convert("L").convert("RGB")
    arr = np.asarray(im, np.float32) + rng.normal(0, 12, (out, out, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def photo_patches(root: Path, train_per_class: int = 120, test_per_class: int = 40, seed: int = 0,
                  photos: tuple = PHOTOS, out: int = 96, suffix: str = ".jpg") -> Path:
    if (root / "train.csv").exists():
        return root
    rng = np.random.default_rng(seed)
    tmp = _empty_competition(root)
    train, test = [], []
    for label in photos:
        photo = _photo(label)
        label = label.removeprefix("sklearn:").removesuffix(".jpg")
        for split, rows, n, (x0, x1) in (("train_images", train, train_per_class, (0.0, 0.7)),
                                         ("test_images", test, test_per_class, (0.7, 1.0))):
            for _ in range(n):
                image_id = f"p{len(train) + len(test):05d}"
                patch = _patch(photo, x0, x1, rng)
                if out != patch.width:
                    patch = patch.resize((out, out), Image.BILINEAR)
                patch.save(tmp / split / f"{image_id}{suffix}", **({"quality": 85} if suffix == ".jpg" else {}))
                rows.append((image_id, label))
    order = rng.permutation(len(train))
    _write_csvs(tmp, [train[i] for i in order], sorted(test))
    tmp.rename(root)
    return root


def long_tail(root: Path, ratio: float = 20.0) -> Path:
    """digits-hard with its training set cut to a long tail: class k (in label order) keeps 1/ratio^(k/9) of its
    images, so digit 0 keeps all and digit 9 one in twenty; the test set is untouched (balanced)."""
    if (root / "train.csv").exists():
        return root
    src = digits_hard(root.with_name("digits-hard"))
    with open(src / "train.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))[1:]
    keep = []
    for k in range(10):
        mine = [r for r in rows if r[1] == str(k)]
        keep += mine[:max(5, round(len(mine) / ratio ** (k / 9)))]
    tmp = root.with_name(root.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    order = {r[0]: i for i, r in enumerate(rows)}
    kept = sorted(keep, key=lambda r: order[r[0]])
    with open(tmp / "train.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([["image_id", "label"], *kept])
    tmp.rename(root)
    return root


def photo_patches_6k(root: Path) -> Path:
    return photo_patches(root, train_per_class=600, test_per_class=200, seed=6, photos=PHOTOS[:10], out=32,
                         suffix=".png")


# the pretraining set's photos: bundled with scikit-image or scikit-learn, none of them in PHOTOS (scikit-image's
# `cat` is `chelsea`, left out), none a digit
PRETRAIN_PHOTOS = ("binary_blobs", "cell", "clock", "colorwheel", "horse", "logo", "page", "retina",
                   "shepp_logan_phantom", "text", "sklearn:china.jpg", "sklearn:flower.jpg")


def pretrain_photos(root: Path) -> Path:
    """12,000 training windows (1,000 per photo of PRETRAIN_PHOTOS, 32 px PNGs) for pretraining (bench/pretrain.py):
    what a pretrained checkpoint would be without a download, and none of the evaluation sets."""
    return photo_patches(root, train_per_class=1000, test_per_class=50, seed=11, photos=PRETRAIN_PHOTOS, out=32,
                         suffix=".png")


def _glyph(char: str, font_file: str, rng: np.random.Generator) -> Image.Image:
    """`char` scanned the way scikit-learn's digits were (8x8, 17 grey levels, bright ink), then degraded as
    digits-hard is (blurred through 5x5 on half of them, noised)."""
    from PIL import ImageDraw, ImageFont
    font = ImageFont.truetype(font_file, int(rng.integers(34, 54)))
    canvas = Image.new("L", (64, 64), 0)
    stroke = int(rng.integers(1, 4))
    offset = rng.integers(-5, 6, 2)
    ImageDraw.Draw(canvas).text((32 + int(offset[0]), 32 + int(offset[1])), char, fill=255, font=font, anchor="mm",
                                stroke_width=stroke, stroke_fill=255)
    canvas = canvas.rotate(float(rng.uniform(-30, 30)), resample=Image.BILINEAR)
    box = canvas.getbbox() or (0, 0, 64, 64)                   # the scan's frame: the ink's box, squared, padded
    side = max(box[2] - box[0], box[3] - box[1]) * rng.uniform(1.0, 1.15)
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    img = canvas.crop((int(cx - side / 2), int(cy - side / 2), int(cx + side / 2), int(cy + side / 2)))
    arr = np.asarray(img.resize((8, 8), Image.BOX), np.float32)
    arr = np.round(arr * 16 / max(arr.max(), 1.0)) * 255 / 16             # the darkest ink is 16, as in the digits
    if rng.random() < 0.5:
        arr = np.asarray(Image.fromarray(arr.astype(np.uint8)).resize((5, 5), Image.BILINEAR)
                         .resize((8, 8), Image.BILINEAR), np.float32)
    arr = arr + rng.normal(0, 40, (8, 8))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def glyphs(root: Path, per_class: int = 250, test_per_class: int = 20, seed: int = 12) -> Path:
    if (root / "train.csv").exists():
        return root
    import string
    import matplotlib
    fonts = sorted(str(f) for f in (Path(matplotlib.get_data_path()) / "fonts" / "ttf").glob("*.ttf")
                   if f.name.startswith(("DejaVuSans", "DejaVuSerif", "STIX")) and "Display" not in f.name
                   and "Size" not in f.name and "NonUni" not in f.name)
    rng = np.random.default_rng(seed)
    tmp = _empty_competition(root)
    train, test = [], []
    for char in string.ascii_uppercase + string.ascii_lowercase:
        label = f"upper_{char}" if char.isupper() else f"lower_{char}"
        for split, rows, n in (("train_images", train, per_class), ("test_images", test, test_per_class)):
            for _ in range(n):
                image_id = f"g{len(train) + len(test):05d}"
                _glyph(char, fonts[rng.integers(len(fonts))], rng).save(tmp / split / f"{image_id}.png")
                rows.append((image_id, label))
    order = rng.permutation(len(train))
    _write_csvs(tmp, [train[i] for i in order], sorted(test))
    tmp.rename(root)
    return root


def pretrain_mix(root: Path) -> Path:
    """pretrain-photos' photos at 500 windows each beside the glyphs, in one Kaggle folder."""
    if (root / "train.csv").exists():
        return root
    parts = [photo_patches(root.with_name("pretrain-photos-500"), train_per_class=500, test_per_class=20, seed=13,
                           photos=PRETRAIN_PHOTOS, out=32, suffix=".png"), glyphs(root.with_name("glyphs"))]
    tmp = root.with_name(root.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    rows = {"train.csv": [], "solution.csv": []}
    for part in parts:
        for folder in ("train_images", "test_images"):
            shutil.copytree(part / folder, tmp / folder, dirs_exist_ok=True)     # ids differ: p..... and g.....
        for name in rows:
            with open(part / name, newline="", encoding="utf-8") as f:
                rows[name] += [tuple(r) for r in list(csv.reader(f))[1:]]
    order = np.random.default_rng(14).permutation(len(rows["train.csv"]))
    _write_csvs(tmp, [rows["train.csv"][i] for i in order], sorted(rows["solution.csv"]))
    tmp.rename(root)
    return root


DATASETS = {"digits": digits, "digits-hard": digits_hard, "photo-patches": photo_patches,
            "digits-hard-longtail": long_tail, "photo-patches-6k": photo_patches_6k, "pretrain-photos": pretrain_photos,
            "glyphs": glyphs, "pretrain-mix": pretrain_mix}


def build(name: str, data_root: Path = Path("data")) -> Path:
    return DATASETS[name](data_root / name)
