"""Competition metrics (scikit-learn), per task, each with its direction.

A metric takes (targets, predictions): for multiclass, class indices [N] and probabilities [N, C]. A score
that cannot be computed (one class only, NaN predictions) is NaN, never an exception: kit.task.Task.is_better
never keeps a NaN epoch as best.
"""
from __future__ import annotations

import warnings
from typing import Callable, NamedTuple

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, log_loss, roc_auc_score


class Metric(NamedTuple):
    fn: Callable[[np.ndarray, np.ndarray], float]
    higher_is_better: bool


def _guarded(fn):
    """NaN where the metric is undefined: non-finite predictions, or a score sklearn cannot compute."""
    def score(y, p):
        if not np.isfinite(p).all():
            return float("nan")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                return float(fn(y, p))
            except ValueError:
                return float("nan")
    return score


def _roc_auc(y, prob):
    if prob.shape[1] == 2:
        return roc_auc_score(y, prob[:, 1])
    return roc_auc_score(y, prob, multi_class="ovr", labels=np.arange(prob.shape[1]))


MULTICLASS = {
    "accuracy": Metric(_guarded(lambda y, p: accuracy_score(y, p.argmax(1))), True),
    "macro_f1": Metric(_guarded(lambda y, p: f1_score(y, p.argmax(1), average="macro", labels=np.arange(p.shape[1]),
                                                      zero_division=0)), True),
    "log_loss": Metric(_guarded(lambda y, p: log_loss(y, p, labels=np.arange(p.shape[1]))), False),
    "roc_auc": Metric(_guarded(_roc_auc), True),
}

METRICS = {"multiclass": MULTICLASS}
METRIC_NAMES = sorted({name for table in METRICS.values() for name in table})
