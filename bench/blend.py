"""Does a blend of two architectures beat the better single run, honestly, and what does each member cost?

Trains (unless already there) two runs on one shared folds file of a benchmark competition, with `train.py`
exactly as a user would, then exports each run alone and the blend of both through `kit.export.build`, and reports:
each run's OOF score with its chosen views, the blend's honest CV (weights refitted without each scored fold)
and its optimistic in-sample CV, the weights, the members' OOF correlation, the test accuracy of each graph
(solution.csv), and onnxruntime images/s of each graph on this machine.

    python bench/blend.py [--dataset digits-hard] [--models eca_nfnet_l0,nf_resnet26] [--sizes 32,32]
"""
from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def train(data: Path, run: Path, folds_csv: Path, model: str, size: int, epochs: int) -> None:
    if all((run / f"fold{k}" / "best.pt").is_file() for k in range(5)):
        return
    cmd = [sys.executable, "train.py", "--data-dir", str(data), "--run-dir", str(run), "--folds-csv", str(folds_csv),
           "--fold", "all", "--num-folds", "5", "--model", model, "--no-pretrained", "--img-size", str(size),
           "--epochs", str(epochs)]
    subprocess.run(cmd, cwd=ROOT, check=True)


def test_accuracy_and_rate(graph: bytes, data: Path, rounds: int = 3) -> tuple[float, float]:
    from kit.core.images import load_rgb
    from kit.runtime.predictor import Predictor
    with open(data / "solution.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    predictor = Predictor("graph", "cpu", graph=graph)
    images = np.stack([load_rgb(next((data / "test_images").glob(r["image_id"] + ".*")), predictor.meta.img_size)
                       for r in rows])
    predictor.predict_images(images[:64])                                          # warm-up
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        probs = np.concatenate([predictor.predict_images(images[i:i + 64]) for i in range(0, len(images), 64)])
        times.append(time.perf_counter() - t)
    pred = np.asarray(predictor.task.names)[probs.argmax(1)]
    return float(np.mean(pred == np.array([r["label"] for r in rows]))), len(images) / float(np.median(times))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="digits-hard")
    p.add_argument("--models", default="eca_nfnet_l0,nf_resnet26")
    p.add_argument("--sizes", default="32,32")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--work", default="runs/bench_blend")
    args = p.parse_args()
    from bench.datasets import build
    from kit.export.build import export
    data = build(args.dataset)
    work = Path(args.work) / args.dataset
    folds_csv = work / "folds.csv"
    runs = []
    for model, size in zip(args.models.split(","), [int(s) for s in args.sizes.split(",")]):
        run = work / f"{model}_{size}"
        train(data, run, folds_csv, model, size, args.epochs)
        runs.append(run)
    print(f"{args.dataset}: {', '.join(str(r) for r in runs)}")
    print("| graph | members | views | OOF accuracy (CV) | test accuracy | ORT images/s |")
    print("|---|---|---|---:|---:|---:|")
    for graph_runs in [[r] for r in runs] + [runs]:
        summary = export(graph_runs, out=work / ("+".join(r.name for r in graph_runs) + ".onnx"))
        accuracy, rate = test_accuracy_and_rate(summary["graph"], data)
        members = "; ".join(f"{m['model']}@{m['img_size']} w={m['weight']:.3f}" for m in summary["members"])
        views = "; ".join(",".join(m["views"]) for m in summary["members"])
        cv = summary["blend"]["cv"] if len(graph_runs) > 1 else summary["cv"]
        label = "blend (honest CV)" if len(graph_runs) > 1 else graph_runs[0].name
        print(f"| {label} | {members} | {views} | {cv:.4f} | {accuracy:.4f} | {rate:.0f} |", flush=True)
        if len(graph_runs) > 1:
            print(f"(blend in-sample CV {summary['blend']['in_sample']:.4f}; per fold "
                  f"{', '.join(f'{v:.4f}' for v in summary['blend']['per_fold'].values())}; OOF correlation "
                  f"{np.array(summary['blend']['correlation'])[0, 1]:.3f})")


if __name__ == "__main__":
    main()
