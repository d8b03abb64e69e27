"""Does an Optuna study (`python -m kit.tune`) find settings that beat the default, and what does pruning save?
(issue 31)

    python bench/tune.py study    --budget 42s --trials 20     # the study, pruning on (the kit's median pruner)
    python bench/tune.py unpruned                              # every pruned trial trained to its end
    python bench/tune.py evaluate --budget 42s --seeds 0,1     # default vs the study's best, held-out test
    python bench/tune.py report

`study` runs kit.tune as a user would: 2 folds per trial (a 2-fold split of train.csv, `--folds all`), every fold
under `--time-budget` (the hand loop's 8-epoch seconds on this machine: the equal-time budget of bench/recipe.py),
the space in bench/tune_space.yaml. The held-out test images (solution.csv) never enter the study.

`unpruned` trains each pruned trial's own settings (its trial_<n>.yaml) to the end in a fresh process: the study's
time without pruning on the *same* trials is the completed trials' seconds plus these, and the runs also say whether
the pruner stopped a trial that would have beaten the best.

`evaluate` runs bench/recipe.py on 5 folds x the seeds: `kit-budget` (the default under the budget), `tuned` (the
same plus the best trial's settings) and `hand` (the hand-written ResNet18 loop's 8 epochs), each fold a fresh
process, paired by (seed, fold) on the held-out test.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.recipe import load_results  # noqa: E402  (after the path that makes bench importable)

SPACE = ROOT / "bench" / "tune_space.yaml"


def fixed_flags(args, data: Path) -> list[str]:
    """train.py's flags every trial shares (kit.tune passes them through)."""
    return ["--data-dir", str(data), "--no-pretrained", "--img-size", "32", "--time-budget", args.budget,
            "--num-folds", "2", "--folds-csv", str(Path(args.work) / "folds2.csv"), "--seed", "0"]


def study_dir(args) -> Path:
    return Path(args.work) / "study"


def trials(args) -> list:
    import optuna
    study = optuna.load_study(study_name="study", storage=f"sqlite:///{(study_dir(args) / 'study.db').resolve()}")
    return study.trials


def run_study(args) -> None:
    from bench.datasets import build
    data = build(args.dataset, Path(args.data_root))
    cmd = [sys.executable, "-m", "kit.tune", "--space", str(SPACE), "--trials", str(args.trials), "--folds", "all",
           "--pruner", args.pruner, "--run-dir", str(study_dir(args)), *fixed_flags(args, data)]
    t = time.time()
    subprocess.run(cmd, cwd=ROOT, check=True)
    seconds = time.time() - t
    rows = [{"number": tr.number, "state": tr.state.name, "value": tr.value, "params": tr.params,
             "seconds": tr.user_attrs.get("seconds"), "steps": len(tr.intermediate_values)} for tr in trials(args)]
    append(args.results, {"kind": "study", "dataset": args.dataset, "budget": args.budget, "pruner": args.pruner,
                          "trials": rows, "study_seconds": seconds})
    print(f"study: {len(rows)} trials in {seconds:.0f} s; "
          f"{sum(r['state'] == 'PRUNED' for r in rows)} pruned", flush=True)


