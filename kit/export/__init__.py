"""Export (torch): fold models of one or several runs -> one ONNX graph checked against PyTorch (build, over
ensemble, onnx_export, graph, parity, int8), and the infer pipeline that reuses or makes that graph and writes
the submission (infer).

Reads: RUN/fold<k>/best.pt, OOF rows and their images. Writes: ensemble.onnx (contract: kit/core/artifact.py),
ensemble.int8.onnx, blend.md.
"""
