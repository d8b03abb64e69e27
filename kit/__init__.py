"""Competition kit for image classification: folds -> NFNet + AGC training -> ONNX ensemble -> submission."""

__version__ = "0.1.0"
