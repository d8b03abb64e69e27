"""A training run: read and check everything (the competition folder, the task, the split, the run dir, what
a resume would continue), take the locks, only then write (the split, the run's setup), train the asked folds,
score the CV. A refused run leaves every file as it was. The run dir's layout is kit.store.rundir's."""
from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from kit.core.entry import process_started
from kit.core.errors import KitError
from kit.core.paths import Outputs
from kit.core.table import Table, check_images_readable, train_table
from kit.core.task import Task, build, infer_kind, task_class
from kit.store.oof import Oof, write_oof
from kit.store.rundir import FULL, RunDir
from kit.prepare.imbalance import imbalance_advice
from kit.prepare import folds as folds_mod
from kit.settings.cli import TrainRequest
from kit.settings.config import Config, batch_for, load_config, scaled_lr, test_size
from kit.store import state
from kit.train import distributed, tracking
from kit.train.budget import Pace, deadline
from kit.train.cache import ImageStore
from kit.train.choice import AUTO, choose_model
from kit.train.device import resolve_device, resolve_precision
from kit.train.fold import FoldData, train_fold
from kit.train.objective import Objective
from kit.train.teacher import Teacher, default_folds_file, load_teacher, teaching
from kit.store.lock import fold_lock, held, setup_lock
from kit.train.model import check_model_name

log = logging.getLogger(__name__)


def parse_fold_arg(fold: str, num_folds: int, folds_csv: str) -> list[int | str]:
    if fold == "all":
        return list(range(num_folds))
    if fold == FULL:
        return [FULL]
    try:
        k = int(fold)
    except ValueError:
        raise KitError(f"--fold must be a fold number, 'all' or 'full', got {fold!r}") from None
    if not 0 <= k < num_folds:
        raise KitError(f"--fold {k} is out of range: {folds_csv} has {num_folds} folds (0..{num_folds - 1})")
    return [k]


def resolve_task(cfg: Config, table) -> "Task":
    """The run's task: cfg.task, or inferred from the labels; cfg.task and cfg.metric are set to what they
    resolve to, so the saved config says what ran."""
    kind = cfg.task
    if kind == "auto":
        kind, why = infer_kind(table.labels, from_columns=table.tag_columns is not None)
        log.info(f"task: {kind} ({why}; pass --task to choose another)")
    if not task_class(kind).reads_tag_columns and table.tag_columns is not None:
        raise KitError(f"{table.csv_path} has no column {cfg.label_col!r} (its columns: {', '.join(map(repr, table.header))}); "
                       f"one 0/1 column per tag is a multilabel table: pass --task multilabel, or set label_col")
    if not task_class(kind).empty_label_is_a_prediction:
        table.require_labels(cfg.label_col)
    task = build(kind, table.labels, cfg.label_col, cfg.regression_loss, cfg.min_labels)
    cfg.task, cfg.metric = kind, task.check_metric(cfg.metric)
    return task


def load_settings(config_file: str | None, overrides: dict, demo: str | None = None) -> Config:
    """The run's Config: flags over the --config file over the built-in settings; without a data dir, the
    embedded demo competition (`demo`: its task, default multiclass) is written and its settings lie beneath."""
    cfg = load_config(config_file, overrides)
    folds_file = default_folds_file(cfg.teacher)
    if folds_file and cfg.folds_csv == Config().folds_csv:          # a student trains on its teacher's folds file
        overrides = {**overrides, "folds_csv": folds_file}
        cfg = load_config(config_file, overrides)
    if cfg.data_dir is None:
        from kit.prepare import demo as demos
        variant = demo or "multiclass"
        root = demos.materialize(variant=variant)
        return load_config(config_file, {**overrides, "data_dir": str(root)}, base=demos.settings(variant))
    if demo:
        raise KitError("--demo trains an embedded demo competition; drop --data-dir (or --demo)")
    return cfg


