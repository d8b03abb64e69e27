"""The shipped runtime, torch-free (the predictor wheel holds kit/core and kit/runtime, nothing else): an
onnxruntime Predictor, the submission writer, the predict command for any images, the HTTP service.

Reads: an exported graph (kit/core/artifact.py), image files, sample_submission.csv. Writes: submission.csv,
probability CSVs, predictions of any images (CSV or JSON lines), JSON answers over HTTP.
"""
