"""Classify any images with an exported graph: `python -m kit.predict --onnx MODEL.onnx SOURCE... --out PREDS.csv`
(or `kit-predict`, the console script of the predictor wheel). No competition folder, no PyTorch.

SOURCE: image files, folders (searched recursively, image suffixes only) or glob patterns ("photos/**/*.jpg").
PREDS.csv: path,label,then per rank r of the top k (default 5): top<r>,p<r> (the output's name and probability; a
           regression: path,label,value); with --skip-errors a last column `error`
PREDS.jsonl: one JSON object per image: {"path", ...the answer}, the answer exactly as the service and the browser
           page give it (kit/core/task/base.py: Task.answer): whole, unless --top-k cuts it; with --skip-errors an
           unreadable image's object is {"path", "error"}
Rows follow the sources in order, each folder's images sorted by path.
"""
from __future__ import annotations

import csv
import json
import logging
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

from kit.core.atomic import atomic_path
from kit.core.entry import main_guard, number, option, parse_request
from kit.core.errors import KitError
from kit.core.providers import PROVIDER_CHOICES
from kit.core.paths import Outputs
from kit.core.table import IMAGE_SUFFIXES, decode_every
from kit.runtime.predictor import Predictor

log = logging.getLogger(__name__)


def _regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def _walk(root: str) -> Iterator[Path]:
    """Every file under `root`, never entering a symlinked folder (a link back up would loop forever)."""
    for folder, dirs, files in os.walk(root, followlinks=False):
        dirs.sort()
        for name in sorted(files):
            yield Path(folder) / name


