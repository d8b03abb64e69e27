"""One number per image. The model learns a scaled target (`scale`), and its output is mapped back:
standard (MSE, Huber losses): value = shift + factor * output; unit (BCE on the target scaled to [0, 1], the trick
of top PetFinder Pawpularity teams): value = shift + factor * sigmoid(output)."""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np

from kit.core.errors import KitError
from kit.core.task.base import Task

LOSSES = ("mse", "huber", "bce")


class Regression(Task):
    kind = "regression"
    default_metric = "rmse"
    plots = ("scatter",)

    def __init__(self, names: Sequence[str], scale: Optional[dict] = None, loss: Optional[str] = None):
        super().__init__(names)
        self.scale = dict(scale or {"kind": "standard", "shift": 0.0, "factor": 1.0})
        self.loss_name = loss or ("bce" if self.scale["kind"] == "unit" else "mse")
        if self.loss_name not in LOSSES or (self.loss_name == "bce") != (self.scale["kind"] == "unit"):
            raise KitError(f"regression loss {self.loss_name!r} does not fit the target scaling {self.scale['kind']!r}")

    @classmethod
    def from_labels(cls, labels: Sequence[str], name: str = "target", loss: str = "mse", **_) -> "Regression":
        values = parse_numbers(labels)
        with np.errstate(over="ignore", invalid="ignore"):        # an overflow is refused just below, in words
            if loss == "bce":
                lo, hi = float(values.min()), float(values.max())
                scale = {"kind": "unit", "shift": lo, "factor": (hi - lo) or 1.0}
            else:
                scale = {"kind": "standard", "shift": float(values.mean()), "factor": float(values.std()) or 1.0}
        if not all(math.isfinite(v) and abs(v) < 3e38 for v in scale.values() if isinstance(v, float)):
            raise KitError(f"the regression target's spread ({values.min():.4g} .. {values.max():.4g}) overflows "
                           f"32-bit floats, which the model computes in; rescale the target (e.g. divide it or "
                           f"take its logarithm) in train.csv")
        return cls([name], scale, loss)

    @classmethod
    def from_dict(cls, saved):
        scale = saved.get("scale")
        if scale is not None and (scale.get("kind") not in ("standard", "unit") or
                                  not all(isinstance(scale.get(k), (int, float)) for k in ("shift", "factor"))):
            raise ValueError(f"the target scaling {scale!r} is not {{kind: standard|unit, shift, factor}}")
        return cls([str(n) for n in saved["names"]], scale, saved.get("loss"))

    def encode(self, labels):
        return parse_numbers(labels).astype(np.float32).reshape(-1, 1)

    def stratify_key(self, labels):
        """Quantile bins of the target (at most 10, at least 2 rows per fold in each)."""
        values = parse_numbers(labels)
        bins = int(min(10, max(2, len(values) // 50)))
        edges = np.unique(np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1]))
        return [f"bin{b}" for b in np.searchsorted(edges, values, side="right")]

    def check_labels(self, labels, what):
        parse_numbers(labels, what)

    def to_dict(self):
        return {**super().to_dict(), "scale": self.scale, "loss": self.loss_name}

    def activate(self, outputs):
        shift, factor = self.scale["shift"], self.scale["factor"]
        out = outputs.float().sigmoid() if self.scale["kind"] == "unit" else outputs.float()
        return out * factor + shift

    def soft_targets(self, target, smoothing):
        """The target in the model's scale (label smoothing does not apply to a number)."""
        return (target.float() - self.scale["shift"]) / self.scale["factor"]

    def check_training(self, cfg):
        if cfg.loss != "ce" or cfg.class_weights != "none" or cfg.sampler != "none":
            raise KitError("--loss focal, --class-weights and --sampler balanced/sqrt need classes; a regression target "
                           "has none (use --regression-loss)")

    def loss(self, logits, soft, class_weights=None, focal_gamma=None):
        import torch.nn.functional as F
        fn = {"mse": F.mse_loss, "huber": F.huber_loss, "bce": F.binary_cross_entropy_with_logits}[self.loss_name]
        return fn(logits, soft, reduction="none").mean(-1)

    def distill_loss(self, logits, teacher, temperature):
        """The regression loss against the teacher's value (no temperature: a number has nothing to soften)."""
        return self.loss(logits.float(), teacher)

    def teacher_targets(self, outputs):
        """The teacher's values in the model's scale, as soft_targets scales a label."""
        return ((np.asarray(outputs, dtype=np.float64) - self.scale["shift"]) / self.scale["factor"]).astype(np.float32)

    def link(self, outputs):
        return (np.asarray(outputs, dtype=np.float64) - self.scale["shift"]) / self.scale["factor"]

    def link_torch(self, outputs):
        return (outputs - self.scale["shift"]) / self.scale["factor"]

    def unlink(self, z):
        return z * self.scale["factor"] + self.scale["shift"]

    def unlink_torch(self, z):
        return z * self.scale["factor"] + self.scale["shift"]

    def fit_stacker(self, features, targets):
        """Ridge regression of the target (in the model's scale) on the runs' predictions in that scale; the graph
        maps its output back with the standard scaling (a unit-scaled target's sigmoid would not be linear)."""
        from sklearn.linear_model import Ridge
        model = Ridge(alpha=1.0).fit(features[:, :, 0], self.link(targets)[:, 0])
        return model.coef_.reshape(1, -1, 1), np.array([model.intercept_])

    def metrics(self):
        from kit.core.metrics import REGRESSION
        return REGRESSION

    def smooth_metric(self, metric):
        return metric                                  # every regression metric is smooth in the predictions

    def output_columns(self):
        return [f"pred_{n}" for n in self.names]

    def label_cells(self, outputs):
        return [f"{v:.6g}" for v in np.asarray(outputs)[:, 0]]

    def same_decision(self, a, b):
        """Within 1 % of the target's spread (its standard deviation, or range for the unit scaling)."""
        return np.abs(np.asarray(a)[:, 0] - np.asarray(b)[:, 0]) <= 0.01 * self.scale["factor"]

    def answer_spec(self):
        return {"label": "value", "scores": "value"}

    def answer(self, row, top_k=None):
        return {"label": self.label_cells(np.asarray(row)[None])[0], "value": float(np.asarray(row)[0])}

    def worst(self, y, outputs, labels):
        true, pred = y[:, 0], outputs[:, 0]
        captions = [f"true {t:.4g} | pred {p:.4g}" for t, p in zip(true, pred)]
        return np.argsort(-np.abs(pred - true), kind="stable"), captions, "OOF images with the largest errors"

    def report_rows(self, y, outputs):
        """RMSE, MAE, R², and the RMSE of predicting the mean."""
        values = {m: self.score(m, y, outputs) for m in self.metrics()}
        rows = [[m, f"{v:.6g}"] for m, v in values.items()]
        return ["metric", "value"], rows + [["rmse_of_predicting_the_mean", f"{baseline_rmse(y):.6g}"]]

    def report_section(self, y, outputs, folds):
        values = {m: self.score(m, y, outputs) for m in self.metrics()}
        return ("## Regression metrics (OOF)\n\n| " + " | ".join(values) + " | RMSE of predicting the mean |\n|" +
                "---:|" * (len(values) + 1) + "\n| " + " | ".join(f"{v:.4f}" for v in values.values()) +
                f" | {baseline_rmse(y):.4f} |\n\n")


def baseline_rmse(y: np.ndarray) -> float:
    return float(np.sqrt(np.mean((y[:, 0] - y[:, 0].mean()) ** 2)))


def parse_numbers(labels: Sequence[str], what: str = "the label column") -> np.ndarray:
    values = np.empty(len(labels))
    for i, cell in enumerate(labels):
        try:
            values[i] = float(cell)
        except ValueError:
            raise KitError(f"{what}: {cell!r} (row {i + 1}) is not a number; a regression target must be numeric "
                           f"(or pass --task multiclass)") from None
        if not math.isfinite(values[i]):
            raise KitError(f"{what}: {cell!r} (row {i + 1}) is not a finite number")
    return values
