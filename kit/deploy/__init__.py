"""Deploy targets built from an exported graph: the offline Kaggle bundle (bundle) and the browser page (web).

Reads: an exported graph or a run dir. Writes: a bundle folder (graph, wheels, predict.py, budget.md) or a page
folder (index.html, kit.js, model.onnx, onnxruntime-web).
"""
