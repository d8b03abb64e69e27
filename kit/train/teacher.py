"""Teachers: trained runs whose fold models give a student its soft targets (knowledge distillation) and label the
competition's test images (pseudo-labels). A student run is a normal run: reports, export, blends, the bundle,
the page and the service work on it unchanged, and it can teach the next round.

The honest-CV rule. Nothing that saw fold k's labels may produce targets for student fold k: student fold k takes
its soft targets, for its training images and for the test images, from teacher fold k alone, which was trained
without fold k. Never from the whole teacher ensemble: four of its five models trained on fold k's images, and
their knowledge of those labels would reach student fold k through the targets (of test images that resemble fold
k's, say) and inflate its CV (tests/train/test_teacher.py shows both). The full model (`--fold full`) has no validation
fold: its training images take the teacher's out-of-fold predictions (each from the one fold model that never saw
it), the test images the whole ensemble's.

Several teacher runs (`--teacher A --teacher B`) teach as their equal-weight mean, fold by fold.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from kit.core.digest import file_digests
from kit.core.errors import KitError
from kit.core.table import Layout, Table, submission_table
from kit.core.task import Task
from kit.store.oof import read_oof
from kit.store.rundir import FULL, RunDir, expand
from kit.train.members import load_members, predict
from kit.train.objective import Objective, pack

log = logging.getLogger(__name__)


@dataclass
class Teaching:
    """What a student fold trains on: packed targets (kit.train.objective) for every train.csv row (rows of the
    validation fold are never read) and for the pseudo-labelled test images, which come after them."""
    targets: np.ndarray
    extra_paths: list = field(default_factory=list)


def fingerprint(run: RunDir, k: int) -> str:
    """sha256 of teacher fold k's best.pt and oof.csv: what its targets are a function of."""
    return hashlib.sha256(" ".join(file_digests([run.best(k), run.oof(k)])).encode()).hexdigest()


@dataclass
class Teacher:
    runs: list[RunDir]
    task: Task
    # (run, fold, image paths) -> that fold model's predictions; replaceable, e.g. by a test's memorizing teacher
    predict_fold: Callable[[RunDir, object, Sequence[Path]], np.ndarray] = None
    # (run dir, fold) -> fingerprint when the student started: a teacher fold retrained meanwhile is refused
    prints: dict = field(default_factory=dict)

    def check_unchanged(self, folds: Sequence[int]) -> None:
        """Before a student fold is taught: every teacher fold it reads is the one the student started with."""
        for (path, k), started in self.prints.items():
            if k in folds and fingerprint(RunDir(path), k) != started:
                raise KitError(f"--teacher {path}: fold {k} changed since this student started (its best.pt or "
                               f"oof.csv was rewritten: retrained meanwhile); the student's folds would learn from "
                               f"two different teachers. Let the teacher finish, then train the student again")

    def __post_init__(self):
        if self.predict_fold is None:
            members = {}

            def predict_fold(run, k, paths):
                if (run.path, k) not in members:
                    members[run.path, k] = load_members(run, [k])[0]
                return predict(members[run.path, k], list(paths))
            self.predict_fold = predict_fold

    def fold(self, k: int, paths: Sequence[Path]) -> np.ndarray:
        """Teacher fold k's predictions (the mean over teacher runs)."""
        return np.mean([self.predict_fold(run, k, paths) for run in self.runs], 0)

    def oof(self, ids: Sequence[str]) -> np.ndarray:
        """Each image's out-of-fold prediction (the mean over teacher runs)."""
        out = []
        for run in self.runs:
            oof = read_oof([run.oof(k) for k in run.folds("oof.csv")])
            at = dict(zip(oof.ids, range(len(oof))))
            out.append(oof.outputs[[at[i] for i in ids]])
        return np.mean(out, 0)

    def ensemble(self, paths: Sequence[Path]) -> np.ndarray:
        """Every fold model of every teacher run, averaged."""
        return np.mean([self.predict_fold(run, k, paths) for run in self.runs for k in run.folds("best.pt")], 0)

    def outputs(self, fold, table: Table, rows: np.ndarray, test_paths: Sequence[Path]):
        """(predictions for the training rows, for the test images) under the honest-CV rule."""
        if fold == FULL:
            return self.oof([table.ids[r] for r in rows]), (self.ensemble(test_paths) if len(test_paths) else None)
        train = self.fold(fold, [table.paths[r] for r in rows])
        return train, (self.fold(fold, test_paths) if len(test_paths) else None)