@dataclass
class Hooks:
    """What the stages above training do at its milestones, on the main process only: train.py rebuilds the reports
    (kit.evaluate.report) after each fold (quietly) and after a --fold all run's CV. Training itself writes only the
    run's own files (kit.store), so it imports nothing from the stages that read them."""
    fold_end: Callable[[RunDir], None] = lambda run: None
    run_end: Callable[[RunDir], None] = lambda run: None


def train(request: TrainRequest, overrides: dict, hooks: Hooks = Hooks()) -> dict:
    """What train.py does: settings, then the run (with --seeds, one run per seed in RUN_DIR/seed<k>/, all on the
    same folds file: the first seed's split, or the file that exists)."""
    r = request
    cfg = load_settings(r.config, overrides, r.demo)
    if not r.seeds:
        return run(cfg, r.fold, r.resume, r.force_resume, started=process_started(), hooks=hooks)
    values = parse_seeds(r.seeds)
    summaries = {}
    for seed in values:
        seeded = load_settings(r.config, {**overrides, "seed": seed, "run_dir": str(Path(cfg.run_dir) / f"seed{seed}"),
                                          "folds_csv": cfg.folds_csv}, r.demo)
        log.info(f"seeds: seed {seed} -> {seeded.run_dir}")
        summaries[seed] = run(seeded, r.fold, r.resume, r.force_resume,
                              started=None if summaries else process_started(), hooks=hooks)
    log.info(f"seeds: {len(values)} runs in {cfg.run_dir}/seed<k>/; blend them with python infer.py --run-dir "
             f"{cfg.run_dir}")
    return {"seeds": summaries}


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",")]
    except ValueError:
        raise KitError(f"--seeds must be comma-separated integers, got {text!r}") from None
    if len(set(seeds)) != len(seeds) or any(not 0 <= s < 2**32 for s in seeds):
        raise KitError(f"--seeds must be distinct integers in 0 .. 2**32-1, got {text!r}")
    return seeds


def run(cfg: Config, fold: str = "0", resume: bool = False, force_resume: bool = False,
        started: float | None = None, hooks: Hooks = Hooks()) -> dict:
    """Train the asked folds. Under torchrun every process runs this; the checks below are deterministic, so
    every rank stops on the same error, and only rank 0 writes. `started`: when the first fold's --time-budget
    began (train.py: the process's start; default now)."""
    started = started or time.time()
    resolve_precision(cfg.precision, resolve_device(cfg.device))   # fail fast on settings, before reading images
    if cfg.model != AUTO:
        check_model_name(cfg.model)
    d = distributed.init(cfg.device)
    try:
        return _run(cfg, fold, resume, force_resume, d, started, hooks)
    finally:
        distributed.shutdown()


@dataclass
class Plan:
    """What a run will do, decided before anything is written."""
    cfg: Config
    task: Task
    table: Table
    fold_of_row: np.ndarray
    new_split: bool                  # the folds file does not exist yet: written once every check has passed
    todo: list[int | str]
    run: RunDir
    resume: bool
    force: bool
    images: ImageStore
    teacher: Optional[Teacher] = None
    model_why: str = "set by --model"
    pace: Optional[Pace] = None          # a step --model auto timed (kit.train.budget): the first fold's plan uses it


def check_outputs(cfg: Config) -> None:
    """The run dir and the folds file are written; neither may lie in the competition folder, or be a file where a
    folder is meant (and the reverse)."""
    guard = Outputs().protects(cfg.data_dir, "the competition folder")
    for teacher in cfg.teacher or []:
        guard.protects(teacher, "the teacher run")
    guard.check("--run-dir", cfg.run_dir, "folder")
    guard.check("--folds-csv", cfg.folds_csv, "file")


