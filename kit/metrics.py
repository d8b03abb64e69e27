"""Competition metrics over class probabilities (scikit-learn), each with its direction."""
from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, log_loss, roc_auc_score


class Metric(NamedTuple):
    fn: Callable[[np.ndarray, np.ndarray], float]   # (true class indices [N], probabilities [N, C]) -> score
    higher_is_better: bool


def _roc_auc(y: np.ndarray, prob: np.ndarray) -> float:
    if prob.shape[1] == 2:
        return float(roc_auc_score(y, prob[:, 1]))
    return float(roc_auc_score(y, prob, multi_class="ovr", labels=np.arange(prob.shape[1])))


METRICS = {
    "accuracy": Metric(lambda y, p: float(accuracy_score(y, p.argmax(1))), True),
    "macro_f1": Metric(lambda y, p: float(f1_score(y, p.argmax(1), average="macro",
                                                   labels=np.arange(p.shape[1]), zero_division=0)), True),
    "log_loss": Metric(lambda y, p: float(log_loss(y, p, labels=np.arange(p.shape[1]))), False),
    "roc_auc": Metric(_roc_auc, True),
}


def score(name: str, y: np.ndarray, prob: np.ndarray) -> float:
    return METRICS[name].fn(np.asarray(y), np.asarray(prob, dtype=np.float64))


def is_better(name: str, new: float, best: float | None) -> bool:
    if best is None:
        return True
    return new > best if METRICS[name].higher_is_better else new < best
