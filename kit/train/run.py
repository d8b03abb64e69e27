"""A training run: validate the competition folder, load/create folds, train the asked folds, score the CV.
The run dir's layout is kit.evaluate.rundir's."""
from __future__ import annotations

import logging

import numpy as np

from kit.train import distributed
from kit.prepare import folds as folds_mod
from kit.settings.config import Config, load_config
from kit.core.table import check_images_readable, train_table
from kit.train.device import resolve_device
from kit.train.fold import FoldData, train_fold
from kit.core.errors import KitError
from kit.train.model import check_model_name
from kit.evaluate.oof import Oof, write_oof
from kit.evaluate.report import write_reports
from kit.evaluate.rundir import RunDir
from kit.core.task import Task, build, infer_kind, task_class

log = logging.getLogger(__name__)


def parse_fold_arg(fold: str, num_folds: int, folds_csv: str) -> list[int]:
    if fold == "all":
        return list(range(num_folds))
    try:
        k = int(fold)
    except ValueError:
        raise KitError(f"--fold must be a fold number or 'all', got {fold!r}") from None
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
        raise KitError(f"{table.csv_path} has no column {cfg.label_col!r} (its columns: {', '.join(table.header)}); "
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
    if cfg.data_dir is None:
        from kit.prepare import demo as demos
        variant = demo or "multiclass"
        root = demos.materialize(variant=variant)
        return load_config(config_file, {**overrides, "data_dir": str(root)}, base=demos.settings(variant))
    if demo:
        raise KitError("--demo trains an embedded demo competition; drop --data-dir (or --demo)")
    return cfg


def train(config_file: str | None, overrides: dict, fold: str = "0", resume: bool = False,
          force_resume: bool = False, demo: str | None = None) -> dict:
    """What train.py does: settings, then the run."""
    return run(load_settings(config_file, overrides, demo), fold, resume, force_resume)


def run(cfg: Config, fold: str = "0", resume: bool = False, force_resume: bool = False) -> dict:
    """Train the asked folds. Under torchrun every process runs this; the checks below are deterministic, so
    every rank stops on the same error, and only rank 0 writes."""
    resolve_device(cfg.device)          # fail fast on settings, before reading thousands of images
    check_model_name(cfg.model)
    d = distributed.init(cfg.device)
    try:
        return _run(cfg, fold, resume, force_resume, d)
    finally:
        distributed.shutdown()


def _run(cfg: Config, fold: str, resume: bool, force_resume: bool, d: distributed.Dist) -> dict:
    table = train_table(cfg)
    task = resolve_task(cfg, table)
    check_images_readable(table.paths)
    fold_of_row = folds_mod.load_or_create(cfg.folds_csv, table, task.stratify_key(table.labels), cfg.num_folds,
                                           cfg.seed, write=d.main, names=task.names)
    cfg.num_folds = int(fold_of_row.max()) + 1
    todo = parse_fold_arg(fold, cfg.num_folds, cfg.folds_csv)
    run_dir = RunDir(cfg.run_dir)
    changes = run_dir.check_setup(cfg, task)
    resuming_all = resume and all(run_dir.last(k).is_file() for k in todo)     # then each fold's last.pt decides
    if changes and not force_resume and not resuming_all:
        raise KitError(f"{run_dir} holds fold models trained with another setup ({'; '.join(changes)}); their "
                       f"ensemble and CV would mix setups. Use a new --run-dir, the original settings, or "
                       f"--force-resume to train into it anyway")
    if changes and force_resume:
        log.warning(f"warning: {run_dir} holds fold models trained with another setup ({'; '.join(changes)}); "
                    f"training into it anyway because --force-resume was given")
    distributed.barrier()               # every rank has compared the run dir before rank 0 rewrites it
    if d.main:
        run_dir.save_setup(cfg, task)

    targets = task.encode(table.labels)
    results = []
    for k in todo:
        data = FoldData(table, targets, fold_of_row, k)
        results.append(train_fold(cfg, task, data, run_dir, resume or force_resume, force_resume))
        if d.main:
            write_reports(run_dir, quiet=True)

    summary = {"folds": {r.fold: {"score": r.best_score, "epoch": r.best_epoch, "seconds": r.seconds}
                         for r in results}}
    if fold == "all" and d.main:
        oof = Oof.concat([r.oof for r in results])
        row = {image_id: i for i, image_id in enumerate(table.ids)}
        oof = oof.take(np.argsort([row[i] for i in oof.ids]))          # train.csv order
        write_oof(run_dir.oof_file, oof)
        fold_scores = [r.best_score for r in results]
        summary["cv"] = task.score(cfg.metric, task.encode(oof.labels), oof.outputs)
        log.info(f"CV {cfg.metric}: {summary['cv']:.4f} over {len(oof)} OOF images "
                 f"(folds: {', '.join(f'{s:.4f}' for s in fold_scores)}; mean {np.mean(fold_scores):.4f} "
                 f"± {np.std(fold_scores):.4f}) -> {run_dir.oof_file}")
        write_reports(run_dir)
    return summary
