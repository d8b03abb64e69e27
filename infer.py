"""Export the fold ensemble to ONNX and predict the test set: `python infer.py` after training.

With --onnx PATH nothing is exported and PyTorch is not imported: only onnxruntime, numpy and Pillow run.
Every flag and its default: kit/export/infer.py InferRequest.
"""
from kit.core.entry import main_guard, parse_request


def main(argv=None):
    from kit.export.infer import InferRequest, infer
    infer(parse_request(InferRequest, argv, description=__doc__))


if __name__ == "__main__":
    main_guard(main)
