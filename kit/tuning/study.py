"""`python -m kit.tune`: an Optuna study over train.py's settings, each trial a normal run dir.

    python -m kit.tune --data-dir D --space SPACE.yaml --trials N [--folds 0|all] [--study NAME]
                       [--storage URL] [--pruner median|halving|none] [any train.py flag, fixed for every trial]

STUDY = --run-dir (default runs/tune/NAME):
  study.db               Optuna's storage (SQLite) unless --storage names another (postgresql://..., mysql://...):
                         the same command on several machines then shares one study (start one first: it creates
                         the database; workers of one machine wait for each other); re-running it continues it
  .study.lock            held while a worker opens the storage
  trial_<n>/             trial n's run dir (config.yaml, fold<k>/, cv.md as train.py writes them), all trials on one
                         folds file (--folds-csv)
  trial_<n>.yaml         the settings trial n trained with (train.py --config takes it); trial_<n>.log its output
  best.yaml              the best completed trial's settings, without its run dir: python train.py --config best.yaml
  trials.md              every trial: state, settings, seconds; the CV of each completed one (the best first), the
                         error of a failed one, the epoch that pruned a pruned one
  importance.png         Optuna's parameter importances (from two completed trials on)

The first trial trains the defaults (the fixed flags alone) when the space holds each default, so the best trial is
never below the run the user had without a study; trials.md marks it. A trial is `python train.py --config
trial_<n>.yaml --fold F` in its own process; its value is the run's CV (the OOF
score of the folds it trained, the task's metric and direction). While it trains, its metrics.csv is read after every
epoch and reported to Optuna (step = fold x epochs + epoch); when the pruner says so the process is stopped and the
trial recorded as pruned. A trial whose training fails is recorded as failed with its error line, never as a score.
"""
from __future__ import annotations

import fcntl
import logging
import os
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import yaml

from kit.core.atomic import write_text
from kit.core.entry import number, option
from kit.core.errors import KitError
from kit.store.oof import Oof, read_history
from kit.evaluate.report import load_folds, pyplot
from kit.store.rundir import RunDir
from kit.settings.config import LR_BASE, batch_for, load_config
from kit.tuning.space import Param, read_space

log = logging.getLogger(__name__)
TRAIN_PY = Path(__file__).resolve().parents[2] / "train.py"
POLL_S = 0.5


@dataclass
class TuneRequest:
    """kit.tune's own flags, as one value (kit.core.entry.add_flags); train.py's flags follow them."""
    space: str = option(None, "YAML file: settings to search (kit/tuning/space.py)", required=True)
    trials: int = option(None, "trials in the study, all workers together (a re-run continues up to this count)",
                         parse=number(1, 100_000, int), required=True)
    folds: str = option("0", "which folds a trial trains", choices=("0", "all"))
    study: str = option("study", "the study's name")
    storage: Optional[str] = option(None, "an Optuna storage URL shared by several workers (default: sqlite in the "
                                          "study's folder)")
    pruner: str = option("median", "stop unpromising trials on their per-epoch validation score",
                         choices=("median", "halving", "none"))


def optuna_module():
    try:
        import optuna
    except ImportError:
        raise KitError("python -m kit.tune needs Optuna: pip install -e \".[tune]\" (or pip install optuna)") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # the heartbeat and the importance plot are marked experimental; a user of kit.tune did not choose them
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


def direction(fixed: dict) -> str:
    """maximize or minimize: the metric of the task the data resolves to (as train.py resolves it)."""
    from kit.core.table import train_table
    from kit.train.run import resolve_task
    cfg = load_config(None, fixed)
    return "maximize" if resolve_task(cfg, train_table(cfg)).higher_is_better(cfg.metric) else "minimize"


