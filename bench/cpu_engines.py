"""CPU engines on one exported graph, side by side in one run (issue 33): onnxruntime as the kit opens it
(kit.runtime.predictor.create_session: full graph optimization, intra-op threads chosen by onnxruntime), onnxruntime
under other session options (threads, graph optimization level, memory arena, parallel execution), and OpenVINO's own
runtime (the `openvino` package, not installed by the kit: `pip install openvino`) compiling the same ONNX file.

    python bench/cpu_engines.py --onnx RUN/ensemble.onnx
    python bench/cpu_engines.py --onnx RUN/ensemble.onnx --images DATA/train_images --held-out DATA/test_images
    python bench/cpu_engines.py --synthetic eca_nfnet_l0 --img-size 224 --folds 1

With --images, two int8 graphs join: static QDQ as `infer.py --int8` makes it (kit.export.int8: per-channel int8
weights, uint8 activations, calibrated on CALIBRATION_IMAGES of --images) and onnxruntime's dynamic quantization
(per-channel int8 weights, activations quantized at run time, no calibration); --held-out then scores how often each
engine's top class equals fp32's on those images.

Prints images/s per engine and batch size, each against the kit's session, and the largest |Δprob| of each engine's
output against it (the same graph should give the same answer). Rounds alternate between engines and the median
counts, so a noisy machine hits all of them alike; each engine's calls run as a block after a pause, because an
onnxruntime session's threads keep spinning for a while after a call and would slow whichever engine runs next.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from kit.core.artifact import INPUT  # noqa: E402
from kit.runtime.predictor import create_session  # noqa: E402


def ort_variant(path: Path, config: dict | None = None, **settings):
    """An onnxruntime CPU session with `settings` set on its SessionOptions and `config` as session config entries
    (the kit's values otherwise)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = settings.pop("level", ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    for name, value in settings.items():
        setattr(options, name, value)
    for key, value in (config or {}).items():
        options.add_session_config_entry(key, value)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def engines(path: Path) -> dict:
    """name -> a function of a uint8 batch returning the graph's first output."""
    kit = create_session(path, "cpu")
    found = {"ort (kit)": lambda x: kit.run(None, {INPUT: x})[0]}
    cores = os.cpu_count() or 1
    for name, settings in {
        "ort 1 thread": dict(intra_op_num_threads=1),
        f"ort {cores} threads": dict(intra_op_num_threads=cores),
        f"ort {cores} threads, no spinning": dict(intra_op_num_threads=cores,
                                                  config={"session.intra_op.allow_spinning": "0"}),
        "ort extended optimization": dict(level=ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED),
        "ort no memory arena": dict(enable_cpu_mem_arena=False),
        "ort parallel execution": dict(execution_mode=ort.ExecutionMode.ORT_PARALLEL),
    }.items():
        session = ort_variant(path, **settings)
        found[name] = (lambda s: lambda x: s.run(None, {INPUT: x})[0])(session)
    try:
        import openvino as ov
    except ImportError:
        print("openvino is not installed (pip install openvino): its rows are left out")
        return found
    core = ov.Core()
    for hint in ("LATENCY", "THROUGHPUT"):
        compiled = core.compile_model(core.read_model(str(path)), "CPU", {"PERFORMANCE_HINT": hint})
        request = compiled.create_infer_request()
        found[f"openvino {ov.__version__.split('-')[0]} {hint.lower()}"] = \
            (lambda r: lambda x: r.infer({0: x})[0].copy())(request)
    return found


def time_blocks(fns: dict, rounds: int, calls: int = 3, pause: float = 0.3) -> dict:
    """Median seconds a call per engine: each round, each engine in turn, after `pause` seconds idle, `calls` calls."""
    times = {k: [] for k in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            time.sleep(pause)
            for _ in range(calls):
                t = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def int8_graphs(path: Path, images: Path, size: int, tmp: Path) -> dict:
    """{"int8 static": graph, "int8 dynamic": graph} made from `path`."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from kit.core.table import IMAGE_SUFFIXES
    from kit.export.int8 import CALIBRATION_IMAGES, quantize_graph, sample_images
    files = sorted(p for p in images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    static, dynamic = tmp / "static.onnx", tmp / "dynamic.onnx"
    quantize_graph(path, static, sample_images(files, size, CALIBRATION_IMAGES))
    quantize_dynamic(str(path), str(dynamic), per_channel=True, weight_type=QuantType.QInt8)
    return {"int8 static (kit)": static, "int8 dynamic": dynamic}


def agreement(fns: dict, folder: Path, size: int) -> dict:
    """Per engine, the share of `folder`'s images whose top class is fp32's (the kit session's)."""
    from kit.core.images import load_rgb
    from kit.core.table import IMAGE_SUFFIXES
    images = np.stack([load_rgb(p, size) for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES])
    top = {k: np.concatenate([fn(images[i:i + 64]) for i in range(0, len(images), 64)]).argmax(1)
           for k, fn in fns.items()}
    return {k: float((v == top["ort (kit)"]).mean()) for k, v in top.items()}


def synthetic_graph(model: str, size: int, folds: int, out: Path) -> Path:
    from bench.infer import ensemble
    import torch
    from kit.export.onnx_export import export_onnx
    from kit.train.members import fold_weight_standardization
    from kit.train.model import create_model, normalization
    torch.manual_seed(0)
    models = [create_model(model, 10).eval() for _ in range(folds)]
    for m in models:
        fold_weight_standardization(m)
    mean, std = normalization(models[0])
    export_onnx(ensemble(models, mean, std, size), size, out)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--onnx", help="an exported ensemble (infer.py --export-only)")
    p.add_argument("--synthetic", help="timm model name: random-weight folds of it, exported as the kit does")
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--folds", type=int, default=1)
    p.add_argument("--batches", default="1,16,64")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--images", type=Path, help="a folder of images: calibrate and add the two int8 graphs")
    p.add_argument("--held-out", type=Path, help="a folder of images the int8 graphs are scored on against fp32")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.onnx) if args.onnx else synthetic_graph(args.synthetic, args.img_size, args.folds,
                                                                  Path(tmp) / "graph.onnx")
        kit = create_session(path, "cpu")
        size = kit.get_inputs()[0].shape[1]
        fns = engines(path)
        if args.images:
            for name, graph in int8_graphs(path, args.images, size, Path(tmp)).items():
                session = create_session(graph, "cpu")
                fns[name] = (lambda s: lambda x: s.run(None, {INPUT: x})[0])(session)
            if args.held_out:
                for name, share in agreement(fns, args.held_out, size).items():
                    print(f"top class as fp32's on {args.held_out}: {name} {100 * share:.2f} %")
        what = args.onnx or f"{args.folds}x {args.synthetic} @ {args.img_size}px (random weights)"
        print(f"graph: {what}; onnxruntime {ort.__version__}; {os.cpu_count()} cores")
        rng = np.random.default_rng(0)
        for b in [int(x) for x in args.batches.split(",")]:
            images = rng.integers(0, 256, (b, size, size, 3), dtype=np.uint8)
            reference = fns["ort (kit)"](images)
            diffs = {k: float(np.abs(fn(images) - reference).max()) for k, fn in fns.items()}   # and the warm-up
            t = time_blocks({k: (lambda f=fn: f(images)) for k, fn in fns.items()}, args.rounds)
            base = b / t["ort (kit)"]
            print(f"batch {b}:")
            for k, seconds in t.items():
                print(f"  {k:<34} {b / seconds:9.1f} images/s  {b / seconds / base:5.2f}x  max |Δ| {diffs[k]:.1e}",
                      flush=True)


if __name__ == "__main__":
    main()
