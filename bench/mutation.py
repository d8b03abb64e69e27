"""Mutation testing of the critical modules with mutmut: does a module's own fast test fail when a line of it is
broken?

mutmut is configured in pyproject.toml ([tool.mutmut]: the modules, the fast tests). It mutates each function
(comparisons, arithmetic and boolean operators, numbers, strings, arguments dropped or set to None, ...) and runs,
for each mutant, the tests of the selection that call that function. A mutant is killed when they fail (or time
out), survives when they pass, and has "no tests" when no selected test calls its function. The score is killed /
(killed + survived); survivors are printed with their change for review (some are equivalent mutants: a change no
test can observe, e.g. `>=` for `>` where equality cannot happen).

This script runs mutmut in a throwaway git worktree of HEAD (mutmut writes a mutants/ copy beside the sources), on
the modules asked for, and appends one row per module to the results:

    pip install mutmut
    python bench/mutation.py [--modules blend,metrics] [--results bench/results/mutation.jsonl] [--children 2]
    mutmut run                      # or by hand, from the repository root: every module in pyproject's list

Rows: {"tool": "mutmut", "module", "mutants", "killed", "survived", "no_tests", "score", "survivors": [...],
"seconds", "date"}. Rows without "tool" were measured with cosmic-ray (the tool of the first passes; its mutants
differ, so compare scores within one tool).
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODULES = {
    "agc": "kit/train/agc.py",
    "folds": "kit/prepare/folds.py",
    "blend": "kit/evaluate/blend.py",
    "metrics": "kit/core/metrics.py",
    "teacher": "kit/train/teacher.py",
    "budget": "kit/train/budget.py",
    "paths": "kit/core/paths.py",
    "submission": "kit/runtime/submission.py",
    "predictor": "kit/runtime/predictor.py",
    "predict": "kit/runtime/predict.py",
}


def worktree() -> Path:
    path = Path(tempfile.mkdtemp(prefix="kit-mutation-")) / "tree"
    subprocess.run(["git", "worktree", "add", "--detach", str(path), "HEAD"], cwd=ROOT, check=True,
                   capture_output=True)
    return path


def only(tree: Path, files: list[str]) -> None:
    """Narrow the worktree's [tool.mutmut] only_mutate to `files`."""
    config = tree / "pyproject.toml"
    text = config.read_text()
    text, n = re.subn(r"only_mutate = \[[^\]]*\]", "only_mutate = " + json.dumps(files), text)
    assert n == 1, "pyproject.toml has no [tool.mutmut] only_mutate list"
    config.write_text(text)


def mutmut(tree: Path, *args: str) -> str:
    out = subprocess.run([str(Path(sys.executable).with_name("mutmut")), *args], cwd=tree, text=True,
                         capture_output=True)
    if out.returncode not in (0, 1):         # 1: some mutants survived
        raise SystemExit(f"mutmut {' '.join(args)} failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    return out.stdout


def outcomes(tree: Path) -> dict[str, str]:
    """Every mutant's name -> its status (killed, survived, no tests, timeout, suspicious, ...)."""
    rows = re.findall(r"^\s*(\S+__mutmut_\d+): (.+)$", mutmut(tree, "results", "--all", "true"), re.M)
    return {name: status.strip() for name, status in rows}


def module_of(mutant: str) -> str:
    """kit.evaluate.blend.x_fit_hill__mutmut_3 (or ...xǁClassǁmethod__mutmut_3) -> kit/evaluate/blend.py."""
    parts = mutant.split(".")
    return "/".join(parts[:-1]) + ".py"


def change(tree: Path, mutant: str) -> str:
    diff = mutmut(tree, "show", mutant)
    return " / ".join(line[1:].strip() for line in diff.splitlines() if line[:1] in "+-" and line[:3] not in
                      ("+++", "---"))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--modules", default=",".join(MODULES), help=f"some of {', '.join(MODULES)}")
    p.add_argument("--results", default="bench/results/mutation.jsonl")
    p.add_argument("--children", type=int, default=1, help="mutants tested at once (each a process)")
    args = p.parse_args()
    names = args.modules.split(",")
    unknown = [n for n in names if n not in MODULES]
    if unknown:
        p.error(f"unknown module(s) {unknown}; choose from {', '.join(MODULES)}")
    tree = worktree()
    try:
        only(tree, [MODULES[n] for n in names])
        t = time.time()
        mutmut(tree, "run", "--max-children", str(args.children))
        seconds = round(time.time() - t)
        status = outcomes(tree)
        for name in names:
            mine = {m: s for m, s in status.items() if module_of(m) == MODULES[name]}
            killed = sum(s in ("killed", "timeout") for s in mine.values())
            survived = sorted(m for m, s in mine.items() if s == "survived")
            row = {"tool": "mutmut", "module": MODULES[name], "mutants": len(mine), "killed": killed,
                   "survived": len(survived), "no_tests": sum(s == "no tests" for s in mine.values()),
                   "score": killed / max(killed + len(survived), 1),
                   "survivors": [f"{m}: {change(tree, m)}" for m in survived], "seconds": seconds,
                   "date": time.strftime("%Y-%m-%d")}
            with open(ROOT / args.results, "a") as f:
                f.write(json.dumps(row) + "\n")
            print(f"{row['module']}: {killed} of {killed + len(survived)} mutants killed ({100 * row['score']:.1f} %; "
                  f"{row['no_tests']} with no test calling their function)", flush=True)
            for s in row["survivors"]:
                print(f"  survived: {s}")
        print(f"{seconds} s for {', '.join(names)}")
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, capture_output=True)
        shutil.rmtree(tree.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
