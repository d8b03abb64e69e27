"""onnxruntime's execution providers by the names `--provider` takes (infer.py, kit.predict, kit.serve, a bundle's
predict.py), and what to install or check when one is missing; no onnxruntime import, so a command's --help and
argument check stay light. kit.runtime.predictor opens the sessions."""
from __future__ import annotations

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider",
             "tensorrt": "TensorrtExecutionProvider", "openvino": "OpenVINOExecutionProvider"}
PROVIDER_CHOICES = ("auto", *PROVIDERS)       # --provider of every command that predicts
# what to install when a provider is missing, and what to check when a session fell back to the CPU
INSTALL = {
    "cuda": ("Install onnxruntime-gpu with a matching CUDA (an offline bundle: build it with --gpu and install its "
             "requirements-gpu.txt)", "the CUDA/cuDNN installation"),
    "tensorrt": ("Install onnxruntime-gpu and the TensorRT libraries (libnvinfer) its release names",
                 "the TensorRT and CUDA libraries"),
    "openvino": ("Install onnxruntime-openvino in place of onnxruntime (pip uninstall onnxruntime; pip install "
                 "onnxruntime-openvino)", "the OpenVINO installation"),
}
