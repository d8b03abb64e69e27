"""Blending runs on their OOF predictions (torch-free): which TTA views each run keeps, the members' weights,
and an honest CV of the blend.

All three work on OOF predictions, where every row was predicted by the one fold model that did not train on
it. Choosing views or weights on those rows and scoring on the same rows overstates the result; the honest CV
refits the weights inside a cross-validation over the folds (fit on the other folds' rows, score the held-out
fold's rows) and reports that.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from kit.core.task import Task

# view name -> what it does to an NCHW batch (kit.export.ensemble applies them); identity first
VIEWS = ("identity", "hflip", "vflip", "transpose", "rot90", "rot180", "rot270")
MIN_WEIGHT = 1e-3            # a member below this share is left out of the graph


def _objective(task: Task, metric: str):
    """(function to minimize over blended predictions, its name): the metric itself where it is smooth (log loss,
    a regression metric), else log loss as its smooth stand-in (accuracy, F1 and AUC are flat almost everywhere)."""
    name = task.smooth_metric(metric)
    sign = -1 if task.higher_is_better(name) else 1
    return (lambda y, p: sign * task.score(name, y, np.clip(p, 1e-7, 1) if name == "log_loss" else p)), name


def choose_views(task: Task, metric: str, y: np.ndarray, by_view: dict[str, np.ndarray]) -> list[str]:
    """Greedy forward selection: start from the identity view, add the view whose averaged-in predictions
    improve the OOF `metric` most, and stop when no view improves it."""
    chosen = ["identity"]
    best = task.score(metric, y, by_view["identity"])
    while True:
        trials = {v: task.score(metric, y, np.mean([by_view[c] for c in chosen + [v]], 0))
                  for v in by_view if v not in chosen}
        better = {v: s for v, s in trials.items() if task.is_better(metric, s, best)}
        if not better:
            return chosen
        view = max(better, key=better.get) if task.higher_is_better(metric) else min(better, key=better.get)
        chosen.append(view)
        best = better[view]


def fit_weights(task: Task, metric: str, y: np.ndarray, predictions: Sequence[np.ndarray]) -> np.ndarray:
    """Non-negative weights summing to 1 that minimize the blend's OOF objective (SLSQP from equal weights)."""
    from scipy.optimize import minimize
    n = len(predictions)
    if n == 1:
        return np.ones(1)
    stack = np.stack(predictions)
    loss, _ = _objective(task, metric)
    result = minimize(lambda w: loss(y, np.tensordot(w, stack, 1)), np.full(n, 1 / n), method="SLSQP",
                      bounds=[(0, 1)] * n, constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1}],
                      options={"ftol": 1e-10, "maxiter": 200})
    weights = np.clip(result.x, 0, None)
    weights[weights < MIN_WEIGHT] = 0
    if weights.sum() == 0:
        return np.full(n, 1 / n)
    return weights / weights.sum()


def honest_cv(task: Task, metric: str, y: np.ndarray, folds: np.ndarray,
              predictions: Sequence[np.ndarray]) -> tuple[float, dict[int, float], np.ndarray]:
    """(CV of the blend with weights fitted without each scored fold, score per fold, the blended OOF)."""
    stack = np.stack(predictions)
    blended = np.empty_like(stack[0])
    per_fold = {}
    for k in np.unique(folds):
        held = folds == k
        weights = fit_weights(task, metric, y[~held], [p[~held] for p in predictions])
        blended[held] = np.tensordot(weights, stack[:, held], 1)
        per_fold[int(k)] = task.score(metric, y[held], blended[held])
    return task.score(metric, y, blended), per_fold, blended


def correlations(y: np.ndarray, predictions: Sequence[np.ndarray]) -> np.ndarray:
    """Pearson correlation between members of the probability each gives the true class (multiclass) or of
    their flattened predictions: how much a member can add to the others."""
    y = np.asarray(y)
    if y.ndim == 1 and predictions[0].ndim == 2 and np.issubdtype(y.dtype, np.integer):
        series = [p[np.arange(len(y)), y] for p in predictions]
    else:
        series = [p.ravel() for p in predictions]
    return np.corrcoef(np.stack(series)) if len(series) > 1 else np.ones((1, 1))
