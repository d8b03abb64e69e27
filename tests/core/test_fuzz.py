"""Bounded fuzzing of what users hand the kit: a seeded mutation loop over a valid train.csv, sample_submission.csv
and image files. Every mutant must end in a result or one KitError (the `error:` line), never another exception,
and never block: each case runs under an alarm. A few seconds in the default run; `-m slow` runs many more."""
from __future__ import annotations

import io
import signal
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import make_competition
from kit.core.errors import KitError

FAST, SLOW = 120, 3000
SPICE = [b",", b"\"", b"\n", b"\r\n", b"\x00", b"\xff\xfe", b"\xe9", b"nan", b"..", b"/", b" ", b"\t", b"1.0", b"-",
         b"image_id", b"label", b"\xef\xbb\xbf", b"\"\"", b"x" * 300]


def mutate(data: bytes, rng: np.random.Generator) -> bytes:
    """One to three random edits: flip, insert a spicy token, delete a span, duplicate or drop a line, truncate."""
    data = bytearray(data)
    for _ in range(int(rng.integers(1, 4))):
        op = int(rng.integers(0, 6))
        at = int(rng.integers(0, max(1, len(data))))
        if op == 0 and data:
            data[at % len(data)] ^= 1 << int(rng.integers(0, 8))
        elif op == 1:
            data[at:at] = SPICE[int(rng.integers(0, len(SPICE)))]
        elif op == 2:
            del data[at:at + int(rng.integers(1, 20))]
        elif op in (3, 4):
            lines = bytes(data).split(b"\n")
            k = int(rng.integers(0, len(lines)))
            lines = lines[:k] + ([lines[k]] * 2 if op == 3 else []) + lines[k + 1:]
            data = bytearray(b"\n".join(lines))
        else:
            data = data[:at]
    return bytes(data)


class Timeout(Exception):
    pass


def bounded(fn, seconds: int = 10):
    """fn() under an alarm: a mutant that blocks fails the test instead of hanging it."""
    def ring(*_):
        raise Timeout
    old = signal.signal(signal.SIGALRM, ring)
    signal.alarm(seconds)
    try:
        return fn()
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def outcome(fn) -> str:
    try:
        bounded(fn)
        return "ok"
    except KitError as e:
        assert "\n" not in str(e), str(e)          # one line
        return "error"


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return make_competition(tmp_path_factory.mktemp("fuzz") / "comp", per_class=4, n_test=4)


def fuzz_csv(folder: Path, name: str, read, cases: int, seed: int) -> dict:
    original = (folder / name).read_bytes()
    rng = np.random.default_rng(seed)
    seen = {"ok": 0, "error": 0}
    try:
        for _ in range(cases):
            (folder / name).write_bytes(mutate(original, rng))
            seen[outcome(read)] += 1
    finally:
        (folder / name).write_bytes(original)
    return seen


def read_training_table(folder: Path):
    from kit.core.table import check_images_readable, train_table
    from kit.settings.config import load_config
    from kit.train.run import resolve_task
    cfg = load_config(None, {"data_dir": str(folder), "pretrained": False})
    table = train_table(cfg)
    task = resolve_task(cfg, table)
    check_images_readable(table.paths, workers=2)
    task.encode(table.labels)


def read_sample_submission(folder: Path):
    from kit.core.table import submission_table
    submission_table(str(folder))


def fuzz_images(folder: Path, cases: int, seed: int) -> dict:
    from kit.core.images import load_rgb
    rng = np.random.default_rng(seed)
    sources = []
    for fmt in ("PNG", "JPEG", "TIFF", "BMP", "GIF", "WEBP"):
        buf = io.BytesIO()
        Image.open(sorted((folder / "train_images").iterdir())[0]).convert("RGB").resize((24, 24)).save(buf, fmt)
        sources.append(buf.getvalue())
    seen = {"ok": 0, "error": 0}
    for i in range(cases):
        data = mutate(sources[i % len(sources)], rng)
        seen[outcome(lambda: load_rgb(io.BytesIO(data), 16))] += 1
    return seen


def test_mutated_csvs_and_images_end_in_a_result_or_one_error(folder):
    train = fuzz_csv(folder, "train.csv", lambda: read_training_table(folder), FAST, seed=0)
    sample = fuzz_csv(folder, "sample_submission.csv", lambda: read_sample_submission(folder), FAST // 2, seed=1)
    images = fuzz_images(folder, FAST, seed=2)
    for seen in (train, sample, images):                # the mutants reach both outcomes: the loop has teeth
        assert seen["ok"] > 0 and seen["error"] > 0, (train, sample, images)


@pytest.mark.slow
def test_mutated_inputs_long_run(folder):
    """Any exception but a one-line KitError fails inside outcome(); both outcomes must be reached."""
    runs = (fuzz_csv(folder, "train.csv", lambda: read_training_table(folder), SLOW, seed=10),
            fuzz_csv(folder, "sample_submission.csv", lambda: read_sample_submission(folder), SLOW, seed=11),
            fuzz_images(folder, SLOW, seed=12))
    assert all(seen["ok"] > 0 and seen["error"] > 0 for seen in runs), runs
