"""Competition metrics (scikit-learn), per task, each with its direction.

A metric takes (targets, predictions) as kit.core.task encodes them: multiclass class indices [N] and probabilities
[N, C]; multilabel 0/1 [N, T] and probabilities [N, T] (F1 at per-tag thresholds fitted on the scored rows, the
"OOF-fitted thresholds"); regression values [N, 1] and predictions [N, 1]. A score
that cannot be computed (one class only, NaN predictions) is NaN, never an exception: kit.core.task.Task.is_better
never keeps a NaN epoch as best.
"""
from __future__ import annotations

import warnings
from typing import Callable, NamedTuple

import numpy as np


def _sklearn(name: str) -> Callable:
    """scikit-learn's metric `name`, imported when first called: importing sklearn takes ~1.8 s on a 2-core machine,
    which was half of infer.py's second call on an unchanged run (it validates the run's config, which names a
    metric, and scores nothing; bench/RESULTS.md "infer.py's second call")."""
    def call(*args, **kwargs):
        from sklearn import metrics
        return getattr(metrics, name)(*args, **kwargs)
    return call


(accuracy_score, average_precision_score, balanced_accuracy_score, f1_score, log_loss, r2_score,
 roc_auc_score) = map(_sklearn, ("accuracy_score", "average_precision_score", "balanced_accuracy_score", "f1_score",
                                 "log_loss", "r2_score", "roc_auc_score"))


class Metric(NamedTuple):
    fn: Callable[[np.ndarray, np.ndarray], float]
    higher_is_better: bool
    smooth: bool = False            # smooth in the predictions: blend weights can minimize it directly


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
    """Binary: the positive column's AUC. More classes: the mean of each class's one-vs-rest AUC (scikit-learn's
    "ovr" macro average), computed per column so that scores not summing to 1 (a rank blend's) are scored too."""
    if prob.shape[1] == 2:
        return roc_auc_score(y, prob[:, 1])
    return float(np.mean([roc_auc_score(y == c, prob[:, c]) for c in range(prob.shape[1])]))


MULTICLASS = {
    "accuracy": Metric(_guarded(lambda y, p: accuracy_score(y, p.argmax(1))), True),
    "macro_f1": Metric(_guarded(lambda y, p: f1_score(y, p.argmax(1), average="macro", labels=np.arange(p.shape[1]),
                                                      zero_division=0)), True),
    "balanced_accuracy": Metric(_guarded(lambda y, p: balanced_accuracy_score(y, p.argmax(1))), True),
    "log_loss": Metric(_guarded(lambda y, p: log_loss(y, p, labels=np.arange(p.shape[1]))), False, True),
    "roc_auc": Metric(_guarded(_roc_auc), True),
}



# --- multilabel: targets 0/1 [N, T], probabilities [N, T] -----------------------------------------------------

def best_thresholds(y: np.ndarray, prob: np.ndarray) -> list[float]:
    """Per tag, the probability threshold that maximizes that tag's F1 on these rows (0.5 for a tag with no
    positive row); a threshold sits halfway between the two predictions it separates."""
    from sklearn.metrics import precision_recall_curve
    out = []
    for t in range(y.shape[1]):
        if y[:, t].sum() == 0 or y[:, t].sum() == len(y):
            out.append(0.5)
            continue
        precision, recall, cuts = precision_recall_curve(y[:, t], prob[:, t])
        f1 = 2 * precision[:-1] * recall[:-1] / np.maximum(precision[:-1] + recall[:-1], 1e-12)
        best = int(np.argmax(f1))
        below = prob[:, t][prob[:, t] < cuts[best]]
        out.append(float((cuts[best] + below.max()) / 2) if len(below) else float(cuts[best]))
    return out


def thresholded(y: np.ndarray, prob: np.ndarray, thresholds=None) -> np.ndarray:
    return prob >= np.asarray(best_thresholds(y, prob) if thresholds is None else thresholds)


def _per_label(score, y, prob):
    """Mean of `score` over tags that have both a positive and a negative row."""
    values = [score(y[:, t], prob[:, t]) for t in range(y.shape[1]) if 0 < y[:, t].sum() < len(y)]
    return float(np.mean(values)) if values else float("nan")


MULTILABEL = {
    "f1_micro": Metric(_guarded(lambda y, p: f1_score(y, thresholded(y, p), average="micro", zero_division=0)), True),
    "f1_macro": Metric(_guarded(lambda y, p: f1_score(y, thresholded(y, p), average="macro", zero_division=0)), True),
    "roc_auc": Metric(_guarded(lambda y, p: _per_label(roc_auc_score, y, p)), True),
    "map": Metric(_guarded(lambda y, p: _per_label(average_precision_score, y, p)), True),
    "log_loss": Metric(_guarded(lambda y, p: float(np.mean(-(y * np.log(np.clip(p, 1e-7, 1)) +
                                                            (1 - y) * np.log(np.clip(1 - p, 1e-7, 1)))))), False,
                       True),
}

# --- regression: targets [N, 1], predictions [N, 1] in the target's scale ------------------------------------

REGRESSION = {
    "rmse": Metric(_guarded(lambda y, p: float(np.sqrt(np.mean((y - p) ** 2)))), False, True),
    "mae": Metric(_guarded(lambda y, p: float(np.mean(np.abs(y - p)))), False, True),
    "r2": Metric(_guarded(lambda y, p: r2_score(y, p)), True, True),
}

METRIC_NAMES = sorted({name for table in (MULTICLASS, MULTILABEL, REGRESSION) for name in table})