def load_teacher(dirs: Sequence[str], task: Task, table: Table, fold_of_row: np.ndarray, todo: list) -> Teacher:
    """The teacher runs, after checking (before anything is written) that each predicts the student's outputs,
    was trained on the student's folds file, and has every fold model the asked student folds need."""
    runs, prints = [], {}
    for run in expand(dirs):                 # a --seeds folder stands for each of its seed runs, as in infer.py
        d = run.path
        if not run.config_file.is_file():
            raise KitError(f"--teacher {d} is not a run dir (no config.yaml); pass a trained run")
        if not run.task().same_outputs(task):
            raise KitError(f"--teacher {d} predicts other outputs ({run.task().names[:5]}) than this run "
                           f"({task.names[:5]}); a teacher must be a run of this competition and task")
        folds = run.folds("oof.csv")
        run.check_split(table.ids, table.labels, fold_of_row, folds,
                        fix=f"a student trains on its teacher's folds file: pass --folds-csv "
                            f"{run.config().folds_csv} (or no --folds-csv)")
        needed = sorted(set(range(int(fold_of_row.max()) + 1)) if FULL in todo else {k for k in todo})
        missing = [k for k in needed if k not in run.folds("best.pt") or k not in folds or not run.finished(k)]
        if missing:
            raise KitError(f"--teacher {d} has no finished fold model for fold(s) {missing}; student fold k learns "
                           f"from teacher fold k only (the full model from all of them). Train those teacher folds "
                           f"first")
        runs.append(run)
        prints.update({(run.path, k): fingerprint(run, k) for k in needed})
    return Teacher(runs, task, prints=prints)


def teacher_folds(teacher: Teacher, fold) -> set:
    """The teacher folds a student fold's targets come from: its own, or every fold for the full model."""
    return {k for run in teacher.runs for k in run.folds("best.pt")} if fold == FULL else {fold}


def pseudo_paths(cfg) -> list[Path]:
    """The competition's test images (those sample_submission.csv lists)."""
    return submission_table(cfg.data_dir, Layout.of(cfg), cfg.id_col).paths


def teaching(teacher: Teacher, objective: Objective, cfg, table: Table, targets: np.ndarray, rows: np.ndarray,
             fold) -> Teaching:
    """A student fold's packed targets: its training rows' labels and teacher targets, then the test images the
    teacher is confident enough about (with --pseudo-label), labelled by the teacher alone."""
    task = teacher.task
    teacher.check_unchanged(sorted(teacher_folds(teacher, fold)))
    test = pseudo_paths(cfg) if cfg.pseudo_label else []
    train_out, test_out = teacher.outputs(fold, table, rows, test)
    width = objective.label_targets(torch.from_numpy(targets[:1])).shape[1]
    label = np.zeros((len(table.ids), width), np.float32)
    teach = np.zeros((len(table.ids), width), np.float32)
    label[rows] = objective.label_targets(torch.from_numpy(targets[rows])).numpy()
    teach[rows] = task.teacher_targets(train_out)
    packed = pack(label, teach, np.ones(len(table.ids)))
    extra: list[Path] = []
    if test_out is not None:
        keep = np.flatnonzero(task.confidence(test_out) >= cfg.pseudo_threshold)
        soft = task.teacher_targets(test_out[keep])
        packed = np.concatenate([packed, pack(soft, soft, np.full(len(keep), cfg.pseudo_weight))])
        extra = [test[i] for i in keep]
        log.info(f"fold {fold}: {len(keep)} of {len(test)} test images pseudo-labelled by the teacher "
                 f"(confidence >= {cfg.pseudo_threshold:g}, weight {cfg.pseudo_weight:g})")
    return Teaching(packed, extra)


def default_folds_file(teacher_dirs: Optional[Sequence[str]]) -> Optional[str]:
    """The first teacher's folds file: where a student trains unless told otherwise."""
    if not teacher_dirs:
        return None
    run = expand(teacher_dirs[:1])[0]
    return run.config().folds_csv if run.config_file.is_file() else None