def run_unpruned(args) -> None:
    from kit.store.rundir import RunDir
    from kit.tuning.study import oof_score
    done = {r["number"] for r in unpruned_rows(load_results(Path(args.results)), args.dataset)}
    for tr in trials(args):
        if tr.state.name != "PRUNED" or tr.number in done:
            continue
        run_dir = Path(args.work) / "unpruned" / f"trial_{tr.number}"
        t = time.time()
        subprocess.run([sys.executable, "train.py", "--config", str(study_dir(args) / f"trial_{tr.number}.yaml"),
                        "--fold", "all", "--run-dir", str(run_dir)], cwd=ROOT, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        seconds = time.time() - t
        value = oof_score(RunDir(run_dir))
        append(args.results, {"kind": "unpruned", "dataset": args.dataset, "number": tr.number, "value": value, "seconds": seconds,
                              "pruned_after": tr.user_attrs.get("seconds")})
        print(f"trial {tr.number}: CV {value:.4f} unpruned in {seconds:.0f} s (pruned after "
              f"{tr.user_attrs.get('seconds')} s)", flush=True)


def flags_of(params: dict) -> list[str]:
    """train.py flags for a trial's searched settings."""
    return [x for name, value in params.items() for x in (f"--{name.replace('_', '-')}", str(value))]


def run_evaluate(args) -> None:
    study = last_study(load_results(Path(args.results)), args.results, args.dataset)
    complete = [t for t in study["trials"] if t["state"] == "COMPLETE"]
    top = max(complete, key=lambda t: t["value"])
    budget = ["--time-budget", args.budget]
    subprocess.run([sys.executable, "bench/recipe.py", "run", "--datasets", args.dataset, "--arms", args.arms,
                    "--extra-arm", f"kit-budget={json.dumps(budget)}",
                    "--extra-arm", f"tuned={json.dumps(budget + flags_of(top['params']))}",
                    "--seeds", args.seeds, "--work", str(Path(args.work) / "eval"), "--data-root", args.data_root,
                    "--results", args.eval_results], cwd=ROOT, check=True)


def last_study(rows: list[dict], path, dataset: str) -> dict:
    """The last study on `dataset` in the results (a file may hold studies of several datasets)."""
    found = [r for r in rows if r["kind"] == "study" and r["dataset"] == dataset]
    if not found:
        print(f"error: {path} holds no study of {dataset}: run `python bench/tune.py study --dataset {dataset}` "
              f"first (or name --results)", file=sys.stderr)
        sys.exit(2)
    return found[-1]


def unpruned_rows(rows: list[dict], dataset: str) -> list[dict]:
    """The unpruned re-runs of `dataset`'s study (trial numbers repeat from one study to the next)."""
    return [r for r in rows if r["kind"] == "unpruned" and r["dataset"] == dataset]


def report(args) -> None:
    rows = load_results(Path(args.results))
    study = last_study(rows, args.results, args.dataset)
    unpruned = {r["number"]: r for r in unpruned_rows(rows, args.dataset)}
    spent = sum(t["seconds"] or 0 for t in study["trials"])
    full = sum(unpruned[t["number"]]["seconds"] if t["state"] == "PRUNED" else (t["seconds"] or 0)
               for t in study["trials"] if t["state"] != "PRUNED" or t["number"] in unpruned)
    missing = [t["number"] for t in study["trials"] if t["state"] == "PRUNED" and t["number"] not in unpruned]
    complete = [t for t in study["trials"] if t["state"] == "COMPLETE"]
    best = max(complete, key=lambda t: t["value"])
    print(f"study ({study['dataset']}, --time-budget {study['budget']} per fold, pruner {study['pruner']}): "
          f"{len(study['trials'])} trials, {len(complete)} complete, the best trial {best['number']} CV "
          f"{best['value']:.4f}; {study['study_seconds']:.0f} s in all")
    if missing:                 # a saving over part of the trials would compare unlike totals
        print(f"trials' seconds: {spent:.0f} with pruning; no saving without the unpruned runs of trials {missing} "
              f"(python bench/tune.py unpruned --dataset {args.dataset})")
    else:
        print(f"trials' seconds: {spent:.0f} with pruning, {full:.0f} without (the same trials): saved "
              f"{100 * (1 - spent / full):.1f} %")
    print("\n| trial | state | CV (2 folds) | CV unpruned | s | s unpruned | settings |\n|---:|---|---:|---:|---:|---:|---|")
    for t in sorted(study["trials"], key=lambda t: t["number"]):
        u = unpruned.get(t["number"], {})
        cv = f"{t['value']:.4f}" if t["state"] == "COMPLETE" else ""      # a pruned trial's value is an epoch's
        unpruned_cv, unpruned_s = (f"{u['value']:.4f}", f"{u['seconds']:.0f}") if u else ("", "")
        print(f"| {t['number']} | {t['state'].lower()} | {cv} | {unpruned_cv} | {t['seconds']} | {unpruned_s} | "
              f"{', '.join(f'{k}={v:.3g}' if isinstance(v, float) else f'{k}={v}' for k, v in t['params'].items())} |")
    beaten = [n for n, u in unpruned.items() if u["value"] > best["value"]]
    print(f"\npruned trials whose full run beat the best completed trial: {beaten or 'none'} (of the {len(unpruned)} "
          f"run unpruned)")


def append(path, row: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps({**row, "date": time.strftime("%Y-%m-%d")}) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=("study", "unpruned", "evaluate", "report"))
    p.add_argument("--dataset", default="digits-hard")
    p.add_argument("--budget", default="42s", help="--time-budget per fold (the hand loop's 8-epoch seconds here)")
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--pruner", default="median", choices=("median", "halving", "none"))
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--arms", default="hand", help="evaluate: bench/recipe.py arms run beside the two ('' for none)")
    p.add_argument("--data-root", default="data")
    p.add_argument("--work", default="runs/bench_tune")
    p.add_argument("--results", default="bench/results/kit_tune_study.jsonl")
    p.add_argument("--eval-results", default="bench/results/kit_tune_eval.jsonl")
    args = p.parse_args()
    {"study": run_study, "unpruned": run_unpruned, "evaluate": run_evaluate, "report": report}[args.command](args)


if __name__ == "__main__":
    main()