def run_trial(trial, study_dir: Path, fixed: dict, params: list[Param], fold: str) -> float:
    """Train one trial in its own process, report its epochs, and return its CV."""
    optuna = optuna_module()
    searched = {p.name: p.suggest(trial) for p in params}
    # the defaults trial trains with the fixed flags alone: a setting it leaves to train.py (the model's batch) is
    # resolved there exactly as in the user's own run
    settings = {**fixed, **({} if trial.user_attrs.get(DEFAULTS) else searched),
                "run_dir": str(study_dir / f"trial_{trial.number}")}
    trial_file = study_dir / f"trial_{trial.number}.yaml"
    write_text(trial_file, yaml.safe_dump(settings, sort_keys=False))
    log.info(f"tune: trial {trial.number}{' (the defaults)' if trial.user_attrs.get(DEFAULTS) else ''}: "
             f"{', '.join(f'{name}={value}' for name, value in searched.items())}")
    log_file = trial_file.with_suffix(".log")           # train.py's output (a file: a pipe left unread would block it)
    with open(log_file, "w") as out:
        proc = subprocess.Popen([sys.executable, str(TRAIN_PY), "--config", str(trial_file), "--fold", fold],
                                stdout=out, stderr=subprocess.STDOUT)
    run, reported = RunDir(settings["run_dir"]), set()
    t0 = time.time()
    while proc.poll() is None:
        time.sleep(POLL_S)
        for step, score in epoch_scores(run, reported):
            trial.report(score, step)
            if trial.should_prune():
                proc.terminate()
                proc.wait()
                trial.set_user_attr("seconds", round(time.time() - t0, 1))
                trial.set_user_attr("pruned", f"fold {step // 1000} epoch {step % 1000}: {score:.4f}")
                raise optuna.TrialPruned(f"pruned at step {step} ({score:.4f})")
    trial.set_user_attr("seconds", round(time.time() - t0, 1))
    if proc.returncode:
        lines = [line for line in log_file.read_text(errors="replace").splitlines() if line.strip()]
        trial.set_user_attr("error", lines[-1] if lines else f"train.py exit code {proc.returncode}")
        raise TrialFailed(trial.user_attrs["error"])
    for step, score in epoch_scores(run, reported):
        trial.report(score, step)
    return oof_score(run)


def oof_score(run: RunDir) -> float:
    """The run's CV: its metric over the OOF predictions of every fold it trained."""
    folds = load_folds(run)
    if not folds:
        raise TrialFailed(f"{run} has no OOF predictions")
    oof, task = Oof.concat([f.oof for f in folds]), run.task()
    return float(task.score(run.config().metric, task.encode(oof.labels), oof.outputs))


class TrialFailed(Exception):
    """A trial's train.py failed: Optuna records the trial as failed and the study goes on."""


def epoch_scores(run: RunDir, reported: set) -> list[tuple[int, float]]:
    """(step, validation score) of the epochs finished since the last call, every fold of the run (fold k's epochs
    from step 1000 k on)."""
    out = []
    for k in run.folds("metrics.csv"):
        for e in read_history(run.history(k)):
            step = k * 1000 + e.epoch
            if step not in reported and e.score == e.score:                # NaN: an epoch without validation
                reported.add(step)
                out.append((step, e.score))
    return out


def tune(space: str, trials: int, fold: str, fixed: dict, study_name: str, storage: str | None, pruner: str) -> dict:
    optuna = optuna_module()
    params = read_space(space, fixed)
    study_dir = Path(fixed.get("run_dir") or Path("runs") / "tune" / study_name)
    fixed = {k: v for k, v in fixed.items() if k != "run_dir"}
    goal = direction(fixed)
    study_dir.mkdir(parents=True, exist_ok=True)
    study = open_study(optuna, study_dir, storage, study_name, goal, make_pruner(optuna, pruner),
                       defaults_trial(params, fixed))
    existing = sum(t.state != optuna.trial.TrialState.WAITING for t in study.get_trials(deepcopy=False))
    # seeded by the trials already run, so a resumed study does not draw its first values again (workers started
    # together may draw the same values: each still runs its own trial)
    study.sampler = optuna.samplers.TPESampler(seed=load_config(None, fixed).seed + existing)
    if existing < trials:
        log.info(f"tune: study {study_name!r} ({goal} the CV) in {study_dir}: {trials - existing} of {trials} trials "
                 f"to run")
        study.optimize(lambda t: run_trial(t, study_dir, fixed, params, fold), catch=(TrialFailed,),
                       callbacks=[optuna.study.MaxTrialsCallback(trials, states=None)])
    return summarize(optuna, study, study_dir, fixed, params)


DEFAULTS = "defaults"            # the user attribute that marks the trial of the defaults


def defaults_trial(params: list[Param], fixed: dict) -> dict | None:
    """The searched settings as a run with only the fixed flags trains them, when the space holds every one (else
    None, and a log line names those it does not). A study starts with this trial, so its best is never below what the
    user would have run without it (the rule for every `auto` of the kit). A default left to the run is resolved as
    train.py resolves it: lr_base by the optimizer, batch_size by the model (32 while the model is `auto`)."""
    cfg = load_config(None, fixed)
    resolved = {"lr_base": LR_BASE[cfg.optimizer], "batch_size": batch_for(cfg)}
    values, outside = {}, []
    for p in params:
        default = getattr(cfg, p.name)
        point = p.point(resolved.get(p.name) if default is None else default)
        if point is None:
            outside.append(f"{p.name}={default}")
        values[p.name] = point
    if outside:
        log.info(f"tune: the space does not hold the default of {', '.join(outside)}: no trial of the defaults")
        return None
    return values


