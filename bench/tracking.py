"""What --tracker costs: train.py on one fold with each tracker, against no tracker, each arm a fresh process.

The wall time of each process (start to exit, what a user waits for) and, from the run's metrics.csv, the training
seconds of its epochs; `--rounds` rounds with the arms in rotated order, on a quiet machine. The report gives each
tracker's median wall time and its extra seconds and percent over `none` in the same round.

    python bench/tracking.py [--data data/digits-hard] [--trackers none,tensorboard,mlflow,mlflow-warm,wandb]
                             [--rounds 3]

The MLflow store (a new one for each run; one shared store for `mlflow-warm`) and the W&B offline folder go under
--work (MLFLOW_TRACKING_URI, WANDB_DIR), W&B offline.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def one(args, arm: str, round_: int) -> dict:
    """`mlflow-warm`: MLflow on a store that exists already (a user's second command); every other arm's store is
    new (the first command, the worst case)."""
    tracker = arm.removesuffix("-warm")
    work = Path(args.work) / f"r{round_}-{arm}"
    store = warm_store(args) if arm.endswith("-warm") else work / "mlflow.db"
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{store}", "WANDB_DIR": str(work),
           "WANDB_MODE": "offline"}
    work.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "train.py", "--data-dir", args.data, "--run-dir", str(work / "run"), "--folds-csv",
           str(Path(args.work) / "folds.csv"), "--fold", "0", "--no-pretrained", "--img-size", "32", "--epochs",
           str(args.epochs), "--tracker", tracker]
    t = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wall = time.perf_counter() - t
    with open(work / "run" / "fold0" / "metrics.csv") as f:
        epochs = sum(float(r["seconds"]) for r in csv.DictReader(f))
    return {"tracker": arm, "round": round_, "wall": wall, "epochs_seconds": epochs}


def warm_store(args) -> Path:
    """A store that already holds the schema (created once, outside the timed runs)."""
    path = Path(args.work) / "warm" / "mlflow.db"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        from mlflow.tracking import MlflowClient
        MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="data/digits-hard")
    p.add_argument("--trackers", default="none,tensorboard,mlflow,mlflow-warm,wandb")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--work", default="/tmp/bench_tracking")
    p.add_argument("--results", default="bench/results/tracking.jsonl")
    args = p.parse_args()
    trackers = args.trackers.split(",")
    rows = []
    for r in range(args.rounds):
        for tracker in trackers[r % len(trackers):] + trackers[:r % len(trackers)]:
            rows.append(one(args, tracker, r))
            print(json.dumps(rows[-1]), flush=True)
    with open(args.results, "a") as f:
        for row in rows:
            f.write(json.dumps({**row, "data": args.data, "epochs": args.epochs,
                                "date": time.strftime("%Y-%m-%d")}) + "\n")
    base = {row["round"]: row["wall"] for row in rows if row["tracker"] == "none"}
    print(f"\n| tracker | wall s (median of {args.rounds}) | extra s over none (median, same round) | extra % |")
    print("|---|---:|---:|---:|")
    for tracker in trackers:
        mine = [row for row in rows if row["tracker"] == tracker]
        extra = [row["wall"] - base[row["round"]] for row in mine]
        wall = statistics.median(row["wall"] for row in mine)
        print(f"| {tracker} | {wall:.1f} | {statistics.median(extra):+.2f} | "
              f"{100 * statistics.median(e / base[row['round']] for e, row in zip(extra, mine)):+.1f} % |")


if __name__ == "__main__":
    main()
