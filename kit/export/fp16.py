"""The fp16 twin of an exported graph: weights and activations in float16 (onnxconverter-common's float16 converter),
the uint8 image input and the float32 outputs kept as they are, so every caller of the fp32 graph can call it
unchanged. For GPUs (CUDA, TensorRT, WebGPU), which run fp16 at twice fp32's rate or more and hold half the bytes;
onnxruntime's CPU provider runs it too, casting back to fp32 around the ops it has no fp16 kernel for, so it is
checked here the way a GPU would run it, only slower."""
from __future__ import annotations

import warnings
from pathlib import Path

from kit.core.errors import KitError

# ops left in fp32 on top of the converter's own list (Resize, TopK, ...): Cast, whose output onnxconverter-common 1.16
# retypes to float16 while its `to` stays float (onnxruntime then refuses the graph: "Type (tensor(float16)) of output
# arg ... does not match expected type (tensor(float))"); the uint8 -> float cast at the input is the one that hits it.
# Blocking Softmax and the reductions as well made the conversion run for minutes; measured without: probabilities
# sum to 1 within 1e-4 and move by < 1e-4 on a test model (tests/export/test_export.py)
KEEP_FP32 = ["Cast"]


def convert_graph(fp32_path: Path, out: Path) -> None:
    try:
        from onnxconverter_common import float16
    except ImportError:
        raise KitError("--fp16 needs the onnxconverter-common package: pip install -e '.[fp16]'") from None
    import onnx
    model = onnx.load(str(fp32_path))
    with warnings.catch_warnings():     # one line per weight below fp16's range, each set to +-1e-7: as meant
        warnings.simplefilter("ignore", UserWarning)
        half = float16.convert_float_to_float16(model, keep_io_types=True,
                                                op_block_list=float16.DEFAULT_OP_BLOCK_LIST + KEEP_FP32)
    onnx.save(half, str(out))
