"""A torch-free Predictor: an onnxruntime session over a kit-exported graph (kit.core.artifact), with provider checks,
turning image files or uint8 arrays into the graph's predictions. Needs onnxruntime, numpy and Pillow only, so it
runs wherever onnxruntime does: a Kaggle notebook, a server, a bundle."""
from __future__ import annotations

import logging
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import numpy as np
import onnxruntime as ort
from tqdm import tqdm

from kit.core.artifact import INPUT, OUTPUT, Metadata, check_graph, read_metadata
from kit.core.errors import KitError
from kit.core.providers import INSTALL, PROVIDER_CHOICES, PROVIDERS
from kit.core.images import load_rgb

log = logging.getLogger(__name__)


def create_session(onnx_path: str | Path, provider: str = "auto", threads: int = 0,
                   graph: bytes | None = None) -> ort.InferenceSession:
    """An onnxruntime session on the asked provider; a session that fell back to CPU is an error.

    `graph`: the file's bytes when the caller holds them (an export that just wrote the file): the session then
    runs exactly that graph, even if another process replaces the file in between.
    Session options: full graph optimization (constant folding, conv+activation fusion) and intra-op threads
    = all cores (0 lets onnxruntime choose one per physical core).
    """
    path = Path(onnx_path)
    if graph is None and not path.is_file():
        raise KitError(f"ONNX file {path} does not exist; export it first with `python infer.py --export-only`")
    available = ort.get_available_providers()
    if provider == "auto":          # CUDA where it is there; TensorRT and OpenVINO only when asked for by name
        provider = "cuda" if PROVIDERS["cuda"] in available else "cpu"
    if provider not in PROVIDERS:
        raise KitError(f"--provider must be one of {', '.join(PROVIDER_CHOICES)}, got {provider!r}")
    wanted = PROVIDERS[provider]
    if wanted not in available:
        raise KitError(f"--provider {provider}: onnxruntime here has no {wanted} (available: "
                       f"{', '.join(available)}). {INSTALL[provider][0]}, or use --provider cpu")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    # TensorRT hands what it cannot build to CUDA; every provider hands what it lacks to the CPU
    providers = {"cpu": [wanted], "tensorrt": [wanted, PROVIDERS["cuda"], PROVIDERS["cpu"]]}.get(
        provider, [wanted, PROVIDERS["cpu"]])
    try:
        session = ort.InferenceSession(graph if graph is not None else str(path), options, providers=providers)
    except Exception as e:  # noqa: BLE001 - onnxruntime raises several unrelated types for a bad file
        raise KitError(f"onnxruntime cannot load {path}: {str(e).splitlines()[0]}") from None
    if session.get_providers()[0] != wanted:
        raise KitError(f"onnxruntime fell back to {session.get_providers()[0]} instead of {wanted}; check "
                       f"{INSTALL[provider][1]}, or use --provider cpu")
    return session


def image_batches(paths: list[Path], size: int, batch_size: int, workers: int) -> Iterator[np.ndarray]:
    """uint8 [B, size, size, 3] batches in order; decoding runs in threads, at most 2 batches in flight."""
    with ThreadPoolExecutor(workers) as pool:
        pending: deque = deque()
        for start in range(0, len(paths), batch_size):
            pending.append([pool.submit(load_rgb, p, size) for p in paths[start:start + batch_size]])
            if len(pending) == 2:
                yield np.stack([f.result() for f in pending.popleft()])
        while pending:
            yield np.stack([f.result() for f in pending.popleft()])


class Predictor:
    """One exported ensemble, loaded once; `predict_files` / `predict_images` return its predictions [N, C]."""

    def __init__(self, onnx_path: str | Path, provider: str = "auto", threads: int = 0, graph: bytes | None = None):
        self.path = Path(onnx_path)
        self.session = create_session(onnx_path, provider, threads, graph)
        self.meta: Metadata = read_metadata(self.session.get_modelmeta().custom_metadata_map, onnx_path)
        names = ([i.name for i in self.session.get_inputs()], [o.name for o in self.session.get_outputs()])
        if names[0] != [INPUT] or names[1][:1] != [OUTPUT]:
            raise KitError(f"{onnx_path}: the graph's input/outputs are {names}, not {INPUT!r} -> {OUTPUT!r}; it was "
                           f"not exported by this kit")
        check_graph(self.session.get_inputs()[0].shape, self.session.get_outputs()[0].shape, self.meta, onnx_path)
        self.task = self.meta.task_()
        self._check_activation()

    def _check_activation(self) -> None:
        """The graph's outputs must be what its metadata's task says (a softmax graph relabelled as multilabel
        would write empty cells): two probe images, one black, one of seeded noise."""
        size = self.meta.img_size
        probe = np.stack([np.zeros((size, size, 3), np.uint8),
                          np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)])
        try:
            outputs = self.predict_images(probe)
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own types for a graph that cannot run
            raise KitError(f"{self.path}: onnxruntime cannot run the graph on {size}px images "
                           f"({str(e).splitlines()[0][:200]}); re-export it with this kit") from None
        if self.meta.blend.get("method") == "rank":            # ranks in [0, 1], not probabilities
            problem = None if 0 <= outputs.min() and outputs.max() <= 1 else "its rank outputs lie outside [0, 1]"
        else:
            problem = self.task.check_outputs(outputs, quantized=self.meta.int8)
        if problem:
            raise KitError(f"{self.path}: its metadata says {self.meta.task} but {problem}; the metadata was edited or "
                           f"belongs to another graph. Re-export it with this kit")

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()

    def predict_images(self, images: np.ndarray) -> np.ndarray:
        """uint8 [N, S, S, 3] (kit.core.images.load_rgb output) -> predictions [N, C]."""
        return self.session.run(None, {INPUT: images})[0]

    def answer(self, row: np.ndarray, top_k: int | None = None) -> dict:
        """The JSON answer for one image's predictions (the service, the page and kit.predict give the same)."""
        return self.task.answer(row, top_k)

    def predict_files(self, paths: list[Path], batch_size: int = 32, workers: int = 4) -> np.ndarray:
        if batch_size < 1:
            raise KitError(f"--batch-size must be at least 1, got {batch_size}")
        out = []
        bar = tqdm(total=len(paths), disable=None, desc="predict", unit="img")
        for batch in image_batches(paths, self.meta.img_size, batch_size, workers):
            out.append(self.predict_images(batch))
            bar.update(len(batch))
        bar.close()
        return np.concatenate(out) if out else np.zeros((0, len(self.meta.classes)), dtype=np.float32)
