"""Does the kit's default recipe beat what people write by hand, and what does each piece bring?

Every run is one (dataset, arm, seed, fold) in a fresh process: the arm trains on the fold's training rows of the
seed's own split, is scored on the fold's validation rows (its best epoch, as the kit keeps it) and on the held-out
test set (solution.csv). All arms of a seed share its split, so results pair by (seed, fold). Results append to a
JSON-lines file, so an interrupted benchmark continues where it stopped.

    python bench/recipe.py run --datasets digits-hard,photo-patches --arms kit,hand --seeds 0,1,2
    python bench/recipe.py report [--baseline kit]

Arms (ARMS below): `kit` is `train.py` with nothing but the user's flags (--no-pretrained --img-size --epochs);
`hand` is the hand-written ResNet18 loop (AdamW + OneCycle + horizontal flip, the common Kaggle baseline);
`head-clipped`, `agc-0.01-b32` and `adamw` are the mistakes people make with NFNets; `with-*` arms switch one
piece the `scratch` recipe leaves off back on. The `kit` rows of bench/results/recipe.jsonl (up to 2026-12-02)
trained eca_nfnet_l0, the `scratch` recipe's model then; it now trains nf_resnet26, measured by the arms
`b118-nf_resnet26`/`b128-nf_resnet26` (that model under the eca_nfnet_l0 fold's seconds as --time-budget).
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# arm -> extra train.py flags (None: the hand loop); a leading "!" entry names a mistake injected in-process
ARMS: dict[str, list | None] = {
    "kit": [],
    "hand": None,
    "head-clipped": ["!clip-head"],
    "agc-0.01-b32": ["--agc-clip", "0.01", "--batch-size", "32"],
    "adamw": ["--optimizer", "adamw", "--lr", "1e-3", "--agc-clip", "0.01"],
    # the scratch recipe leaves these pieces off (bench/RESULTS.md): each arm switches one on
    "with-mix": ["--mixup", "0.2", "--cutmix", "1.0", "--mix-prob", "0.5"],
    "with-randaugment": ["--randaugment", "5", "--aug-shift-scale-rotate", "0", "--aug-brightness-contrast", "0"],
    "with-crops": ["--crop-scale", "0.35"],
    "with-fixres": ["--test-scale", "1.25"],
    "with-regularizers": ["--drop-rate", "0.2", "--drop-path-rate", "0.1", "--aug-coarse-dropout", "0.3",
                          "--aug-shift-scale-rotate", "0.5"],
    "agc-0.05": ["--agc-clip", "0.05"],
    # issue 23: weight averaging and class imbalance (bench/RESULTS.md)
    "avg3": ["--avg-top-k", "3"],
    "balanced": ["--sampler", "balanced"],
    "sqrt": ["--sampler", "sqrt"],
    "focal": ["--loss", "focal"],
    "class-weights": ["--class-weights", "auto"],
}


def split_file(work: Path, dataset: str, seed: int) -> Path:
    return work / "folds" / f"{dataset}-seed{seed}.csv"


def make_split(data: Path, folds_csv: Path, seed: int) -> np.ndarray:
    from kit.settings.config import load_config
    from kit.core.table import train_table
    from kit.prepare.folds import load_or_create
    cfg = load_config(None, {"data_dir": str(data), "pretrained": False})
    table = train_table(cfg)
    return load_or_create(folds_csv, table, table.labels, 5, seed)


def test_set(data: Path):
    """(paths, labels) of the held-out test images."""
    import csv
    from kit.core.table import resolve_images
    with open(data / "solution.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return resolve_images(data / "test_images", [r["image_id"] for r in rows], data / "solution.csv"), \
        [r["label"] for r in rows]


# --- the kit arms -------------------------------------------------------------------------------------------

def run_kit(args, flags: list[str]) -> dict:
    import torch
    from kit.core.entry import process_started
    from kit.train import run as training
    from kit.settings.config import load_config, test_size
    from kit.export.ensemble import Ensemble
    from kit.train.members import load_members
    from kit.core.images import load_rgb
    from kit.store.rundir import RunDir
    if "!clip-head" in flags:                       # the mistake: AGC over every parameter, the head included
        import kit.train.model
        kit.train.model.split_head_params = lambda model: (list(model.parameters()), [])
        import kit.train.fold
        kit.train.fold.split_head_params = kit.train.model.split_head_params
    if "!whole-epochs" in flags:                    # the plan before 2026-12-07: no partial last epoch under a budget
        import kit.train.budget
        kit.train.budget.MIN_PART = 2.0             # a partial epoch is at most one batch short of a whole one
    import train
    ns = train.parse_args(["--data-dir", args.data, "--no-pretrained", "--img-size", str(args.img_size), "--epochs",
                           str(args.epochs), "--fold", str(args.fold), "--seed", str(args.seed), "--folds-csv",
                           args.folds_csv, "--run-dir", args.run_dir, "--num-workers", str(args.num_workers),
                           *[f for f in flags if not f.startswith("!")]])
    from kit.settings.cli import config_overrides
    cfg = load_config(None, config_overrides(ns))
    shutil.rmtree(Path(args.run_dir) / (f"fold{args.fold}" if args.fold != "full" else "full"),
                  ignore_errors=True)   # the seed's other folds stay: a run
    summary = training.run(cfg, str(args.fold), started=process_started())     # as train.py starts the budget's clock
    seconds = time.time() - process_started()      # the clock --time-budget counts on (imports included)
    fold = args.fold if args.fold == "full" else int(args.fold)
    member = load_members(RunDir(args.run_dir), [fold])
    ensemble = Ensemble.of(member).eval()               # identity view only, like the hand loop
    paths, labels = test_set(Path(args.data))
    images = np.stack([load_rgb(p, test_size(cfg)) for p in paths])
    with torch.no_grad():
        probs = np.concatenate([ensemble(torch.from_numpy(images[i:i + 128]))[0].numpy()
                                for i in range(0, len(images), 128)])
    classes = member[0].task.names
    return {"val": summary["folds"][fold]["score"], "epoch": summary["folds"][fold]["epoch"],
            "probs": probs.tolist(), "classes": classes, "labels": labels, "seconds": seconds,
            "recipe": cfg.recipe, "img_size": cfg.img_size, "test_size": test_size(cfg)}


# --- the hand-written baseline --------------------------------------------------------------------------------

def run_hand(args) -> dict:
    """What a competitor types in a notebook: timm resnet18 (BatchNorm), AdamW + OneCycle, horizontal flips,
    ImageNet normalization, the best epoch by validation accuracy (the same selection the kit makes). Its seconds run
    from the process start to the end of training, the clock the kit's --time-budget counts on (before 2026-12-06
    20:40 from reading the data, which left out the ~2-3 s of imports that the kit's budget pays; before 2026-12-02
    from the first epoch)."""
    import timm
    import torch
    from kit.core.entry import process_started
    from kit.settings.config import load_config
    from kit.core.table import train_table
    from kit.core.images import load_rgb
    from kit.core.task import Multiclass
    torch.manual_seed(args.seed)
    cfg = load_config(None, {"data_dir": args.data, "pretrained": False})
    table = train_table(cfg)
    task = Multiclass.from_labels(table.labels)
    y = torch.from_numpy(task.encode(table.labels))
    fold_of = make_split(Path(args.data), Path(args.folds_csv), args.seed)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)

    def tensor(paths):
        x = torch.from_numpy(np.stack([load_rgb(p, args.img_size) for p in paths])).permute(0, 3, 1, 2).float() / 255
        return (x - mean) / std

    x = tensor(table.paths)
    full = args.fold == "full"                  # every training image, no validation: the last epoch is kept
    tr = np.arange(len(fold_of)) if full else np.flatnonzero(fold_of != int(args.fold))
    va = np.zeros(0, np.int64) if full else np.flatnonzero(fold_of == int(args.fold))
    model = timm.create_model("resnet18", num_classes=len(task.names))
    batch = 64
    steps_per_epoch = len(tr) // batch
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-2)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-3, total_steps=args.epochs * steps_per_epoch)
    g = torch.Generator().manual_seed(args.seed)
    best, best_state, best_epoch = -1.0, None, 0
    train_seconds = []
    for epoch in range(args.epochs):
        e0 = time.time()
        model.train()
        order = tr[torch.randperm(len(tr), generator=g).numpy()]
        for i in range(steps_per_epoch):
            b = order[i * batch:(i + 1) * batch]
            xb = x[b]
            flip = torch.rand(len(b), generator=g) < 0.5
            xb = torch.where(flip.view(-1, 1, 1, 1), xb.flip(3), xb)
            loss = torch.nn.functional.cross_entropy(model(xb), y[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        train_seconds.append(time.time() - e0)
        model.eval()
        if full:
            best, best_state, best_epoch = float("nan"), copy.deepcopy(model.state_dict()), epoch + 1
            continue
        with torch.no_grad():
            pred = torch.cat([model(x[va[i:i + 256]]).argmax(1) for i in range(0, len(va), 256)])
        acc = float((pred == y[va]).float().mean())
        if acc > best:
            best, best_state, best_epoch = acc, copy.deepcopy(model.state_dict()), epoch + 1
    seconds = time.time() - process_started()
    model.load_state_dict(best_state)
    model.eval()
    paths, labels = test_set(Path(args.data))
    xt = tensor(paths)
    with torch.no_grad():
        probs = torch.cat([model(xt[i:i + 256]).softmax(1) for i in range(0, len(xt), 256)]).numpy()
    return {"val": best, "epoch": best_epoch, "probs": probs.tolist(), "classes": task.names, "labels": labels,
            "seconds": seconds, "train_images_per_s": [steps_per_epoch * batch / s for s in train_seconds]}


# --- driver ---------------------------------------------------------------------------------------------------

def one_run(args) -> None:
    """Child process: one (dataset, arm, seed, fold); prints its result as JSON on the last line. An arm's flags
    {"hand_epochs": E} run the hand loop for E epochs (the equal-time mode)."""
    flags = ARMS[args.arm] if args.arm in ARMS else json.loads(args.flags)
    if isinstance(flags, dict):
        args.epochs = flags["hand_epochs"]
        flags = None
    result = run_hand(args) if flags is None else run_kit(args, flags)
    print(json.dumps(result))


def child_command(args, data: Path, arm: str, seed: int, fold: int, folds_csv: Path, run_dir: Path,
                  flags: str) -> list[str]:
    """The `one` child process for (arm, seed, fold): every run of the benchmark is a fresh process."""
    return [sys.executable, __file__, "one", "--data", str(data), "--arm", arm, "--seed", str(seed), "--fold",
            str(fold), "--folds-csv", str(folds_csv), "--run-dir", str(run_dir), "--img-size", str(args.img_size),
            "--epochs", str(args.epochs), "--num-workers", str(args.num_workers), "--flags", flags]


def calibrate(args, dataset: str) -> dict:
    """Seconds of the kit's default fold (8 epochs), of the hand loop's 8 epochs on a fold and on every training
    image (`hand-full`), on seed 0 (fold 0), each in a fresh process, one after the other on a quiet machine: what the
    equal-time arms are sized from."""
    from bench.datasets import build
    data = build(dataset, Path(args.data_root))
    folds_csv = split_file(Path(args.work), dataset, 0)
    make_split(data, folds_csv, 0)
    out = {}
    for arm, fold in (("kit", 0), ("hand", 0), ("hand-full", "full")):
        cmd = child_command(args, data, arm, 0, fold, folds_csv, Path(args.work) / "calibration" / dataset / arm,
                            "[]" if arm != "hand-full" else "null")
        done = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, check=True)
        out[arm] = json.loads(done.stdout.strip().splitlines()[-1])["seconds"]
    return out


def equal_time(args) -> None:
    """The equal-time arms of every dataset, beside the 8-epoch `kit` and `hand` arms: the hand loop given as many
    epochs as fit the kit's measured seconds per fold (`hand-equal-time`), the kit under --time-budget equal to the
    hand loop's 8-epoch seconds (`kit-budget`), and once per seed the full-data models: the hand loop's 8 epochs on
    every training image (`hand-full`) and the kit's `--fold full` under its seconds (`kit-full-budget`)."""
    for dataset in args.datasets.split(","):
        seconds = calibrate(args, dataset)
        hand_epochs = max(args.epochs, round(args.epochs * seconds["kit"] / seconds["hand"]))
        budget, full_budget = f"{seconds['hand']:.0f}s", f"{seconds['hand-full']:.0f}s"
        print(f"{dataset}: kit {seconds['kit']:.1f} s per fold, hand loop {seconds['hand']:.1f} s for {args.epochs} "
              f"epochs ({seconds['hand-full']:.1f} s on every image) -> hand-equal-time {hand_epochs} epochs, "
              f"kit-budget --time-budget {budget}, kit-full-budget {full_budget}", flush=True)
        with open(Path(args.results).with_suffix(".calibration.jsonl"), "a") as f:
            f.write(json.dumps({"dataset": dataset, **seconds, "hand_epochs": hand_epochs, "budget": budget,
                                "full_budget": full_budget, "date": time.strftime("%Y-%m-%d")}) + "\n")
        extras = {"hand-equal-time": json.dumps({"hand_epochs": hand_epochs}),
                  "kit-budget": json.dumps(["--time-budget", budget]), "hand-full": "null",
                  "kit-full-budget": json.dumps(["--time-budget", full_budget])}
        only = args.only.split(",") if args.only else list(extras)
        run_all(argparse.Namespace(**{**vars(args), "datasets": dataset, "arms": args.arms, "extra_arm": [
            f"{name}={flags}" for name, flags in extras.items() if name in only]}))


