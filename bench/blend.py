"""Do blends chosen the way winners choose them beat the best single run, honestly, and does the test set agree?

Three runs on one folds file of a benchmark competition, trained with `train.py` exactly as a user would (unless
already there): eca_nfnet_l0, nf_resnet26, and eca_nfnet_l0 with another seed. For every blend method
(kit.evaluate.blend: weights, hill, rank for rank metrics, stack) the nested honest CV on OOF predictions, and the
held-out test accuracy (solution.csv) of each method fitted on all OOF rows; beside them, every single run's honest
CV (its TTA views chosen without the scored fold) and test accuracy.

    python bench/blend.py [--dataset digits-hard] [--folds-csv F] [--reuse RUN_DIR]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.recipe import _accuracy, test_set  # noqa: E402

RUNS = (("eca_nfnet_l0", 0), ("nf_resnet26", 0), ("eca_nfnet_l0", 1))


def train(data: Path, run: Path, folds_csv: Path, model: str, seed: int, epochs: int) -> None:
    if all((run / f"fold{k}" / "best.pt").is_file() for k in range(5)):
        return
    cmd = [sys.executable, "train.py", "--data-dir", str(data), "--run-dir", str(run), "--folds-csv", str(folds_csv),
           "--fold", "all", "--model", model, "--seed", str(seed), "--no-pretrained", "--img-size", "32",
           "--epochs", str(epochs)]
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)


@torch.no_grad()
def test_outputs(blend, data: Path) -> np.ndarray:
    """A run's test predictions as its graph makes them: every fold model with the run's chosen views, averaged."""
    from kit.core.images import load_rgb
    from kit.export.ensemble import Ensemble
    paths, _ = test_set(data)
    ensemble = Ensemble.of(blend.members).eval()
    size = max(m.size for m in blend.members)
    images = torch.from_numpy(np.stack([load_rgb(p, size) for p in paths]))
    return np.concatenate([ensemble(images[i:i + 128])[0].numpy() for i in range(0, len(images), 128)])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="digits-hard")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--work", default="runs/bench_blend")
    p.add_argument("--data-root", default="data")
    p.add_argument("--folds-csv", help="the folds file (default WORK/DATASET/folds.csv, made with seed 0)")
    p.add_argument("--reuse", help="an eca_nfnet_l0 seed-0 run already trained on that folds file")
    p.add_argument("--results", default="bench/results/blend.jsonl")
    args = p.parse_args()
    from bench.datasets import build
    from bench.recipe import make_split
    from kit.evaluate.blend import fit
    from kit.store.rundir import RunDir
    from kit.export.build import plan, sample_rows
    data = build(args.dataset, Path(args.data_root))
    work = Path(args.work) / args.dataset
    folds_csv = Path(args.folds_csv or work / "folds.csv")
    make_split(data, folds_csv, 0)
    runs = []
    for i, (model, seed) in enumerate(RUNS):
        run = Path(args.reuse) if i == 0 and args.reuse else work / f"{model}-seed{seed}"
        train(data, run, folds_csv, model, seed, args.epochs)
        runs.append(RunDir(run))
    _, labels = test_set(data)
    rows = []
    singles = []
    for run in runs:                                # each run alone: its honest CV (nested views) and test accuracy
        single = plan([run], None, None, None, 2000)
        test = _accuracy(test_outputs(single.blends[0], data), single.task.names, labels)
        singles.append({"run": run.path.name, "cv": single.cv, "test": test})
        print(f"{run.path.name}: honest CV {single.cv:.4f}, test {test:.4f}", flush=True)
    together = plan(runs, None, None, None, 2000)
    outputs = [test_outputs(b, data) for b in together.blends]
    oof_y = together.task.encode([together.oof.labels[i] for i in sample_rows(together.oof, 2000)])
    for method, honest in together.honest.items():
        # fitted on all the sampled OOF rows, as the exported graph is, then applied to the test set
        blend = fit(method, together.task, together.metric, oof_y, [b.outputs for b in together.blends])
        test = _accuracy(blend.apply(together.task, outputs), together.task.names, labels)
        rows.append({"method": method, "cv": honest.cv, "test": test, "weights": blend.weights.tolist()})
        print(f"{method}: honest CV {honest.cv:.4f}, test {test:.4f}, weights {np.round(blend.weights, 3).tolist()}",
              flush=True)
    chosen = max(rows, key=lambda r: r["cv"])
    best = max(singles, key=lambda r: r["cv"])
    summary = {"dataset": args.dataset, "singles": singles, "methods": rows, "chosen": chosen["method"],
               "cv_gain": chosen["cv"] - best["cv"], "test_gain": chosen["test"] - best["test"]}
    print(f"chosen {chosen['method']}: honest CV {100 * summary['cv_gain']:+.2f} pt, test {100 * summary['test_gain']:+.2f} "
          f"pt over the best single run by honest CV ({best['run']})")
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    with open(args.results, "a") as f:
        f.write(json.dumps(summary) + "\n")


if __name__ == "__main__":
    main()
