"""The exported file's contract: what kit.runtime.predictor, kit.runtime.submission and any deployment rely on. Torch-free.

  input  "images"         uint8 [N, S, S, 3] RGB, S = img_size: each image as kit.core.images.load_rgb(path, S) gives it
  output "probabilities"  float32 [N, C]: the task's predictions (multiclass: the weighted mean over members
                          and views of each model's softmax); column i is the output `classes[i]`
  output "members"        float32 [N, M, C]: each fold model's own prediction (its views averaged), in the
                          order of `members` (runs) and their `folds`; what the parity gate checks member by member
  metadata_props          "kit.<key>" -> JSON value, for every field of Metadata
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Optional

from kit.core.errors import KitError
from kit.core.task import Task, restore

INPUT, OUTPUT, MEMBERS = "images", "probabilities", "members"
PREFIX = "kit."


@dataclass
class Metadata:
    task: str                   # kit.core.task kind: multiclass, multilabel or regression
    classes: list               # output names (classes, tags, or the target), in output order
    task_params: dict           # multilabel: thresholds (fitted on OOF), min_labels; regression: scale
    img_size: int               # S of the input: the test size (kit.settings.config.test_size)
    train_img_size: int         # the size the models trained at (below img_size under FixRes)
    mean: list                  # the normalization inside the graph (informational)
    std: list                   # its std
    model: str                  # timm architecture (of a blend: each run's, joined by +)
    folds: list                 # fold numbers in the ensemble ("full": the model trained on every image)
    fold_scores: list           # each fold's best validation score
    cv_score: Optional[float]   # the metric over the OOF predictions of those folds (None: the full model, no CV)
    metric: str                 # the competition metric those scores are in
    tta: bool                   # flip views averaged inside the graph
    int8: bool                  # an int8 (QDQ) graph
    int8_agreement: Optional[float]     # its share of the same submission cells as fp32 on OOF images (None: fp32)
    fp16: bool                  # an fp16 graph (float16 weights and activations, uint8 in, float32 out)
    fp16_agreement: Optional[float]     # as int8_agreement, for the fp16 graph
    id_col: str                 # the competition's id and label columns, for the submission
    label_col: str              # the label column
    kit_version: str            # the kit that exported it
    members: list               # per run: {"run", "model", "folds", "img_size", "train_img_size", "weight", "views", "cv"}
    answer: dict                # how a row of outputs becomes the JSON answer (kit/core/task: Task.answer_spec)
    blend: dict                 # how the runs were blended (kit.evaluate.blend): {"method", "honest_cv": {method: CV}}
    export_key: str             # sha256 of what the graph was made from (kit.export.infer.export_key): reused when equal

    def task_(self) -> Task:
        return restore({**self.task_params, "kind": self.task, "names": self.classes})


KEYS = tuple(f.name for f in fields(Metadata))


def write_metadata(path: str | Path, meta: Metadata) -> None:
    """Replace the file's kit.* metadata and check the whole model (onnx.checker, full)."""
    import onnx
    model = onnx.load(str(path))
    del model.metadata_props[:]
    for key, value in asdict(meta).items():
        model.metadata_props.add(key=PREFIX + key, value=json.dumps(value))
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))


# what each metadata value must be: a hand-edited or foreign file is refused naming the key, never a traceback
_TYPES = {"task": str, "classes": list, "task_params": dict, "img_size": int, "train_img_size": int, "mean": list,
          "std": list, "model": str, "folds": list, "fold_scores": list, "cv_score": (int, float, type(None)), "metric": str,
          "tta": bool, "int8": bool, "fp16": bool, "id_col": str, "label_col": str, "kit_version": str, "members": list,
          "answer": dict, "blend": dict, "export_key": str}


def _decode(props: dict, path) -> dict:
    values = {}
    for key, text in props.items():
        if key.startswith(PREFIX):
            try:
                values[key[len(PREFIX):]] = json.loads(text)
            except (TypeError, ValueError):
                raise KitError(f"{path}: metadata {key} is not valid JSON ({str(text)[:40]!r}); re-export the graph "
                               f"with this kit") from None
    return values


def _check_values(values: dict, path) -> None:
    for key, kind in _TYPES.items():
        value = values[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise KitError(f"{path}: metadata kit.{key} is {value!r}, not a {getattr(kind, '__name__', 'number')}; "
                           f"the file was edited or comes from elsewhere. Re-export it with this kit")
    if values["img_size"] < 8 or not values["classes"] or not all(isinstance(c, str) for c in values["classes"]):
        raise KitError(f"{path}: metadata kit.img_size must be at least 8 and kit.classes a list of names; re-export it")


def model_metadata(model, path: str | Path = "") -> Metadata:
    """Metadata of a loaded onnx ModelProto (its metadata_props), checked as read_metadata checks it."""
    return read_metadata({p.key: p.value for p in model.metadata_props}, path)


def read_metadata(props: dict, path: str | Path = "") -> Metadata:
    """Metadata from an onnxruntime session's custom_metadata_map (or onnx metadata_props as a dict), every value
    checked (a hand-edited or foreign file is one clear error)."""
    if PREFIX + "classes" not in props:
        raise KitError(f"{path} is not an ensemble exported by this kit (no kit.* metadata); export it with "
                       f"`python infer.py --export-only`")
    values = _decode(props, path)
    values.setdefault("task", "multiclass")             # files exported before tasks had a name
    values.setdefault("train_img_size", values.get("img_size"))         # ... or FixRes
    values.setdefault("members", [])                                    # ... or blends
    values.setdefault("task_params", {})
    values.setdefault("blend", {"method": "weights", "honest_cv": {}})     # ... or blend methods
    values.setdefault("export_key", "")                                 # ... or export keys
    values.setdefault("int8_agreement", None)                           # ... or int8 agreements
    values.setdefault("fp16", False)                                    # ... or fp16 twins
    values.setdefault("fp16_agreement", None)
    missing = [k for k in KEYS if k not in values and k != "answer"]
    if missing:
        raise KitError(f"{path}: its kit.* metadata lacks {', '.join(missing)}; re-export it with this kit")
    if not isinstance(values["task_params"], dict):
        raise KitError(f"{path}: metadata kit.task_params is {values['task_params']!r}, not a mapping; re-export it")
    try:
        task = restore({**values["task_params"], "kind": values["task"], "names": values["classes"]})
    except (TypeError, ValueError, KeyError, AttributeError) as e:
        raise KitError(f"{path}: metadata kit.task / kit.task_params do not describe a task ({type(e).__name__}: "
                       f"{e}); re-export the graph with this kit") from None
    values.setdefault("answer", task.answer_spec())                     # ... or answer specs
    _check_values(values, path)
    return Metadata(**{k: values[k] for k in KEYS})


def check_graph(input_shape: list, output_shape: list, meta: Metadata, path: str | Path = "") -> None:
    """The graph's own shapes must agree with its metadata (a file from another run, or a hand-edited one)."""
    if list(input_shape[1:]) != [meta.img_size, meta.img_size, 3]:
        raise KitError(f"{path}: the graph takes images of shape {input_shape[1:]} but its metadata says "
                       f"{meta.img_size}px; re-export it")
    outputs: Optional[int] = output_shape[-1] if isinstance(output_shape[-1], int) else None
    if outputs is not None and outputs != len(meta.classes):
        raise KitError(f"{path}: the graph outputs {outputs} classes but its metadata lists {len(meta.classes)}")