def plan(cfg: Config, fold: str, resume: bool, force: bool, started: float | None = None) -> Plan:
    """Read and check everything a run needs; writes nothing. `started`: when the first fold's budget began."""
    check_outputs(cfg)
    tracking.check(cfg)
    table = train_table(cfg)
    task = resolve_task(cfg, table)
    task.check_training(cfg)
    advice = imbalance_advice(task, task.encode(table.labels), cfg)
    if advice:
        log.info(f"classes: {advice}")
    images = ImageStore(cfg.cache_images, cfg.cache_memory_mb)
    _, _, cached = images.sources(cfg, table.paths, table.paths)    # decoding into memory reads every image...
    if not cached and not images.caches(table.paths, test_size(cfg), False):
        check_images_readable(table.paths)                          # ...else each is decoded once now, as a check
    new_split = not Path(cfg.folds_csv).exists()
    fold_of_row = folds_mod.load_or_create(cfg.folds_csv, table, task.stratify_key(table.labels), cfg.num_folds,
                                           cfg.seed, write=False, names=task.names)
    cfg.num_folds = int(fold_of_row.max()) + 1
    todo = parse_fold_arg(fold, cfg.num_folds, cfg.folds_csv)
    p = Plan(cfg, task, table, fold_of_row, new_split, todo, RunDir(cfg.run_dir), resume or force, force, images)
    if cfg.model == AUTO:
        val_images = int(np.sum(fold_of_row == todo[0])) if todo[0] != FULL else 0
        end = deadline(cfg.time_budget, started or time.time()) if cfg.time_budget else None
        cfg.model, p.model_why, p.pace = choose_model(cfg, p.run, task, task.encode(table.labels),
                                                      len(table.ids) - val_images, val_images, end)
        log.info(f"model: {cfg.model} ({p.model_why})")
    cfg.batch_size = batch_for(cfg)              # the saved config says what ran: the model's batch, the scaled lr
    if cfg.lr is None:
        cfg.lr = scaled_lr(cfg, cfg.batch_size * cfg.accum_steps * distributed.current().world)
    if cfg.teacher:
        p.teacher = load_teacher(cfg.teacher, task, table, fold_of_row, todo)
    check_run_dir(p)
    return p


def binding_folds(p: Plan) -> list[int]:
    """The folds this run does not train that bind its setup: trained, or being trained by another process."""
    busy = {k for k in p.run.fold_dirs() if held(p.run.fold_dir(k) / ".lock")}
    return sorted((set(p.run.trained()) | busy) - set(p.todo))


def check_run_dir(p: Plan) -> None:
    """One setup and one split per run dir; a fold resumed only under the setup it was trained with."""
    for k in p.todo:            # first: a resume's own checkpoint names exactly what changed
        if p.resume and not p.force and p.run.last(k).is_file():
            state.check_resumable(p.run.last(k), fold_identity(p, k), p.force)
    others = binding_folds(p)
    p.run.check_split(p.table.ids, p.table.labels, p.fold_of_row, others)
    changes = p.run.check_setup(p.cfg, p.task, others)
    if changes and not p.force:
        raise KitError(f"{p.run} holds fold models trained with another setup ({'; '.join(changes)}); their "
                       f"ensemble and CV would mix setups. Use a new --run-dir, the original settings, or "
                       f"--force-resume to train into it anyway")
    if changes:
        log.warning(f"warning: {p.run} holds fold models trained with another setup ({'; '.join(changes)}); "
                    f"training into it anyway because --force-resume was given")


def fold_identity(p: Plan, k: int) -> dict:
    rows = np.flatnonzero(p.fold_of_row == k)
    return state.identity(p.cfg, p.task, k, state.split_fingerprint(p.table.ids, rows), distributed.current().world)


