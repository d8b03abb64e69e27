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
