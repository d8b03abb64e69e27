"""A Triton Inference Server model repository from a kit graph: its ONNX backend, dynamic batching, the labels.

    python -m kit.triton --onnx GRAPH --out model_repository [--name NAME] [--max-batch 32]
                         [--preferred-batch 8 16] [--max-queue-delay-us 1000] [--instances 1] [--gpu]

OUT/NAME/config.pbtxt   the model configuration (Triton's ModelConfig, protobuf text): platform onnxruntime_onnx,
                        max_batch_size, the graph's input and outputs with their types and dims (the batch axis
                        left to max_batch_size), dynamic_batching, instance_group (KIND_CPU, or KIND_GPU with --gpu)
OUT/NAME/1/model.onnx   the graph, byte for byte (version 1)
OUT/NAME/labels.txt     the output names in output order, one a line (classification tasks): Triton's
                        classification extension answers "score:index:label" with it
OUT/NAME/kit-meta.json  the graph's kit metadata (how a row of outputs becomes the kit's JSON answer)

OUT may already hold other models; NAME (default: the graph's file stem) must be new. The folder is built under a
temporary name and renamed at the end. No Triton server runs on this project's machines: the configuration is
checked against Triton's own schema (tritonclient's model_config_pb2) in tests/deploy/test_triton.py, and README shows the
`docker run ... tritonserver` line and a client call.
"""
from __future__ import annotations

import json
import logging
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

from kit.core.atomic import atomic_dir, write_text
from kit.core.entry import number, option, parse_request
from kit.core.errors import KitError
from kit.core.paths import Outputs
from kit.runtime.predictor import Predictor

log = logging.getLogger(__name__)
TRITON_TYPES = {"tensor(uint8)": "TYPE_UINT8", "tensor(float)": "TYPE_FP32", "tensor(float16)": "TYPE_FP16",
                "tensor(int64)": "TYPE_INT64"}
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")       # a folder name Triton and every shell take as it is


def tensor_config(tensor, what: str) -> str:
    """One input or output entry; the graph's batch axis must be dynamic (Triton batches along it)."""
    batch, *dims = tensor.shape
    if isinstance(batch, int):
        raise KitError(f"the graph's {what} {tensor.name!r} has a fixed batch of {batch}; Triton's dynamic batching "
                       f"needs a dynamic one: export it with python infer.py --export-only")
    if tensor.type not in TRITON_TYPES or not all(isinstance(d, int) for d in dims):
        raise KitError(f"the graph's {what} {tensor.name!r} is {tensor.type} {tensor.shape}; a kit graph's are fixed "
                       f"apart from the batch: export it with python infer.py --export-only")
    return f'name: "{tensor.name}" data_type: {TRITON_TYPES[tensor.type]} dims: [ {", ".join(map(str, dims))} ]'


def model_config(predictor: Predictor, name: str, max_batch: int, preferred: list[int], delay_us: int,
                 instances: int, gpu: bool, labels: bool) -> str:
    session = predictor.session
    inputs = [tensor_config(t, "input") for t in session.get_inputs()]
    outputs = [tensor_config(t, "output") for t in session.get_outputs()]
    if labels:                  # the first output is the predictions (kit.core.artifact): the labels are its columns
        outputs[0] += ' label_filename: "labels.txt"'
    lines = [f'name: "{name}"', 'platform: "onnxruntime_onnx"', f"max_batch_size: {max_batch}",
             *[f"input [ {{ {t} }} ]" for t in inputs], *[f"output [ {{ {t} }} ]" for t in outputs],
             "dynamic_batching {" + (f" preferred_batch_size: [ {', '.join(map(str, preferred))} ]" if preferred
                                      else "") + f" max_queue_delay_microseconds: {delay_us} }}",
             f"instance_group [ {{ count: {instances} kind: {'KIND_GPU' if gpu else 'KIND_CPU'} }} ]"]
    return "\n".join(lines) + "\n"


def make_repository(onnx: Path, out: Path, name: str | None = None, max_batch: int = 32,
                    preferred: list[int] | None = None, delay_us: int = 1000, instances: int = 1,
                    gpu: bool = False) -> Path:
    """OUT/NAME as the module docstring says; every check before anything is written."""
    name = name or onnx.stem
    if not NAME.fullmatch(name):
        raise KitError(f"--name {name!r}: a Triton model name here is letters, digits, '_', '.' and '-' (at most 128, "
                       f"not starting with '.' or '-'); pass --name")
    preferred = sorted(set(preferred or []))
    if any(b > max_batch for b in preferred):
        raise KitError(f"--preferred-batch {max(preferred)} is above --max-batch {max_batch}: Triton would refuse "
                       f"the model; lower it or raise --max-batch")
    outputs = Outputs().reads(onnx)
    outputs.check("--out", out, "folder")
    target = out / name
    if target.exists():
        raise KitError(f"{target} exists: the repository already has a model {name!r}; pass another --name or "
                       f"remove it")
    predictor = Predictor(onnx, "cpu")          # a file that is no kit graph is refused before anything is built
    meta = predictor.meta
    labels = meta.task in ("multiclass", "multilabel")
    if labels and any("\n" in str(c) or "\r" in str(c) for c in meta.classes):
        raise KitError(f"{onnx}: an output name holds a line break, which labels.txt cannot carry; rename the class")
    config = model_config(predictor, name, max_batch, preferred, delay_us, instances, gpu, labels)
    with atomic_dir(target) as tmp:
        (tmp / "1").mkdir()
        shutil.copyfile(onnx, tmp / "1" / "model.onnx")
        write_text(tmp / "config.pbtxt", config)
        if labels:
            write_text(tmp / "labels.txt", "".join(f"{c}\n" for c in meta.classes))
        write_text(tmp / "kit-meta.json", json.dumps(asdict(meta), indent=1) + "\n")
    log.info(f"triton: {target}: {meta.model}, {len(meta.classes)} outputs, {meta.img_size}px uint8 images, batches "
             f"up to {max_batch}. Serve it: docker run --rm -p 8000:8000 -v {out.resolve()}:/models "
             f"nvcr.io/nvidia/tritonserver:<release>-py3 tritonserver --model-repository=/models")
    return target


@dataclass
class RepositoryRequest:
    """kit.triton's flags, as one value (kit.core.entry.add_flags makes the flags from it)."""
    onnx: str = option(None, "a graph exported by the kit", required=True)
    out: str = option(None, "the model repository (created, or one that exists)", required=True)
    name: Optional[str] = option(None, "the model's name in the repository (default: the graph's file stem)")
    max_batch: int = option(32, "Triton's max_batch_size", parse=number(1, 65536, int))
    preferred_batch: list[int] = option([], "batch sizes the dynamic batcher aims for (default: any up to "
                                            "--max-batch)", parse=number(1, 65536, int), nargs="+")
    max_queue_delay_us: int = option(1000, "how long a request may wait for others to batch with (microseconds)",
                                     parse=number(0, 10_000_000, int))
    instances: int = option(1, "model instances (instance_group count)", parse=number(1, 64, int))
    gpu: bool = option(False, "instances on the GPU (KIND_GPU) instead of the CPU")


def main() -> None:
    r = parse_request(RepositoryRequest, description=__doc__)
    make_repository(Path(r.onnx), Path(r.out), r.name, r.max_batch, r.preferred_batch, r.max_queue_delay_us,
                    r.instances, r.gpu)
