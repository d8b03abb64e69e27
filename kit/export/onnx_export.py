"""A torch module -> an ONNX file (torch.export-based exporter, dynamic batch), simplified by kit.export.graph."""
from __future__ import annotations

import warnings
from pathlib import Path

import onnx
import torch

from kit.core.artifact import INPUT, MEMBERS, OUTPUT
from kit.export.graph import simplify

OPSET = 18


def export_onnx(module: torch.nn.Module, img_size: int, path: Path) -> None:
    example = torch.zeros(2, img_size, img_size, 3, dtype=torch.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(module.eval(), (example,), input_names=[INPUT], output_names=[OUTPUT, MEMBERS],
                                    opset_version=OPSET, dynamo=True,
                                    dynamic_shapes={INPUT: {0: torch.export.Dim("batch", min=1)}},
                                    verbose=False, external_data=False)
    model = program.model_proto
    simplify(model.graph)
    onnx.save(model, str(path))
