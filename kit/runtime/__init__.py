"""The shipped runtime, torch-free (the predictor wheel holds kit/core and kit/runtime, nothing else): an
onnxruntime Predictor, the submission writer, the HTTP service.

Reads: an exported graph (kit/core/artifact.py), image files, sample_submission.csv. Writes: submission.csv,
probability CSVs, JSON answers.
"""
