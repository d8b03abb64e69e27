"""Does turning the ensemble back into training pay: pseudo-labels, distillation into one full-data model, and a CV
that stays honest?

Per dataset and seed, every step in a fresh process, all on the seed's own folds file (kit defaults: --no-pretrained
--img-size 32 --epochs 8, eca_nfnet_l0):
  teacher   the kit's run, fold by fold (the 5-fold ensemble is the teacher)
  student   per fold: --teacher TEACHER --pseudo-label (one pseudo-label round; fold k learns from teacher fold k)
  studentN  round N (2, 3): per fold, --teacher (the round before's student run) --pseudo-label; a student run is a
            normal run, so it teaches the next round under the same honest-CV rule (issue 29's rounds)
  full      --fold full --teacher TEACHER --pseudo-label: one model of the teacher's architecture on every image
  full-xM   the same at M times a fold's epochs (--full-epochs 1,1.5,2: the full model sees 25 % more images an
            epoch than a fold and has no validation to pick an epoch by; issue 29 measures how long it should train)
Scored on each dataset's held-out test images (solution.csv), which nothing is chosen on. `speed` exports the
teacher ensemble and the full student and measures their onnxruntime images/s side by side, in one process.

    python bench/distill.py run --datasets digits-hard,photo-patches --seeds 0,1
    python bench/distill.py run --steps teacher,full --full-epochs 1,1.5,2 --results bench/results/distill_full.jsonl
    python bench/distill.py run --steps teacher,student,student2,student3 --results bench/results/distill_rounds.jsonl
    python bench/distill.py speed --datasets digits-hard --seeds 0
    python bench/distill.py report
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.recipe import _accuracy, load_results, make_split, split_file, test_set  # noqa: E402

STEPS = ("teacher", "student", "full")
ROUNDS = ("student", "student2", "student3")          # pseudo-label rounds: each taught by the one before
FLAGS = {"teacher": [], "full": ["--pseudo-label"], **{r: ["--pseudo-label"] for r in ROUNDS}}


def teacher_of(step: str) -> str | None:
    """The run that teaches `step`: none for the teacher, the round before for a student, the teacher for full."""
    if step == "teacher":
        return None
    return dict(zip(ROUNDS, ("teacher",) + ROUNDS[:-1])).get(step, "teacher")


def full_steps(multiples: str) -> list[str]:
    """'1,1.5,2' -> ['full', 'full-x1.5', 'full-x2']: the full model at each multiple of a fold's epochs."""
    return ["full" if float(m) == 1 else f"full-x{m}" for m in multiples.split(",")]


def step_epochs(step: str, epochs: float) -> float:
    """A step's epochs: a fold's, times the full-xM step's multiple (rounded)."""
    return round(epochs * float(step.split("-x")[1])) if "-x" in step else epochs


def one(args) -> None:
    """Child process: one step of one fold (or the full model); prints its result as JSON on the last line."""
    import train
    from kit.store.rundir import RunDir
    from kit.settings.cli import config_overrides
    from kit.settings.config import load_config
    from kit.train import run as training
    from kit.train.members import load_members, predict
    run_dir = Path(args.work) / args.step
    teacher = ["--teacher", str(Path(args.work) / teacher_of(args.step))] if teacher_of(args.step) else []
    full = args.step.startswith("full")
    fold = "full" if full else str(args.fold)
    epochs = step_epochs(args.step, args.epochs)
    ns = train.parse_args(["--data-dir", args.data, "--no-pretrained", "--img-size", "32", "--epochs", str(epochs),
                           "--fold", fold, "--seed", str(args.seed), "--folds-csv", args.folds_csv, "--run-dir",
                           str(run_dir), "--num-workers", "2", *teacher, *FLAGS["full" if full else args.step]])
    cfg = load_config(None, config_overrides(ns))
    t0 = time.time()
    summary = training.run(cfg, fold)
    seconds = time.time() - t0
    key = "full" if fold == "full" else int(fold)
    member = load_members(RunDir(run_dir), [key])[0]
    paths, labels = test_set(Path(args.data))
    probs = predict(member, paths)
    print(json.dumps({"val": summary["folds"][key]["score"], "probs": probs.tolist(), "classes": member.task.names,
                      "labels": labels, "seconds": seconds}))


