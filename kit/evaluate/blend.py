"""Blending runs on their OOF predictions (torch-free): which TTA views each run keeps, how the runs' outputs are
combined, and an honest CV of the result.

Methods (`infer.py --blend`):
  weights   non-negative weights summing to 1 that minimize the blend's OOF loss (scipy SLSQP; the metric itself
            where it is smooth, else log loss as its smooth stand-in)
  hill      Caruana et al. 2004 ensemble selection: start from the best run, add (with replacement) the run that
            improves the metric itself most, HILL_STEPS times; the best ensemble seen gives the weights
  rank      rank averaging, for rank metrics (ROC-AUC, mAP): each run's outputs mapped through their OOF
            distribution (an empirical CDF per output, RANK_QUANTILES points), then averaged
  stack     a scikit-learn logistic regression (ridge for a regression target) on the runs' outputs, through the
            task's link (log-probabilities, logits, the value in the model's scale)
  auto      the best honest CV among every run alone and the methods above (a blend that cannot beat the best run
            alone is not chosen; a tie keeps the run alone)

All of them work on OOF predictions, where every row was predicted by the one fold model that did not train on it.
Choosing views or fitting a method on those rows and scoring on the same rows overstates the result, so the honest
CV is nested: for each fold, the views are chosen and the method is fitted on the other folds' rows, and that
fold's rows are scored; blend.md shows every method's honest CV side by side.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from kit.core.task import Task

# view name -> what it does to an NCHW batch (kit.export.ensemble applies them); identity first
VIEWS = ("identity", "hflip", "vflip", "transpose", "rot90", "rot180", "rot270")
METHODS = ("weights", "hill", "rank", "stack")
ALONE = "alone:"             # `alone:<i>`: run i by itself, a candidate of `auto`
RANK_METRICS = frozenset({"roc_auc", "map"})        # metrics that see only the order of each output's values
MIN_WEIGHT = 1e-3            # a run below this share is left out of the graph
HILL_STEPS = 200
RANK_QUANTILES = 256


@dataclass
class Blend:
    """A fitted blending method over R runs' outputs [R, N, C]."""
    method: str
    weights: np.ndarray                       # [R]: weights, hill, rank (equal); stack: 1/R, for information
    quantiles: Optional[np.ndarray] = None    # rank: [R, C, RANK_QUANTILES] points of each run's OOF outputs
    coef: Optional[np.ndarray] = None         # stack: [C, R, C] on the link of the runs' outputs
    bias: Optional[np.ndarray] = None         # stack: [C]

    def apply(self, task: Task, outputs: Sequence[np.ndarray]) -> np.ndarray:
        stack = np.stack(outputs)
        if self.method == "rank":
            ranks = (stack[..., None] >= self.quantiles[:, None]).mean(-1)
            return np.tensordot(self.weights, ranks, 1)
        if self.method == "stack":
            z = np.einsum("rnc,orc->no", np.stack([task.link(o) for o in outputs]), self.coef) + self.bias
            return task.unlink(z)
        return np.tensordot(self.weights, stack, 1)


def methods_for(metric: str, runs: int) -> list[str]:
    """The methods that apply: one run is its own blend; rank averaging only for rank metrics."""
    if runs == 1:
        return ["weights"]
    return [m for m in METHODS if m != "rank" or metric in RANK_METRICS]


def candidates(metric: str, runs: int) -> list[str]:
    """What `auto` chooses among: each run alone first (so a tie keeps the simpler answer), then the methods."""
    return ([f"{ALONE}{i}" for i in range(runs)] if runs > 1 else []) + methods_for(metric, runs)


def alone(method: str) -> int | None:
    """The run index of an `alone:<i>` candidate, else None."""
    return int(method[len(ALONE):]) if method.startswith(ALONE) else None


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


