"""`python -m kit.runs [RUNS_DIR]`: one table of every run dir under a folder, to compare a week of runs.

    python -m kit.runs [RUNS_DIR] [--sort cv|name|seconds] [--md FILE]

A run dir is a folder holding config.yaml and at least one fold<k>/ or full/ (train.py's, a kit.tune trial's, a
seed of --seeds). One row per run: its model (the trained folds', so `auto` shows what it chose), image size, the
settings that differ between the runs listed (every Config field outside RUNTIME_KEYS; equal ones are left out),
the validation score of each fold's kept model as mean ± std, the folds finished of the run's num_folds, the mean
training seconds per fold (its epochs' in metrics.csv; start-up and reports not counted), the graphs exported into
it (ensemble.onnx and its int8/fp16 twins) and the blends whose folder beside it names it (infer.py's blend_A+B/).
Read-only: nothing under RUNS_DIR is written; --md writes the table to FILE (atomically) as well as printing it.

--sort cv (the default) puts each run's best first in its own metric's direction (a lower RMSE ranks higher); runs
of different metrics are grouped by metric.
"""
from __future__ import annotations

import math
import re
import statistics
from dataclasses import dataclass
from pathlib import Path

from kit.core.errors import KitError
from kit.store.oof import read_history
from kit.evaluate.report import load_folds
from kit.store.rundir import FULL, RUNTIME_KEYS, RunDir
from kit.settings import config as config_mod

_RUN_PART = re.compile(r"^(fold\d+|full)$")


@dataclass
class RunRow:
    run: RunDir
    settings: dict            # the run's config.yaml
    model: str
    metric: str
    higher_is_better: bool
    scores: list[float]       # each finished fold's kept-model validation score
    folds_done: int
    seconds: float            # mean seconds per fold (nan: none trained)
    exported: list[str]
    blends: list[str]

    @property
    def cv(self) -> float:
        return statistics.fmean(self.scores) if self.scores else math.nan


def find_runs(root: Path) -> list[RunDir]:
    """Every run dir under `root` (root itself included), by path."""
    if not root.is_dir():
        raise KitError(f"{root} is not a folder; give the folder that holds your run dirs (default: runs)")
    found = []
    for config in sorted(root.rglob("config.yaml")):
        folder = config.parent
        if _RUN_PART.match(folder.name):
            continue                                # a fold's own config.yaml
        if any(_RUN_PART.match(d.name) for d in folder.iterdir() if d.is_dir()):
            found.append(RunDir(folder))
    return found


def describe(run: RunDir) -> RunRow:
    cfg, task = run.config(), run.task()
    folds = [f for f in load_folds(run) if run.finished(f.fold)]
    histories = [read_history(run.history(k)) for k in run.fold_dirs() if run.history(k).is_file()]
    trained = run.trained()
    model = run.fold_setup(trained[0])["model"] if trained else cfg.model
    seconds = [sum(e.seconds for e in h) for h in histories if h]
    blends = sorted(d.name for d in run.path.parent.glob("blend_*")
                    if d.is_dir() and run.path.name in d.name[len("blend_"):].split("+"))
    return RunRow(run, cfg.to_dict(), model, cfg.metric, task.higher_is_better(cfg.metric), [f.score for f in folds],
                  len(folds) + (1 if FULL in trained and run.finished(FULL) else 0),
                  statistics.fmean(seconds) if seconds else math.nan,
                  [f.name for f in run.exported()], blends)


def differing(rows: list[RunRow]) -> list[str]:
    """Config fields (outside RUNTIME_KEYS, model and img_size, which have their own columns) whose values differ."""
    shown = {"model", "img_size"}
    return [k for k in config_mod.FIELDS if k not in RUNTIME_KEYS and k not in shown
            and len({repr(r.settings.get(k)) for r in rows}) > 1]


def sort_rows(rows: list[RunRow], by: str) -> list[RunRow]:
    if by == "name":
        return sorted(rows, key=lambda r: str(r.run.path))
    if by == "seconds":
        return sorted(rows, key=lambda r: (math.isnan(r.seconds), r.seconds))
    return sorted(rows, key=lambda r: (r.metric, not r.scores, -r.cv if r.higher_is_better else r.cv))


def table(rows: list[RunRow], root: Path) -> str:
    keys = differing(rows)
    head = ["run", "model", "img", *keys, "metric", "CV (fold mean ± std)", "folds", "s / fold", "exported",
            "blends"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---:" if h in ("img", "folds", "s / fold") else "---"
                                                             for h in head) + "|"]
    for r in rows:
        cv = "–" if not r.scores else f"{r.cv:.4f}" + (f" ± {statistics.stdev(r.scores):.4f}"
                                                      if len(r.scores) > 1 else "")
        name = str(r.run.path.relative_to(root)) if r.run.path != root else r.run.path.name
        cells = [name, r.model, str(r.settings.get("img_size")), *[_setting(r.settings.get(k)) for k in keys], r.metric,
                 cv, f"{r.folds_done}/{r.settings.get('num_folds')}",
                 "–" if math.isnan(r.seconds) else f"{r.seconds:.0f}", ", ".join(r.exported) or "–",
                 ", ".join(r.blends) or "–"]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def _setting(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def runs_table(root: str | Path, sort: str = "cv") -> str:
    root = Path(root)
    runs = find_runs(root)
    if not runs:
        raise KitError(f"no run dirs under {root} (a run dir holds config.yaml and fold<k>/; train one with "
                       f"python train.py --fold 0 --run-dir {root}/NAME)")
    rows = sort_rows([describe(r) for r in runs], sort)
    return f"{len(rows)} run(s) under {root}, sorted by {sort}\n\n" + table(rows, root)