def claim(p: Plan, stack: contextlib.ExitStack) -> None:
    """Take the run's setup lock and every asked fold's lock, check the run dir again under them (another process
    may have started meanwhile), then write the split and the setup. A refusal here removes what the locks added."""
    created = [d for d in [p.run.path] + [p.run.fold_dir(k) for k in p.todo] if not d.exists()]
    locks, wrote_split = [], False
    try:
        p.run.path.mkdir(parents=True, exist_ok=True)
        with setup_lock(p.run.path) as setup:
            locks.append(setup)
            for k in p.todo:
                p.run.fold_dir(k).mkdir(exist_ok=True)
                locks.append(stack.enter_context(fold_lock(p.run.fold_dir(k))))
            check_run_dir(p)
            for lock in locks:
                lock.claim()
            if p.new_split:
                folds_mod.save(p.cfg.folds_csv, p.table, p.fold_of_row)
                wrote_split = True
            p.run.save_setup(p.cfg, p.task)
    except (KitError, OSError) as e:
        stack.close()
        for lock in locks:
            if lock.created:
                lock.path.unlink(missing_ok=True)
        if wrote_split:                       # the split this claim wrote goes with the refusal
            Path(p.cfg.folds_csv).unlink(missing_ok=True)
        for d in reversed(created):
            if d.is_dir() and not any(d.iterdir()):
                d.rmdir()
        if isinstance(e, OSError):            # a read-only or full file system: one line, nothing left behind
            raise KitError(f"cannot write the run's setup into {p.run}: {e.strerror or e}; choose a writable "
                           f"--run-dir (and --folds-csv) with free space") from None
        raise


def _run(cfg: Config, fold: str, resume: bool, force_resume: bool, d: distributed.Dist, started: float,
         hooks: Hooks) -> dict:
    p = plan(cfg, fold, resume, force_resume, started)
    with contextlib.ExitStack() as stack:
        error = None
        if d.main:
            try:
                claim(p, stack)
            except KitError as e:
                error = str(e)
        distributed.agree(error)        # every rank stops on a refusal; none waits for the others
        track = tracking.Tracking(cfg, p.run) if d.main else None
        results, pace = [], p.pace
        for k in p.todo:
            results.append(train_fold(cfg, p.task, fold_data(p, k), p.run, p.resume, p.force, p.images, started,
                                      p.model_why, pace, track))
            pace = results[-1].pace or pace     # the next fold plans from this one's steps instead of probing
            started = time.time()           # the next fold's budget counts the reports drawn between the two
            if d.main:
                hooks.fold_end(p.run)
    summary = {"folds": {r.fold: {"score": r.best_score, "epoch": r.best_epoch, "seconds": r.seconds}
                         for r in results}}
    if fold == "all" and d.main:
        summary["cv"] = write_cv(p, results)
        hooks.run_end(p.run)
    if track is not None:
        track.finish(summary.get("cv"))
    return summary


def fold_data(p: Plan, k: int | str) -> FoldData:
    """Fold k's rows, and a student's packed targets for them (from teacher fold k; kit.train.teacher)."""
    targets = p.task.encode(p.table.labels)
    data = FoldData(p.table, targets, p.fold_of_row, k)
    if p.teacher is not None:
        rows = data.train_rows                           # train.csv rows only: no pseudo-labelled images yet
        data.teaching = teaching(p.teacher, Objective(p.task, p.cfg.label_smoothing), p.cfg, p.table, targets, rows, k)
    return data


def write_cv(p: Plan, results: list) -> float:
    """The run's oof.csv (train.csv order) and its CV score, logged with the per-fold scores."""
    results = [r for r in results if r.oof is not None]
    oof = Oof.concat([r.oof for r in results])
    row = {image_id: i for i, image_id in enumerate(p.table.ids)}
    oof = oof.take(np.argsort([row[i] for i in oof.ids]))
    write_oof(p.run.oof_file, oof)
    fold_scores = [r.best_score for r in results]
    cv = p.task.score(p.cfg.metric, p.task.encode(oof.labels), oof.outputs)
    log.info(f"CV {p.cfg.metric}: {cv:.4f} over {len(oof)} OOF images (folds: "
             f"{', '.join(f'{s:.4f}' for s in fold_scores)}; mean {np.mean(fold_scores):.4f} ± "
             f"{np.std(fold_scores):.4f}) -> {p.run.oof_file}")
    return cv
