"""Which AGC clip factor λ works at which batch size, for SGD and for AdamW: the measurements behind
`--agc-clip auto` (kit.train.agc.clip_factor).

Each cell is the kit trained exactly as `train.py` trains it (the default recipe otherwise), on the same folds of
a benchmark competition, at one batch size and one λ; SGD's learning rate scales linearly with the batch
(0.05 at 32, as the paper scales 0.1 per 256), AdamW's stays at 1e-3. Runs go through bench/recipe.py's
harness (fresh process each, results appended to a JSON-lines file), so an interrupted sweep continues.

    python bench/agc_rule.py run [--dataset photo-patches] [--folds 0]
    python bench/agc_rule.py report
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SGD = {16: (0.02, 0.04, 0.08, 0.16, 0.32), 32: (0.01, 0.02, 0.04, 0.08, 0.16, 0.32), 64: (0.01, 0.04, 0.08, 0.16),
       128: (0.01, 0.02, 0.04, 0.08)}
ADAMW = {32: (0.0, 0.001, 0.01, 0.1), 128: (0.0, 0.001, 0.01, 0.1)}


def arms() -> dict[str, list[str]]:
    out = {}
    for batch, lambdas in SGD.items():
        for lam in lambdas:
            out[f"sgd-b{batch}-l{lam}"] = ["--batch-size", str(batch), "--lr", f"{0.05 * batch / 32:g}",
                                           "--agc-clip", str(lam)]
    for batch, lambdas in ADAMW.items():
        for lam in lambdas:
            out[f"adamw-b{batch}-l{lam}"] = ["--batch-size", str(batch), "--optimizer", "adamw", "--lr", "1e-3",
                                             "--agc-clip", str(lam)]
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["run", "report"])
    p.add_argument("--dataset", default="photo-patches")
    p.add_argument("--seeds", default="0")
    p.add_argument("--folds", default="0")
    p.add_argument("--results", default="bench/results/agc_rule.jsonl")
    p.add_argument("--data-root", default="data")
    args = p.parse_args()
    if args.command == "run":
        cmd = [sys.executable, str(ROOT / "bench" / "recipe.py"), "run", "--datasets", args.dataset, "--seeds",
               args.seeds, "--folds", args.folds, "--arms", "kit", "--results", args.results, "--work",
               "runs/bench_agc_rule", "--data-root", args.data_root]
        for name, flags in arms().items():
            cmd += ["--extra-arm", f"{name}={json.dumps(flags)}"]
        subprocess.run(cmd, check=True)
        return
    rows = [json.loads(line) for line in Path(args.results).read_text().splitlines() if line.strip()]
    for optimizer, grid in (("sgd", SGD), ("adamw", ADAMW)):
        print(f"\n{optimizer}: validation accuracy (mean over folds and seeds) by batch size and λ")
        lambdas = sorted({lam for values in grid.values() for lam in values})
        print("| batch | " + " | ".join(f"λ {lam:g}" for lam in lambdas) + " | best |")
        print("|---:|" + "---:|" * (len(lambdas) + 1))
        for batch in grid:
            cells = {}
            for lam in grid[batch]:
                vals = [r["val"] for r in rows if r["arm"] == f"{optimizer}-b{batch}-l{lam}"]
                if vals:
                    cells[lam] = float(np.mean(vals))
            best = max(cells, key=cells.get) if cells else None
            print(f"| {batch} | " + " | ".join(f"{cells[lam]:.4f}" if lam in cells else "" for lam in lambdas) +
                  f" | {best if best is not None else ''} |")


if __name__ == "__main__":
    main()