def open_study(optuna, study_dir: Path, storage: str | None, name: str, goal: str, pruner, defaults: dict | None = None):
    """The study `name` in `storage` (default: study_dir/study.db), created if new, with the trial of `defaults` queued
    first. Workers of one machine open it one at a time: two creating a new database's schema at once collide on its
    version row (sqlalchemy IntegrityError, seen in CI with two workers on one SQLite file), and two queueing the
    defaults would train them twice."""
    url = storage or f"sqlite:///{(study_dir / 'study.db').resolve()}"
    with open(study_dir / ".study.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)            # dropped when the file closes (or the process dies)
        # heartbeats: a killed worker's trial is recorded as failed
        rdb = optuna.storages.RDBStorage(url, heartbeat_interval=30, grace_period=90)
        study = optuna.create_study(study_name=name, storage=rdb, direction=goal, load_if_exists=True, pruner=pruner)
        if defaults is not None and not study.get_trials(deepcopy=False):
            study.enqueue_trial(defaults, user_attrs={DEFAULTS: True})
        return study


def make_pruner(optuna, name: str):
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner()
    return optuna.pruners.NopPruner()


def summarize(optuna, study, study_dir: Path, fixed: dict, params: list[Param]) -> dict:
    """best.yaml, trials.md and importance.png from the study's trials (all workers')."""
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    states = {s: sum(t.state.name == s for t in study.trials) for s in ("COMPLETE", "PRUNED", "FAIL", "RUNNING")}
    if not complete:
        errors = [t.user_attrs.get("error") for t in study.trials if t.user_attrs.get("error")]
        raise KitError(f"no trial of the study completed ({states['FAIL']} failed, {states['PRUNED']} pruned)"
                       f"{'; the first error: ' + errors[0] if errors else ''}")
    best = study.best_trial
    settings = {**fixed, **best.params}
    write_text(study_dir / "best.yaml", f"# kit.tune: the best trial ({best.number}, CV {best.value:.6f}) of study "
                                        f"{study.study_name}\n" + yaml.safe_dump(settings, sort_keys=False))
    names = [p.name for p in params]
    reverse = study.direction == optuna.study.StudyDirection.MAXIMIZE
    # completed trials by their CV, then the rest by number: Optuna gives a pruned trial the value of its last
    # reported epoch, which is no CV and must not rank beside one
    ranked = sorted(complete, key=lambda t: -t.value if reverse else t.value) + \
        [t for t in study.trials if t.state != optuna.trial.TrialState.COMPLETE]
    rows = [f"| {t.number}{' (the defaults)' if t.user_attrs.get(DEFAULTS) else ''} | {t.state.name.lower()} | "
            f"{f'{t.value:.6f}' if t.state == optuna.trial.TrialState.COMPLETE else ''} | "
            + " | ".join(str(t.params.get(n, '')) for n in names)
            + f" | {t.user_attrs.get('seconds', '')} | {t.user_attrs.get('error', t.user_attrs.get('pruned', ''))} |"
            for t in ranked]
    write_text(study_dir / "trials.md", f"# Study {study.study_name}\n\n{len(study.trials)} trials ("
               f"{', '.join(f'{v} {k.lower()}' for k, v in states.items() if v)}); the best: trial {best.number}, "
               f"CV {best.value:.6f} -> best.yaml\n\n| trial | state | CV | {' | '.join(names)} | seconds | "
               f"error, or the epoch that pruned it |\n"
               f"|{'---|' * (len(names) + 5)}\n" + "\n".join(rows) + "\n")
    importance(optuna, study, study_dir / "importance.png", len(complete))
    default = next((t for t in complete if t.user_attrs.get(DEFAULTS)), None)
    log.info(f"tune: best trial {best.number}: CV {best.value:.6f} ({', '.join(f'{k}={v}' for k, v in best.params.items())})"
             f"{f'; the defaults (trial {default.number}): CV {default.value:.6f}' if default else ''}"
             f" -> {study_dir / 'best.yaml'}; every trial: {study_dir / 'trials.md'}")
    return {"best": best.number, "value": best.value, "params": best.params, "states": states}


def importance(optuna, study, path: Path, complete: int) -> None:
    if complete < 2:
        return
    try:
        plt = pyplot()
        ax = optuna.visualization.matplotlib.plot_param_importances(study)
        ax.figure.savefig(path.with_suffix(f".tmp{os.getpid()}.png"), dpi=100, bbox_inches="tight")
        os.replace(path.with_suffix(f".tmp{os.getpid()}.png"), path)
        plt.close(ax.figure)
    except (ValueError, RuntimeError) as e:         # e.g. every completed trial sampled the same values
        log.info(f"tune: no importance plot ({e})")