def run_all(args) -> None:
    from bench.datasets import build
    results = Path(args.results)
    done = {(r["dataset"], r["step"], r["seed"], r["fold"]) for r in load_results(results)}
    for dataset in args.datasets.split(","):
        data = build(dataset, Path(args.data_root))
        for seed in [int(s) for s in args.seeds.split(",")]:
            folds_csv = split_file(Path(args.work), dataset, seed)
            make_split(data, folds_csv, seed)
            work = Path(args.work) / dataset / f"seed{seed}"
            steps = [s for s in args.steps.split(",") if s != "full"]
            steps += full_steps(args.full_epochs) if "full" in args.steps.split(",") else []
            for step in steps:
                for fold in (["full"] if step.startswith("full") else range(5)):
                    if (dataset, step, seed, fold) in done:
                        continue
                    cmd = [sys.executable, __file__, "one", "--data", str(data), "--step", step, "--seed", str(seed),
                           "--fold", str(fold if fold != "full" else 0), "--folds-csv", str(folds_csv), "--work",
                           str(work), "--epochs", str(args.epochs)]
                    t = time.time()
                    out = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                    if out.returncode:
                        print(f"{dataset} {step} seed {seed} fold {fold}: FAILED\n{out.stderr[-3000:]}", flush=True)
                        return
                    result = json.loads(out.stdout.strip().splitlines()[-1])
                    result.update(dataset=dataset, step=step, seed=seed, fold=fold, wall=time.time() - t)
                    with open(results, "a") as f:
                        f.write(json.dumps(result) + "\n")
                    test = _accuracy(result["probs"], result["classes"], result["labels"])
                    print(f"{dataset:<14} {step:<8} seed {seed} fold {fold}: val {result['val']:.4f} test {test:.4f} "
                          f"({result['seconds']:.0f}s)", flush=True)


def speed(args) -> None:
    """onnxruntime images/s of the teacher's 5-fold graph and of the full student's, side by side, and the browser
    page's download for each (kit.web's size report); appended to the results as step 'speed'."""
    from bench.common import median_time
    from kit.core.images import load_rgb
    from kit.export.build import export
    from kit.runtime.predictor import Predictor
    results = Path(args.results)
    for dataset in args.datasets.split(","):
        for seed in [int(s) for s in args.seeds.split(",")]:
            work = Path(args.work) / dataset / f"seed{seed}"
            data = Path(args.data_root) / dataset
            paths, _ = test_set(data)
            row = {"dataset": dataset, "step": "speed", "seed": seed, "fold": None}
            for name, run, folds in (("teacher", work / "teacher", None), ("full", work / "full", ["full"])):
                graph = work / f"{name}.onnx"
                export(run, out=graph, folds=folds, tta=False, int8=name == "full")
                predictor = Predictor(graph, "cpu")
                images = np.stack([load_rgb(p, predictor.meta.img_size) for p in paths[:64]])
                predictor.predict_images(images)
                row[f"{name}_images_per_s"] = len(images) / median_time(lambda: predictor.predict_images(images), 7)
                row[f"{name}_mb"] = graph.stat().st_size / 2**20
            row["speedup"] = row["full_images_per_s"] / row["teacher_images_per_s"]
            with open(results, "a") as f:
                f.write(json.dumps(row) + "\n")
            print(f"{dataset} seed {seed}: teacher {row['teacher_images_per_s']:.0f} img/s ({row['teacher_mb']:.1f} MB), "
                  f"full student {row['full_images_per_s']:.0f} img/s ({row['full_mb']:.1f} MB): "
                  f"{row['speedup']:.2f}x", flush=True)