def load_results(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run_all(args) -> None:
    from bench.datasets import build
    work, results = Path(args.work), Path(args.results)
    done = {(r["dataset"], r["arm"], r["seed"], r["fold"]) for r in load_results(results)}
    extra = dict(a.split("=", 1) for a in args.extra_arm)           # name=json list of flags, for tuning
    for dataset in args.datasets.split(","):
        data = build(dataset, Path(args.data_root))
        for seed in [int(s) for s in args.seeds.split(",")]:
            folds_csv = split_file(work, dataset, seed)
            make_split(data, folds_csv, seed)
            for fold in [int(k) for k in args.folds.split(",")]:
                for arm in dict.fromkeys([a for a in args.arms.split(",") if a] + list(extra)):
                    which = fold
                    if arm.endswith("-full") or "-full-" in arm:     # a full-data model: once per seed
                        if fold != int(args.folds.split(",")[0]):
                            continue
                        which = "full"
                    if (dataset, arm, seed, which) in done:
                        continue
                    run_dir = work / "runs" / dataset / arm / f"seed{seed}"
                    cmd = child_command(args, data, arm, seed, which, folds_csv, run_dir, extra.get(arm, "[]"))
                    t = time.time()
                    out = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                    if out.returncode:
                        print(f"{dataset} {arm} seed {seed} fold {fold}: FAILED\n{out.stderr[-2000:]}", flush=True)
                        continue
                    result = json.loads(out.stdout.strip().splitlines()[-1])
                    result.update(dataset=dataset, arm=arm, seed=seed, fold=which, flags=extra.get(arm, ARMS.get(arm)),
                                  wall=time.time() - t)
                    test_acc = _accuracy(result["probs"], result["classes"], result["labels"])
                    with open(results, "a") as f:
                        f.write(json.dumps(result) + "\n")
                    print(f"{dataset:<14} {arm:<16} seed {seed} fold {which}: val {result['val']:.4f} test {test_acc:.4f} "
                          f"(epoch {result['epoch']}, {result['seconds']:.0f}s)", flush=True)


def score(result: dict, key: str) -> float:
    """A run's validation score (its kept epoch) or its score on the held-out test set (accuracy, or macro-F1
    when SCORE says so)."""
    return result["val"] if key == "val" else TEST_SCORE(result["probs"], result["classes"], result["labels"])


def _accuracy(probs, classes, labels) -> float:
    pred = np.asarray(classes)[np.asarray(probs).argmax(1)]
    return float(np.mean(pred == np.asarray(labels)))


def _macro_f1(probs, classes, labels) -> float:
    from sklearn.metrics import f1_score
    pred = np.asarray(classes)[np.asarray(probs).argmax(1)]
    return float(f1_score(np.asarray(labels), pred, average="macro", labels=list(classes), zero_division=0))


TEST_SCORE = _accuracy


def report(args) -> None:
    from scipy.stats import ttest_rel, wilcoxon
    rows = load_results(Path(args.results))
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    for dataset in datasets:
        mine = [r for r in rows if r["dataset"] == dataset]
        arms = list(dict.fromkeys(r["arm"] for r in mine))
        by = {(r["arm"], r["seed"], r["fold"]): r for r in mine}
        print(f"\n## {dataset}\n")
        print(f"| arm | runs | val score (mean ± std) | test {args.score}, single fold | test {args.score}, 5-fold "
              f"ensemble | Δ val vs {args.baseline} | Δ test vs {args.baseline} (paired; p Wilcoxon / t) | s per fold |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for arm in arms:
            runs = [r for r in mine if r["arm"] == arm]
            val = np.array([r["val"] for r in runs])
            test = np.array([TEST_SCORE(r["probs"], r["classes"], r["labels"]) for r in runs])
            ens, gain = [], []                 # the 5-fold ensemble's test accuracy, and its gain over the best fold
            for seed in sorted({r["seed"] for r in runs}):
                members = [r for r in runs if r["seed"] == seed]
                if len(members) == 5:
                    ens.append(TEST_SCORE(np.mean([m["probs"] for m in members], 0), members[0]["classes"],
                                          members[0]["labels"]))
                    gain.append(ens[-1] - max(TEST_SCORE(m["probs"], m["classes"], m["labels"]) for m in members))
            delta = {}
            for key in ("val", "test"):                 # paired by (seed, fold) with the baseline arm
                pairs = [(score(by[(arm, r["seed"], r["fold"])], key), score(by[(args.baseline, r["seed"], r["fold"])], key))
                         for r in runs if (args.baseline, r["seed"], r["fold"]) in by]
                delta[key] = ""
                if pairs and arm != args.baseline:
                    d = np.array([a - b for a, b in pairs])
                    delta[key] = f"{100 * d.mean():+.2f} ± {100 * d.std():.2f} pt (n={len(d)})"
                    if len(d) >= 5 and np.any(d != 0):
                        delta[key] += f", p {wilcoxon(d).pvalue:.2g} / {ttest_rel(*zip(*pairs)).pvalue:.2g}"
            ens_text = (f"{np.mean(ens):.4f} ± {np.std(ens):.4f} ({len(ens)} seeds; {100 * np.mean(gain):+.2f} pt over "
                        f"the best fold)" if ens else "-")
            print(f"| {arm} | {len(runs)} | {val.mean():.4f} ± {val.std():.4f} | {test.mean():.4f} ± {test.std():.4f} | "
                  f"{ens_text} | {delta['val']} | {delta['test']} | {np.mean([r['seconds'] for r in runs]):.0f} |")


def report_pairs(args) -> None:
    """For each `A:B` of --pair, per dataset: A's held-out test score minus B's, paired by (seed, fold) (a full-data
    arm's fold is "full": one pair per seed), with A's and B's seconds."""
    from scipy.stats import ttest_rel, wilcoxon
    rows = load_results(Path(args.results))
    print(f"\n| dataset | A | B | n | test {args.score} A | test {args.score} B | Δ test A − B (paired) | p Wilcoxon / t | "
          f"s A / s B |\n|---|---|---|---:|---:|---:|---:|---:|---:|")
    for pair in args.pair:
        a, b = pair.split(":")
        for dataset in dict.fromkeys(r["dataset"] for r in rows):
            by = {(r["arm"], r["seed"], r["fold"]): r for r in rows if r["dataset"] == dataset}
            keys = sorted((s, f) for (arm, s, f) in by if arm == a and (b, s, f) in by)
            if not keys:
                continue
            ta = np.array([score(by[(a, *k)], "test") for k in keys])
            tb = np.array([score(by[(b, *k)], "test") for k in keys])
            d = ta - tb
            p = f"{wilcoxon(d).pvalue:.2g} / {ttest_rel(ta, tb).pvalue:.2g}" if len(d) >= 5 and np.any(d != 0) else "–"
            sa = np.mean([by[(a, *k)]["seconds"] for k in keys])
            sb = np.mean([by[(b, *k)]["seconds"] for k in keys])
            print(f"| {dataset} | {a} | {b} | {len(d)} | {ta.mean():.4f} | {tb.mean():.4f} | "
                  f"{100 * d.mean():+.2f} ± {100 * d.std():.2f} pt | {p} | {sa:.0f} / {sb:.0f} |")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run")
    r.add_argument("--datasets", default="digits,digits-hard,photo-patches")
    r.add_argument("--arms", default="kit,hand")
    r.add_argument("--extra-arm", action="append", default=[], metavar='NAME=["--flag","value"]')
    r.add_argument("--seeds", default="0,1,2")
    r.add_argument("--folds", default="0,1,2,3,4")
    r.add_argument("--epochs", type=int, default=8)
    r.add_argument("--img-size", type=int, default=32)
    r.add_argument("--num-workers", type=int, default=2)
    r.add_argument("--data-root", default="data")
    r.add_argument("--work", default="runs/bench_recipe")
    r.add_argument("--results", default="bench/results/recipe.jsonl")
    rep = sub.add_parser("report")
    rep.add_argument("--results", default="bench/results/recipe.jsonl")
    rep.add_argument("--baseline", default="kit")
    rep.add_argument("--score", default="accuracy", choices=["accuracy", "macro_f1"], help="the held-out test score")
    rep.add_argument("--pair", action="append", default=[], metavar="A:B",
                     help="also print A - B on the held-out test, paired (e.g. kit-budget:hand)")
    eq = sub.add_parser("equal-time", help="the hand loop at the kit's seconds per fold, and the kit at the hand "
                                           "loop's; each dataset calibrated first (run it on a quiet machine)")
    eq.add_argument("--arms", default="kit,hand", help="the 8-epoch arms run beside the equal-time ones")
    eq.add_argument("--only", default="", help="run only these equal-time arms (e.g. kit-budget,kit-full-budget "
                                               "after a change to the kit's clock)")
    for name, default in (("--datasets", "digits-hard,photo-patches,digits"), ("--seeds", "0,1"),
                          ("--folds", "0,1,2,3,4"), ("--data-root", "data"), ("--work", "runs/bench_recipe"),
                          ("--results", "bench/results/recipe.jsonl")):
        eq.add_argument(name, default=default)
    for name, default in (("--epochs", 8), ("--img-size", 32), ("--num-workers", 2)):
        eq.add_argument(name, type=int, default=default)
    one = sub.add_parser("one")
    for name in ("--data", "--arm", "--folds-csv", "--run-dir", "--flags", "--fold"):       # --fold: k or full
        one.add_argument(name)
    for name in ("--seed", "--img-size", "--epochs", "--num-workers"):
        one.add_argument(name, type=int)
    args = p.parse_args()
    if args.command == "run":
        Path(args.results).parent.mkdir(parents=True, exist_ok=True)
        run_all(args)
    elif args.command == "equal-time":
        equal_time(args)
    elif args.command == "report":
        global TEST_SCORE
        TEST_SCORE = _macro_f1 if args.score == "macro_f1" else _accuracy
        report(args)
        if args.pair:
            report_pairs(args)
    else:
        os.environ.setdefault("PYTHONHASHSEED", "0")
        one_run(args)


if __name__ == "__main__":
    main()
