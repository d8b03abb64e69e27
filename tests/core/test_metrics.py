import numpy as np
import pytest

from kit.core.task import Multiclass

TASK = Multiclass(["a", "b", "c"])


def test_metrics_and_directions():
    y = np.array([0, 1, 2, 2])
    p = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.1, 0.2, 0.7], [0.5, 0.4, 0.1]])
    assert TASK.score("accuracy", y, p) == 0.75
    assert TASK.score("macro_f1", y, p) == pytest.approx(np.mean([2 / 3, 1.0, 2 / 3]))
    assert TASK.score("log_loss", y, p) == pytest.approx(-np.mean(np.log([0.8, 0.7, 0.7, 0.1])))
    assert 0.5 < TASK.score("roc_auc", y, p) <= 1.0
    assert TASK.is_better("accuracy", 0.9, 0.8) and not TASK.is_better("accuracy", 0.8, 0.9)
    assert TASK.is_better("log_loss", 0.2, 0.3) and not TASK.is_better("log_loss", 0.3, 0.2)
    assert TASK.is_better("log_loss", 5.0, None)


def test_binary_roc_auc_uses_positive_column():
    y = np.array([0, 0, 1, 1])
    p = np.array([[0.9, 0.1], [0.6, 0.4], [0.65, 0.35], [0.2, 0.8]])
    assert Multiclass(["n", "y"]).score("roc_auc", y, p) == 0.75


def test_a_guarded_metric_is_nan_where_undefined_and_silent():
    """NaN for non-finite predictions and for what sklearn refuses (ValueError); the score itself otherwise, from
    (targets, predictions) in that order; sklearn's warnings kept out of the training log."""
    import warnings
    from kit.core.metrics import _guarded

    def noisy(y, p):
        warnings.warn("undefined here", UserWarning)
        return y[0] - p[0]
    score = _guarded(noisy)
    assert score(np.array([3.0]), np.array([1.0])) == 2.0
    assert np.isnan(score(np.array([3.0]), np.array([np.nan]))) and np.isnan(score(np.array([3.0]), np.array([np.inf])))
    with warnings.catch_warnings():
        warnings.simplefilter("error")                    # a warning let through would fail here
        assert score(np.array([3.0]), np.array([1.0])) == 2.0

    def refuses(y, p):
        raise ValueError("only one class present")
    assert np.isnan(_guarded(refuses)(np.array([1]), np.array([0.5])))


def test_sklearn_metrics_are_called_by_name_with_every_argument():
    from kit.core.metrics import _sklearn
    assert _sklearn("accuracy_score")([0, 1, 1, 1], [0, 0, 1, 1]) == 0.75
    assert _sklearn("accuracy_score")([0, 1, 1, 1], [0, 0, 1, 1], normalize=False) == 3
    assert _sklearn("f1_score")(y_true=[0, 1, 1], y_pred=[0, 1, 0]) == pytest.approx(2 / 3)


def _reference_thresholds(y, prob):
    """Brute force: per tag, the lowest prediction c whose rule `prob >= c` has the best F1, moved down halfway to
    the next lower prediction; 0.5 for a tag without both a positive and a negative row."""
    from sklearn.metrics import f1_score
    out = []
    for t in range(y.shape[1]):
        if y[:, t].min() == y[:, t].max():
            out.append(0.5)
            continue
        cuts = np.unique(prob[:, t])
        f1 = [f1_score(y[:, t], prob[:, t] >= c, zero_division=0) for c in cuts]
        best = int(np.argmax(f1))
        out.append(float((cuts[best] + cuts[best - 1]) / 2) if best else float(cuts[best]))
    return out


def test_multilabel_thresholds_maximize_each_tags_f1_halfway_between_predictions():
    """Against a brute-force search on random tags (a constant tag first, so the tags after it are still fitted; a
    tag of noise, where precision + recall < 1 at the best rule), and a tag whose best rule takes every row (its
    threshold is the lowest prediction itself)."""
    from kit.core.metrics import best_thresholds
    rng = np.random.default_rng(0)
    y = (rng.random((60, 7)) < [0.0, 1.0, 0.3, 0.5, 0.2, 0.7, 0.1]).astype(int)
    boost = np.array([0.25] * 6 + [0.0])                  # the last tag: noise, its best F1 under 0.5
    prob = np.clip(y * boost + rng.random((60, 7)) * 0.75, 0, 1)
    got = best_thresholds(y, prob)
    assert got[:2] == [0.5, 0.5]
    np.testing.assert_allclose(got, _reference_thresholds(y, prob), rtol=0, atol=1e-12)
    every = best_thresholds(np.array([[1], [1], [0], [1]]), np.array([[0.2], [0.9], [0.8], [0.7]]))
    assert every == [0.2]                                 # F1 0.857 taking every row, the best here
    weak = np.array([0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1])[:, None]      # the best rule: top 4, precision + recall 0.75
    ranked = np.array([0.9, 0.8, 0.7, 0.6, 0.55, 0.5, 0.45, 0.4, 0.3, 0.2, 0.1, 0.05])[:, None]
    assert best_thresholds(weak, ranked) == [pytest.approx(0.575)]    # F1 1/3 there, 0.286 taking every row


def test_thresholded_keeps_a_prediction_equal_to_its_threshold_and_uses_given_thresholds():
    from kit.core.metrics import thresholded
    y = np.array([[1, 0], [0, 1], [1, 1]])
    prob = np.array([[0.4, 0.2], [0.1, 0.6], [0.7, 0.9]])
    np.testing.assert_array_equal(thresholded(y, prob, [0.4, 0.95]), [[True, False], [False, False], [True, False]])
    np.testing.assert_array_equal(thresholded(y, prob), [[True, False], [False, True], [True, True]])
