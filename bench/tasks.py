"""The multi-label and regression demos, trained as a user would, against the questions that matter for them:

  multilabel  do per-tag thresholds fitted on OOF beat a fixed 0.5 on F1 (and by how much once fitted honestly,
              without the scored fold)? And on the held-out test set?
  regression  does the kit's RMSE beat predicting the training mean by a wide margin, is the OOF RMSE within
              noise of the test RMSE, and which loss wins: MSE, Huber, or BCE on the target scaled to [0, 1]
              (the trick of top PetFinder Pawpularity teams)?

    python bench/tasks.py [--epochs 8] [--folds 5]

Each run is `train.py --demo VARIANT --fold all` then `infer.py` in a work folder; the test scores come from the
demo's hidden labels (solution.csv).
"""
from __future__ import annotations

import argparse
import csv
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def run(work: Path, variant: str, run_name: str, folds: int, epochs: int, *flags: str) -> Path:
    run_dir = work / "runs" / run_name
    if not (run_dir / "oof.csv").is_file():
        subprocess.run([sys.executable, str(ROOT / "train.py"), "--demo", variant, "--fold", "all", "--num-folds",
                        str(folds), "--epochs", str(epochs), "--run-dir", str(run_dir), *flags], cwd=work, check=True,
                       stdout=subprocess.DEVNULL)
    out = work / f"{run_name}.csv"
    subprocess.run([sys.executable, str(ROOT / "infer.py"), "--run-dir", str(run_dir), "--out", str(out),
                    "--provider", "cpu"], cwd=work, check=True, stdout=subprocess.DEVNULL)
    return run_dir


def rows(path: Path) -> dict:
    with open(path, newline="", encoding="utf-8") as f:
        return {r["image_id"]: r["label"] for r in csv.DictReader(f)}


def multilabel(work: Path, args) -> None:
    from sklearn.metrics import f1_score
    from kit.store.oof import read_oof
    from kit.evaluate.report import nested_thresholds
    from kit.store.rundir import RunDir
    from kit.core.metrics import best_thresholds
    run_dir = run(work, "multilabel", "multilabel", args.folds, args.epochs)
    task = RunDir(run_dir).task()
    oof = read_oof([run_dir / "oof.csv"])
    y, p = task.encode(oof.labels), oof.outputs
    fitted = p >= np.asarray(best_thresholds(y, p))
    print("multilabel demo (digits -> even / large / loop / prime), OOF F1 micro:")
    print(f"  fixed 0.5: {f1_score(y, p >= 0.5, average='micro'):.4f}; thresholds fitted on all OOF: "
          f"{f1_score(y, fitted, average='micro'):.4f}; fitted without each scored fold (honest): "
          f"{f1_score(y, nested_thresholds(y, p, oof.folds), average='micro'):.4f}")
    truth, sub = rows(work / "data/digits-multilabel/solution.csv"), rows(work / "multilabel.csv")
    names = task.names
    yt = np.array([[t in v.split() for t in names] for v in truth.values()])
    exported = np.array([[t in sub[i].split() for t in names] for i in truth])
    from kit.runtime.predictor import Predictor
    from kit.core.images import load_rgb
    predictor = Predictor(run_dir / "ensemble.onnx", "cpu")
    images = np.stack([load_rgb(work / "data/digits-multilabel/test_images" / f"{i}.png", predictor.meta.img_size)
                       for i in truth])
    probs = predictor.predict_images(images)
    print(f"  test set: F1 micro with the exported OOF-fitted thresholds {f1_score(yt, exported, average='micro'):.4f} "
          f"(thresholds {[round(t, 3) for t in predictor.meta.task_params['thresholds']]}); with 0.5: "
          f"{f1_score(yt, probs >= 0.5, average='micro'):.4f}")


def regression(work: Path, args) -> None:
    from kit.store.oof import read_oof
    truth = rows(work / "data/digits-regression/solution.csv") if (work / "data/digits-regression").exists() else None
    print("regression demo (the digit's value), RMSE:")
    print("| loss | OOF RMSE | test RMSE | predicting the training mean (test) |")
    print("|---|---:|---:|---:|")
    for loss in args.losses.split(","):
        run_dir = run(work, "regression", f"regression-{loss}", args.folds, args.epochs, "--regression-loss", loss)
        oof = read_oof([run_dir / "oof.csv"])
        y = np.array([float(v) for v in oof.labels])
        oof_rmse = float(np.sqrt(np.mean((oof.outputs[:, 0] - y) ** 2)))
        truth = rows(work / "data/digits-regression/solution.csv")
        sub = rows(work / f"regression-{loss}.csv")
        t = np.array([float(v) for v in truth.values()])
        test_rmse = float(np.sqrt(np.mean((np.array([float(sub[i]) for i in truth]) - t) ** 2)))
        baseline = float(np.sqrt(np.mean((t - y.mean()) ** 2)))
        print(f"| {loss} | {oof_rmse:.4f} | {test_rmse:.4f} | {baseline:.4f} |", flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--work", default="runs/bench_tasks")
    p.add_argument("--only", choices=["multilabel", "regression"])
    p.add_argument("--losses", default="mse,huber,bce", help="regression losses to compare")
    args = p.parse_args()
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    if args.only in (None, "multilabel"):
        multilabel(work, args)
    if args.only in (None, "regression"):
        regression(work, args)


if __name__ == "__main__":
    main()