def fit_hill(task: Task, metric: str, y: np.ndarray, predictions: Sequence[np.ndarray],
             steps: int = HILL_STEPS) -> np.ndarray:
    """Caruana's ensemble selection with replacement, on the metric itself in its own direction; the weights of the
    best ensemble met (ties keep the smaller, earlier one)."""
    stack = np.stack(predictions)
    scores = [task.score(metric, y, p) for p in stack]
    first = int(np.nanargmax(scores) if task.higher_is_better(metric) else np.nanargmin(scores))
    counts = np.zeros(len(stack))
    counts[first] = 1
    total, best_score, best_counts = stack[first].copy(), scores[first], counts.copy()
    for _ in range(steps):
        trials = [task.score(metric, y, (total + p) / (counts.sum() + 1)) for p in stack]
        pick = int(np.nanargmax(trials) if task.higher_is_better(metric) else np.nanargmin(trials))
        counts[pick] += 1
        total += stack[pick]
        if task.is_better(metric, trials[pick], best_score):
            best_score, best_counts = trials[pick], counts.copy()
    return best_counts / best_counts.sum()


def fit(method: str, task: Task, metric: str, y: np.ndarray, outputs: Sequence[np.ndarray]) -> Blend:
    """`method` fitted on these OOF rows."""
    n = len(outputs)
    if alone(method) is not None:
        return Blend(method, np.eye(n)[alone(method)])
    if method == "weights":
        return Blend(method, fit_weights(task, metric, y, outputs))
    if method == "hill":
        return Blend(method, fit_hill(task, metric, y, outputs))
    if method == "rank":
        points = np.linspace(0, 1, RANK_QUANTILES)
        quantiles = np.stack([np.quantile(o, points, axis=0).T for o in outputs])
        return Blend(method, np.full(n, 1 / n), quantiles=quantiles.astype(np.float32))
    if method == "stack":
        coef, bias = task.fit_stacker(np.stack([task.link(o) for o in outputs], 1), y)
        return Blend(method, np.full(n, 1 / n), coef=coef.astype(np.float32), bias=bias.astype(np.float32))
    raise ValueError(method)


@dataclass
class Honest:
    """One method's nested cross-validation: its CV, per fold, and the blended OOF predictions it scored."""
    cv: float
    per_fold: dict[int, float]
    blended: np.ndarray


def nested_cv(task: Task, metric: str, y: np.ndarray, folds: np.ndarray, by_view: Sequence[dict[str, np.ndarray]],
              methods: Sequence[str], choose: bool) -> dict[str, Honest]:
    """Every method's honest CV: for each fold, each run's views are chosen (when `choose`; else all views given
    are averaged) and the method is fitted on the other folds' rows, then the fold's rows are scored."""
    blended = {m: np.zeros_like(next(iter(by_view[0].values()))) for m in methods}
    per_fold = {m: {} for m in methods}
    for k in np.unique(folds):
        fit_rows, held = folds != k, folds == k
        outputs = []
        for views in by_view:
            chosen = choose_views(task, metric, y[fit_rows], {v: o[fit_rows] for v, o in views.items()}) \
                if choose else list(views)
            outputs.append(np.mean([views[v] for v in chosen], 0))
        for m in methods:
            blend = fit(m, task, metric, y[fit_rows], [o[fit_rows] for o in outputs])
            blended[m][held] = blend.apply(task, [o[held] for o in outputs])
            per_fold[m][int(k)] = task.score(metric, y[held], blended[m][held])
    return {m: Honest(task.score(metric, y, blended[m]), per_fold[m], blended[m]) for m in methods}


def best_method(task: Task, metric: str, honest: dict[str, Honest]) -> str:
    """The method with the best honest CV (the first listed on a tie)."""
    best = None
    for m, h in honest.items():
        if best is None or task.is_better(metric, h.cv, honest[best].cv):
            best = m
    return best


def correlations(y: np.ndarray, predictions: Sequence[np.ndarray]) -> np.ndarray:
    """Pearson correlation between members of the probability each gives the true class (multiclass) or of
    their flattened predictions: how much a member can add to the others."""
    y = np.asarray(y)
    if y.ndim == 1 and predictions[0].ndim == 2 and np.issubdtype(y.dtype, np.integer):
        series = [p[np.arange(len(y)), y] for p in predictions]
    else:
        series = [p.ravel() for p in predictions]
    return np.corrcoef(np.stack(series)) if len(series) > 1 else np.ones((1, 1))
