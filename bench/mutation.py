"""Mutation testing of the critical modules with cosmic-ray: does each module's own fast test file fail when a line
of it is broken?

Each module in MODULES is mutated by cosmic-ray (operators: comparisons, arithmetic, boolean and unary operators,
number and keyword replacement, break/continue, ...) in a throwaway git worktree of HEAD (cosmic-ray edits files
in place), and the tests mapped to it run once per mutant. A mutant is killed when its tests fail (or time out),
survives when they pass. The score is killed / (killed + survived); survivors are printed for review (some are
equivalent mutants: a change no test can observe, e.g. `>=` for `>` where equality cannot happen).

    pip install cosmic-ray
    python bench/mutation.py [--modules agc,blend] [--results bench/results/mutation.jsonl]

Results append to the JSON-lines file, one row per module: {"module", "tests", "mutants", "killed", "survived",
"incompetent", "score", "survivors": [...], "seconds", "date"}.
"""
from __future__ import annotations

import argparse
import json
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# -n 0: one process; starting a pool of test workers would cost more than one mutant's tests
PYTEST = f"{sys.executable} -m pytest -x -q -p no:cacheprovider -n 0"

# module -> (file, the fast tests that guard it); the test expressions leave out the session fixtures that train
MODULES = {
    "agc": ("kit/train/agc.py", "tests/train/test_agc.py"),
    "blend": ("kit/evaluate/blend.py", "tests/evaluate/test_blend.py -k 'views or weights or honest or nested or hill or "
                                       "auto_keeps or rank_and_stack'"),
    "folds": ("kit/prepare/folds.py", "tests/prepare/test_folds.py"),
    "metrics": ("kit/core/metrics.py", "tests/core/test_metrics.py tests/e2e/test_tasks.py -k 'not multilabel_from_0_1 and "
                                       "not no_tag_gets'"),
    "paths": ("kit/core/paths.py", "tests/e2e/test_misuse.py -k 'training_outputs_stay_out'"),
    "budget": ("kit/train/budget.py", "tests/train/test_fast_training.py -k 'budget or replan or timed_step'"),
}


def worktree() -> Path:
    path = Path(tempfile.mkdtemp(prefix="kit-mutation-")) / "tree"
    subprocess.run(["git", "worktree", "add", "--detach", str(path), "HEAD"], cwd=ROOT, check=True,
                   capture_output=True)
    return path


def run_module(name: str, tree: Path, timeout: float) -> dict:
    file, tests = MODULES[name]
    config = tree / f"cr-{name}.toml"
    config.write_text(f'[cosmic-ray]\nmodule-path = "{file}"\ntimeout = {timeout}\nexcluded-modules = []\n'
                      f'test-command = "{PYTEST} {tests}"\n\n[cosmic-ray.distributor]\nname = "local"\n')
    session = tree / f"cr-{name}.sqlite"
    t = time.time()
    for step in (["init", str(config), str(session)], ["baseline", str(config)], ["exec", str(config), str(session)]):
        subprocess.run([str(Path(sys.executable).with_name("cosmic-ray")), *step], cwd=tree, check=True,
                       capture_output=True)
    outcomes = read_session(session)
    killed = sum(o["test_outcome"] == "killed" for o in outcomes)
    survived = [o for o in outcomes if o["test_outcome"] == "survived"]
    incompetent = sum(o["test_outcome"] == "incompetent" for o in outcomes)
    return {"module": file, "tests": tests, "mutants": len(outcomes), "killed": killed, "survived": len(survived),
            "incompetent": incompetent, "score": killed / max(killed + len(survived), 1),
            "survivors": [f"line {o['line']}: {o['operator']}: {o['change']}" for o in survived],
            "seconds": round(time.time() - t), "date": time.strftime("%Y-%m-%d")}


def read_session(path: Path) -> list[dict]:
    """Every mutation and its outcome, from cosmic-ray's SQLite session."""
    con = sqlite3.connect(path)
    rows = con.execute("SELECT m.operator_name, m.start_pos_row, r.test_outcome, r.diff FROM mutation_specs m "
                       "JOIN work_results r ON r.job_id = m.job_id").fetchall()
    return [{"operator": op, "line": line, "test_outcome": str(outcome).split(".")[-1].lower(),
             "change": " / ".join(d.strip() for d in (diff or "").splitlines() if d[:1] in "+-" and d[:3] not in
                                  ("+++", "---"))}
            for op, line, outcome, diff in rows]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--modules", default=",".join(MODULES))
    p.add_argument("--results", default="bench/results/mutation.jsonl")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds a mutant's tests may take")
    args = p.parse_args()
    tree = worktree()
    try:
        for name in args.modules.split(","):
            row = run_module(name, tree, args.timeout)
            with open(ROOT / args.results, "a") as f:
                f.write(json.dumps(row) + "\n")
            print(f"{row['module']}: {row['killed']} of {row['killed'] + row['survived']} mutants killed "
                  f"({100 * row['score']:.1f} %; {row['incompetent']} incompetent, {row['seconds']} s)", flush=True)
            for s in row["survivors"]:
                print(f"  survived: {s}")
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, capture_output=True)


if __name__ == "__main__":
    main()