def report(args) -> None:
    from scipy.stats import ttest_rel, wilcoxon
    rows = load_results(Path(args.results))
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        mine = [r for r in rows if r["dataset"] == dataset and r["step"] != "speed"]
        by = {(r["step"], r["seed"], r["fold"]): r for r in mine}
        acc = {k: _accuracy(r["probs"], r["classes"], r["labels"]) for k, r in by.items()}
        seeds = sorted({r["seed"] for r in mine})
        print(f"\n## {dataset}\n")
        print("| seed | teacher folds (test, mean) | teacher 5-fold ensemble (test) | students with pseudo-labels (test, "
              "mean) | student CV − test | full student (test) | full − ensemble |")
        print("|---:|---:|---:|---:|---:|---:|---:|")
        pairs, gaps, full_gap = [], [], []
        for seed in seeds:
            teach = [by.get(("teacher", seed, k)) for k in range(5)]
            stud = [by.get(("student", seed, k)) for k in range(5)]
            if None in teach:
                continue
            ensemble = _accuracy(np.mean([t["probs"] for t in teach], 0), teach[0]["classes"], teach[0]["labels"])
            t_mean = np.mean([acc[("teacher", seed, k)] for k in range(5)])
            s_text = gap_text = full_text = diff_text = "-"
            if None not in stud:
                s_acc = [acc[("student", seed, k)] for k in range(5)]
                pairs += [(s, acc[("teacher", seed, k)]) for k, s in enumerate(s_acc)]
                gaps += [st["val"] - s for st, s in zip(stud, s_acc)]
                s_text = f"{np.mean(s_acc):.4f}"
                gap_text = f"{100 * np.mean([st['val'] - s for st, s in zip(stud, s_acc)]):+.2f} pt"
            if ("full", seed, "full") in acc:
                full = acc[("full", seed, "full")]
                full_gap.append(full - ensemble)
                full_text, diff_text = f"{full:.4f}", f"{100 * (full - ensemble):+.2f} pt"
            print(f"| {seed} | {t_mean:.4f} | {ensemble:.4f} | {s_text} | {gap_text} | {full_text} | {diff_text} |")
        if pairs:
            d = np.array([a - b for a, b in pairs])
            p = f"; p Wilcoxon {wilcoxon(d).pvalue:.2g} / t {ttest_rel(*zip(*pairs)).pvalue:.2g}" if np.any(d) else ""
            print(f"\nPseudo-label round, per fold (student − teacher fold, test): {100 * d.mean():+.2f} ± "
                  f"{100 * d.std():.2f} pt over {len(d)} pairs{p}.")
            teacher_gaps = [by[("teacher", s, k)]["val"] - acc[("teacher", s, k)] for s in seeds for k in range(5)
                            if ("teacher", s, k) in by]
            print(f"Students' CV − held-out test accuracy: {100 * np.mean(gaps):+.2f} pt on average, at most "
                  f"{100 * np.max(np.abs(gaps)):.2f} pt (the teachers' own: {100 * np.mean(teacher_gaps):+.2f} pt: "
                  f"validation and test images differ in difficulty).")
        if full_gap:
            print(f"Full student − teacher ensemble (test): {100 * np.mean(full_gap):+.2f} pt on average.")
        fulls = sorted({r["step"] for r in mine if r["step"].startswith("full")}, key=lambda s: step_epochs(s, 100))
        if len(fulls) > 1:         # the full model at several multiples of a fold's epochs
            print("\n| full model | " + " | ".join(f"seed {s}" for s in seeds) + " | mean − ensemble |")
            print("|---|" + "---:|" * (len(seeds) + 1))
            for step in fulls:
                cells, gaps = [], []
                for seed in seeds:
                    teach = [by.get(("teacher", seed, k)) for k in range(5)]
                    if None in teach or (step, seed, "full") not in acc:
                        cells.append("-")
                        continue
                    ens = _accuracy(np.mean([t["probs"] for t in teach], 0), teach[0]["classes"], teach[0]["labels"])
                    gaps.append(acc[(step, seed, "full")] - ens)
                    cells.append(f"{acc[(step, seed, 'full')]:.4f} ({100 * gaps[-1]:+.2f})")
                mean = f"{100 * np.mean(gaps):+.2f} pt" if gaps else "-"
                multiple = step.split("-x")[1] if "-x" in step else "1"
                print(f"| {step} ({multiple}x a fold's epochs) | " + " | ".join(cells) + f" | {mean} |")
        rounds_table(by, acc, seeds)
        for r in rows:
            if r["dataset"] == dataset and r["step"] == "speed":
                print(f"Speed (seed {r['seed']}): teacher ensemble {r['teacher_images_per_s']:.0f} images/s, "
                      f"{r['teacher_mb']:.1f} MB; full student {r['full_images_per_s']:.0f} images/s, "
                      f"{r['full_mb']:.1f} MB: {r['speedup']:.2f}x.")


