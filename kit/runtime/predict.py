"""Classify any images with an exported graph: `python -m kit.predict --onnx MODEL.onnx SOURCE... --out PREDS.csv`
(or `kit-predict`, the console script of the predictor wheel). No competition folder, no PyTorch.

SOURCE: image files, folders (searched recursively, image suffixes only) or glob patterns ("photos/**/*.jpg").
PREDS.csv: path,label,then per rank r of the top k: top<r>,p<r> (the output's name and probability; a regression:
           path,label,value)
PREDS.jsonl: one JSON object per image: {"path", ...the answer}, the answer exactly as the service and the browser
           page give it (kit/core/task/base.py: Task.answer)
Rows follow the sources in order, each folder's images sorted by path.
"""
from __future__ import annotations

import argparse
import csv
import glob
import json
import logging
import os
import stat
from pathlib import Path

from kit.core.atomic import atomic_path
from kit.core.entry import Parser, main_guard, nonempty, number
from kit.core.errors import KitError
from kit.core.paths import Outputs
from kit.core.table import IMAGE_SUFFIXES, check_images_readable
from kit.runtime.predictor import Predictor

log = logging.getLogger(__name__)


def _regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def image_files(sources: list[str]) -> list[Path]:
    """The image files the sources name, in order, each once."""
    found: list[Path] = []
    for source in sources:
        if any(c in source for c in "*?["):
            matches = sorted(Path(m) for m in glob.glob(source, recursive=True))
            files = [m for m in matches if _regular(m) and m.suffix.lower() in IMAGE_SUFFIXES]
            if not files:
                raise KitError(f"{source!r} matches no image file (suffixes {', '.join(IMAGE_SUFFIXES)})")
        elif Path(source).is_dir():
            files = sorted(p for p in Path(source).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and _regular(p))
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


def csv_row(path: Path, answer: dict, top_k: int) -> list:
    if "value" in answer:
        return [str(path), answer["label"], f"{answer['value']:.9g}"]
    cells = [str(path), answer["label"]]
    for name, p in list(answer["probabilities"].items())[:top_k]:
        cells += [name, f"{p:.9g}"]
    return cells


def predict(onnx: Path, sources: list[str], out: Path, top_k: int = 5, provider: str = "auto",
            batch_size: int = 32) -> int:
    """Write one row per image of `sources` to `out` (.csv or .jsonl); returns the number of images."""
    if out.suffix.lower() not in (".csv", ".jsonl"):
        raise KitError(f"--out {out} must end in .csv or .jsonl")
    files = image_files(sources)
    Outputs().reads(onnx, *files).check("--out", out)
    check_images_readable(files)
    predictor = Predictor(onnx, provider)
    outputs = predictor.predict_files(files, batch_size)
    answers = [predictor.answer(row, top_k) for row in outputs]
    with atomic_path(out) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        if out.suffix.lower() == ".jsonl":
            f.writelines(json.dumps({"path": str(p), **a}) + "\n" for p, a in zip(files, answers))
        else:
            width = min(top_k, len(predictor.task.names))
            header = ["path", "label", "value"] if "value" in answers[0] else \
                ["path", "label"] + [c for r in range(1, width + 1) for c in (f"top{r}", f"p{r}")]
            writer = csv.writer(f)
            writer.writerow(header)
            writer.writerows(csv_row(p, a, top_k) for p, a in zip(files, answers))
    log.info(f"predict: {len(files)} image(s) with {onnx} on {', '.join(predictor.providers)} -> {out}")
    return len(files)


def main(argv=None) -> None:
    p = Parser(prog="kit-predict", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--onnx", type=nonempty, required=True, help="a graph exported by the kit")
    p.add_argument("sources", nargs="+", type=nonempty, metavar="SOURCE", help="image files, folders or globs")
    p.add_argument("--out", type=nonempty, required=True, help="PREDS.csv or PREDS.jsonl")
    p.add_argument("--top-k", type=number(1, None, int), default=5, help="probabilities per image (default 5)")
    p.add_argument("--provider", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--batch-size", type=number(1, None, int), default=32)
    args = p.parse_args(argv)
    predict(Path(args.onnx), args.sources, Path(args.out), args.top_k, args.provider, args.batch_size)


def cli() -> None:
    """The `kit-predict` console script."""
    main_guard(main)
