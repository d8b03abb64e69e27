"""The lower-precision twin of an exported graph, for the deploy targets that take one (`kit.web --int8`,
`kit.bundle --int8/--fp16`). infer.py makes the twins (kit.export.twin) beside the fp32 graph; each carries the export
key of the graph it was made from, and one made from another graph is refused rather than shipped."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from kit.core.artifact import Metadata
from kit.core.errors import KitError
from kit.core.paths import twin_path
from kit.runtime.predictor import Predictor

WHY = {"int8": "it is calibrated on training images", "fp16": "its agreement with fp32 is checked on OOF images"}


def twin_of(onnx: Path, kind: str, meta: Optional[Metadata] = None) -> Path:
    """`onnx`'s `kind` twin (int8 or fp16), or `onnx` itself when it is one already; `meta`: `onnx`'s, where the
    caller has opened it already (a session on a large graph takes about a second)."""
    meta = meta or Predictor(onnx, "cpu").meta
    if getattr(meta, kind):
        return onnx
    twin = twin_path(onnx, kind)
    if not twin.is_file():
        raise KitError(f"--{kind}: there is no {twin}; export it with python infer.py ... --{kind} ({WHY[kind]}, "
                       f"which this command has not), or pass an {kind} graph as --onnx")
    made_from = Predictor(twin, "cpu").meta.export_key            # the key of the graph it was made from
    if not made_from or made_from != meta.export_key:
        raise KitError(f"--{kind}: {twin} was made from another graph than {onnx} (their export keys differ: the run "
                       f"changed since); export both again with python infer.py ... --{kind} --re-export")
    return twin