def rounds_table(by: dict, acc: dict, seeds: list) -> None:
    """Pseudo-label rounds (teacher, student, student2, ...), where a second round ran: per round and seed the CV
    (validation accuracy, mean over folds), the held-out test accuracy (fold mean, 5-fold ensemble) and the paired
    per-fold change against the teacher's folds."""
    from scipy.stats import ttest_rel
    steps = [s for s in ("teacher",) + ROUNDS if any(k[0] == s for k in by)]
    if len(steps) < 3:
        return
    print("\n| round | seed | CV (val, fold mean) | test (fold mean) | test, 5-fold ensemble | Δ test vs teacher folds "
          "(paired) |")
    print("|---|---:|---:|---:|---:|---:|")
    for step in steps:
        for seed in seeds:
            runs = [by.get((step, seed, k)) for k in range(5)]
            teach = [acc.get(("teacher", seed, k)) for k in range(5)]
            if None in runs or None in teach:
                continue
            tests = np.array([acc[(step, seed, k)] for k in range(5)])
            ens = _accuracy(np.mean([r["probs"] for r in runs], 0), runs[0]["classes"], runs[0]["labels"])
            d = tests - np.array(teach)
            delta = "–" if step == "teacher" else \
                f"{100 * d.mean():+.2f} ± {100 * d.std():.2f} pt (t p {ttest_rel(tests, teach).pvalue:.2g})"
            print(f"| {step} | {seed} | {np.mean([r['val'] for r in runs]):.4f} | {tests.mean():.4f} | {ens:.4f} | "
                  f"{delta} |")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    for name in ("run", "speed"):
        r = sub.add_parser(name)
        r.add_argument("--datasets", default="digits-hard,photo-patches")
        r.add_argument("--seeds", default="0,1")
        r.add_argument("--epochs", type=int, default=8)
        r.add_argument("--steps", default=",".join(STEPS), help="which of teacher, student, student2, student3, full to run")
        r.add_argument("--full-epochs", default="1", help="the full model at these multiples of a fold's epochs")
        r.add_argument("--data-root", default="data")
        r.add_argument("--work", default="runs/bench_distill")
        r.add_argument("--results", default="bench/results/distill.jsonl")
    rep = sub.add_parser("report")
    rep.add_argument("--results", default="bench/results/distill.jsonl")
    o = sub.add_parser("one")
    for name in ("--data", "--step", "--folds-csv", "--work"):
        o.add_argument(name)
    for name in ("--seed", "--fold", "--epochs"):
        o.add_argument(name, type=int)
    args = p.parse_args()
    {"run": run_all, "speed": speed, "report": report, "one": one}[args.command](args)


if __name__ == "__main__":
    main()