def _pattern(pattern: str) -> re.Pattern:
    """A glob pattern as a regular expression over '/'-separated paths: `**/` any folders (none included), `*` and
    `?` within one name, [...] a set; as glob.glob(recursive=True) reads it."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:[^/]*/)*", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[" and "]" in pattern[i + 2:]:
            end = pattern.index("]", i + 2)
            body = pattern[i + 1:end]
            out, i = out + "[" + ("^" + body[1:] if body.startswith("!") else body) + "]", end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"\Z")


def glob_files(pattern: str) -> list[Path]:
    """The files a glob pattern matches, found without following symlinked folders (glob.glob's `**` follows them,
    and one link back up yields each image once per level, two never end)."""
    while pattern.startswith("./"):
        pattern = pattern[2:]                   # the walk's paths are normalized: no leading ./
    parts = pattern.split("/")
    fixed = next(i for i, part in enumerate(parts) if any(c in part for c in "*?["))
    root = "/".join(parts[:fixed]) or ("/" if pattern.startswith("/") else ".")
    regex, dotted = _pattern(pattern), any(part.startswith(".") for part in parts[fixed:])

    def hidden(p: Path) -> bool:          # as glob: a wildcard does not match a name's leading dot
        return not dotted and any(part.startswith(".") for part in p.relative_to(root).parts)
    return [p for p in _walk(root) if regex.match(p.as_posix()) and not hidden(p)]


def image_files(sources: list[str]) -> list[Path]:
    """The image files the sources name, in order, each once."""
    found: list[Path] = []
    for source in sources:
        if any(c in source for c in "*?["):
            matches = sorted(glob_files(source))
            files = [m for m in matches if _regular(m) and m.suffix.lower() in IMAGE_SUFFIXES]
            if not files:
                raise KitError(f"{source!r} matches no image file (suffixes {', '.join(IMAGE_SUFFIXES)})")
        elif Path(source).is_dir():
            files = [p for p in _walk(source) if p.suffix.lower() in IMAGE_SUFFIXES and _regular(p)]
            if not files:
                raise KitError(f"folder {source} holds no image file (suffixes {', '.join(IMAGE_SUFFIXES)}, searched "
                               f"recursively)")
        elif Path(source).exists():
            if not _regular(Path(source)):
                raise KitError(f"{source} is not a regular file (a named pipe or device); pass image files")
            files = [Path(source)]
        else:
            raise KitError(f"{source} does not exist; pass image files, folders or glob patterns")
        found += files
    return list(dict.fromkeys(found))


CSV_TOP_K = 5


def csv_row(path: Path, answer: dict, top_k: int, width: int) -> list:
    """A CSV row of `width` cells: the answer's, padded; an unreadable image's error in the last."""
    if "error" in answer:
        return [str(path)] + [""] * (width - 2) + [answer["error"]]
    if "value" in answer:
        cells = [str(path), answer["label"], f"{answer['value']:.9g}"]
    else:
        cells = [str(path), answer["label"]]
        for name, p in list(answer["probabilities"].items())[:top_k]:
            cells += [name, f"{p:.9g}"]
    return cells + [""] * (width - len(cells))


def predict(onnx: Path, sources: list[str], out: Path, top_k: int | None = None, provider: str = "auto",
            batch_size: int = 32, skip_errors: bool = False) -> int:
    """Write one row per image of `sources` to `out` (.csv or .jsonl); returns the number of images. An unreadable
    image stops the run, or with `skip_errors` gets its reason in its row."""
    if out.suffix.lower() not in (".csv", ".jsonl"):
        raise KitError(f"--out {out} must end in .csv or .jsonl")
    files = image_files(sources)
    Outputs().reads(onnx, *files).check("--out", out)
    bad = decode_every(files, refuse=not skip_errors,         # refused here unless --skip-errors
                       fix="Replace or remove these files, or pass --skip-errors to predict the others")
    good = [f for f in files if f not in bad]
    predictor = Predictor(onnx, provider)
    outputs = iter(predictor.predict_files(good, batch_size)) if good else iter(())
    answers = [{"error": bad[f]} if f in bad else predictor.answer(next(outputs), top_k) for f in files]
    # a file name that is not UTF-8 (its bytes kept by Python as surrogate escapes) is written back as those bytes
    with atomic_path(out) as tmp, open(tmp, "w", newline="", encoding="utf-8", errors="surrogateescape") as f:
        if out.suffix.lower() == ".jsonl":
            f.writelines(json.dumps({"path": str(p), **a}) + "\n" for p, a in zip(files, answers))
        else:
            k = top_k or CSV_TOP_K
            width = min(k, len(predictor.task.names))
            header = ["path", "label", "value"] if any("value" in a for a in answers) else \
                ["path", "label"] + [c for r in range(1, width + 1) for c in (f"top{r}", f"p{r}")]
            header += ["error"] if skip_errors else []
            writer = csv.writer(f)
            writer.writerow(header)
            writer.writerows(csv_row(p, a, k, len(header)) for p, a in zip(files, answers))
    skipped = f"; {len(bad)} unreadable, their reasons in the rows" if bad else ""
    log.info(f"predict: {len(files)} image(s) with {onnx} on {', '.join(predictor.providers)} -> {out}{skipped}")
    return len(files)


@dataclass
class PredictRequest:
    """kit-predict's flags, as one value (kit.core.entry.add_flags makes the flags from it)."""
    onnx: str = option(None, "a graph exported by the kit", required=True)
    sources: list[str] = option([], "image files, folders or globs", positional=True, nargs="+", metavar="SOURCE")
    out: str = option(None, "PREDS.csv or PREDS.jsonl", required=True)
    top_k: Optional[int] = option(None, "probabilities per image (default: every one in JSON lines, 5 in CSV)",
                                  parse=number(1, None, int))
    skip_errors: bool = option(False, "an unreadable image gets its reason in its row (an `error` column / field) "
                                      "instead of stopping the run")
    provider: str = option("auto", "onnxruntime's execution provider", choices=PROVIDER_CHOICES)
    batch_size: int = option(32, "images per onnxruntime call", parse=number(1, None, int))


def main(argv=None) -> None:
    r = parse_request(PredictRequest, argv, prog="kit-predict", description=__doc__)
    predict(Path(r.onnx), r.sources, Path(r.out), r.top_k, r.provider, r.batch_size, r.skip_errors)


def cli() -> None:
    """The `kit-predict` console script."""
    main_guard(main)
