"""`python -m kit.predict --onnx MODEL.onnx SOURCE... --out PREDS.csv`: classify any images (kit/runtime/predict.py)."""
from kit.core.entry import main_guard
from kit.runtime.predict import main

if __name__ == "__main__":
    main_guard(main)
