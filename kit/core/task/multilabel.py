"""Any number of tags per image (space-separated in the label column, or one 0/1 column per tag): one sigmoid
output per tag. A tag is predicted when its probability reaches its threshold (fitted on OOF to maximize that
tag's F1; 0.5 before fitting), `min_labels` tags at least (the most probable)."""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from kit.core.errors import KitError
from kit.core.task.base import Task, label_order, tags_of


class Multilabel(Task):
    kind = "multilabel"
    default_metric = "f1_micro"
    empty_label_is_a_prediction = True
    reads_tag_columns = True
    plots = ("roc",)

    def __init__(self, names: Sequence[str], thresholds: Optional[Sequence[float]] = None, min_labels: int = 0):
        super().__init__(names)
        self.thresholds = [float(t) for t in thresholds] if thresholds is not None else [0.5] * len(self.names)
        self.min_labels = int(min_labels)

    @classmethod
    def from_labels(cls, labels: Sequence[str], min_labels: int = 0, **_) -> "Multilabel":
        tags = label_order({t for cell in labels for t in tags_of(cell)})
        if len(tags) < 2:
            raise KitError(f"the training labels hold {len(tags)} tag(s) {tags}; a multi-label task needs at least "
                           f"two (with one, it is a binary multiclass task: pass --task multiclass)")
        return cls(tags, min_labels=min_labels)

    @classmethod
    def from_dict(cls, saved):
        task = cls([str(n) for n in saved["names"]], saved.get("thresholds"), saved.get("min_labels", 0))
        if len(task.thresholds) != len(task.names) or task.min_labels < 0:
            raise ValueError(f"{len(task.thresholds)} thresholds for {len(task.names)} tags, min_labels "
                             f"{task.min_labels}")
        return task

    def encode(self, labels):
        index = {t: i for i, t in enumerate(self.names)}
        out = np.zeros((len(labels), len(self.names)), dtype=np.float32)
        for r, cell in enumerate(labels):
            for t in tags_of(cell):
                out[r, index[t]] = 1.0
        return out

    def stratify_key(self, labels):
        return self.encode(labels).astype(np.int64)

    def check_labels(self, labels, what):
        unknown = sorted({t for cell in labels for t in tags_of(cell)} - set(self.names))
        if unknown:
            raise KitError(f"{what} has tag(s) {unknown[:5]} that the model does not know (its tags: "
                           f"{self.names[:10]})")

    def to_dict(self):
        return {**super().to_dict(), "thresholds": self.thresholds, "min_labels": self.min_labels}

    def activate(self, outputs):
        return outputs.float().sigmoid()

    def soft_targets(self, target, smoothing):
        return target.float() * (1.0 - smoothing) + 0.5 * smoothing

    def loss(self, logits, soft, class_weights=None, focal_gamma=None):
        """BCE per tag (torchvision's sigmoid focal loss when focal_gamma, without its alpha), weighted per tag."""
        import torch.nn.functional as F
        if focal_gamma:
            from torchvision.ops import sigmoid_focal_loss
            terms = sigmoid_focal_loss(logits, soft, alpha=-1, gamma=focal_gamma, reduction="none")
        else:
            terms = F.binary_cross_entropy_with_logits(logits, soft, reduction="none")
        if class_weights is not None:
            terms = terms * class_weights
        return terms.mean(-1)

    def class_weights(self, targets):
        """Per tag, the inverse frequency of its positive images (mean 1 over the tags' positives)."""
        positives = np.asarray(targets).sum(0).astype(np.float64)
        return (positives.sum() / (len(self.names) * np.maximum(positives, 1))).astype(np.float32)

    def sampling_classes(self, targets):
        """Each image's rarest tag (images with no tag form one more class)."""
        targets = np.asarray(targets) > 0
        counts = targets.sum(0)
        rarity = np.where(targets, counts[None, :], np.inf)
        return np.where(targets.any(1), rarity.argmin(1), len(self.names))

    def distill_loss(self, logits, teacher, temperature):
        """Per tag, BCE of the student's softened sigmoid against the teacher's (its logit / T), times T²."""
        import torch.nn.functional as F
        p = teacher.clamp(1e-6, 1 - 1e-6)
        soft = ((p.log() - (1 - p).log()) / temperature).sigmoid()
        return F.binary_cross_entropy_with_logits(logits.float() / temperature, soft,
                                                  reduction="none").mean(-1) * temperature ** 2

    def confidence(self, outputs):
        """The least certain tag's certainty: min over tags of max(p, 1 - p)."""
        outputs = np.asarray(outputs)
        return np.maximum(outputs, 1 - outputs).min(1)

    def metrics(self):
        from kit.core.metrics import MULTILABEL
        return MULTILABEL

    def link(self, outputs):
        p = np.clip(outputs, 1e-6, 1 - 1e-6)
        return np.log(p) - np.log1p(-p)

    def link_torch(self, outputs):
        p = outputs.clamp(1e-6, 1 - 1e-6)
        return p.log() - (1 - p).log()

    def unlink(self, z):
        return 1 / (1 + np.exp(-z))

    def fit_stacker(self, features, targets):
        """Per tag, a logistic regression on the runs' logits of that tag (a tag all-0 or all-1 on the fitting rows:
        the runs' mean logit)."""
        from sklearn.linear_model import LogisticRegression
        n, runs, tags = features.shape
        coef, bias = np.zeros((tags, runs, tags)), np.zeros(tags)
        for t in range(tags):
            if 0 < targets[:, t].sum() < n:
                model = LogisticRegression(C=1.0, max_iter=2000).fit(features[:, :, t], targets[:, t])
                coef[t, :, t], bias[t] = model.coef_[0], model.intercept_[0]
            else:
                coef[t, :, t] = 1 / runs
        return coef, bias

    def fit(self, targets, outputs):
        from kit.core.metrics import best_thresholds
        return Multilabel(self.names, best_thresholds(np.asarray(targets), np.asarray(outputs)), self.min_labels)

    def check_outputs(self, outputs, quantized=False):
        outputs = np.asarray(outputs, dtype=np.float64)
        if outputs.min() < -1e-6 or outputs.max() > 1 + 1e-6:
            return "its outputs are not probabilities in [0, 1] (no sigmoid)"
        if not quantized and np.allclose(outputs.sum(1), 1, atol=1e-5):
            return "its outputs sum to 1 for every image: a softmax (multiclass) graph, not one sigmoid per tag"
        return None

    def label_cells(self, outputs):
        outputs = np.asarray(outputs)
        chosen = outputs >= np.asarray(self.thresholds)
        short = chosen.sum(1) < self.min_labels            # rows with too few tags get their most probable ones
        if short.any():
            top = np.argsort(-outputs[short], axis=1, kind="stable")[:, :self.min_labels]
            fill = chosen[short]
            np.put_along_axis(fill, top, True, axis=1)
            chosen[short] = fill
        return [" ".join(t for t, on in zip(self.names, row) if on) for row in chosen]

    def answer_spec(self):
        return {"label": "thresholds", "scores": "probabilities", "thresholds": self.thresholds,
                "min_labels": self.min_labels}

    def worst(self, y, outputs, labels):
        """Wrong tag sets, highest log loss first."""
        loss = -(y * np.log(np.clip(outputs, 1e-7, 1)) + (1 - y) * np.log(np.clip(1 - outputs, 1e-7, 1))).sum(1)
        fitted = self.fit(y, outputs)
        chosen = np.array([[t in cell.split() for t in self.names] for cell in fitted.label_cells(outputs)])
        order = np.argsort(-loss, kind="stable")
        order = order[np.any(chosen[order] != (y[order] > 0), axis=1)]
        captions = [f"true [{t}] | pred [{p}]" for t, p in zip(labels, fitted.label_cells(outputs))]
        return order, captions, "OOF images with the highest log loss"

    def report_rows(self, y, outputs):
        """Per tag: the OOF-fitted threshold, precision, recall, F1 at it, ROC-AUC, support."""
        from sklearn.metrics import precision_recall_fscore_support, roc_auc_score
        thresholds = self.fit(y, outputs).thresholds
        precision, recall, f1, support = precision_recall_fscore_support(y, outputs >= np.asarray(thresholds),
                                                                         zero_division=0)
        rows = []
        for t, name in enumerate(self.names):
            auc = roc_auc_score(y[:, t], outputs[:, t]) if 0 < y[:, t].sum() < len(y) else float("nan")
            rows.append([name, f"{thresholds[t]:.4f}", f"{precision[t]:.4f}", f"{recall[t]:.4f}", f"{f1[t]:.4f}",
                         f"{auc:.4f}", int(support[t])])
        return ["tag", "threshold", "precision", "recall", "f1", "roc_auc", "support"], rows

    def report_section(self, y, outputs, folds):
        """F1 three ways: at 0.5, with thresholds fitted on all OOF (in-sample), and fitted without each scored
        fold (honest)."""
        from sklearn.metrics import f1_score
        pred = outputs >= np.asarray(self.fit(y, outputs).thresholds)
        at_half = f1_score(y, outputs >= 0.5, average="micro", zero_division=0)
        in_sample = f1_score(y, pred, average="micro", zero_division=0)
        honest = f1_score(y, nested_thresholds(y, outputs, folds), average="micro", zero_division=0)
        return (f"## Multi-label metrics (OOF)\n\n| F1 micro at 0.5 | F1 micro, thresholds fitted on all OOF "
                f"(in-sample) | F1 micro, thresholds fitted without each scored fold (honest) | F1 macro (fitted) | "
                f"ROC-AUC | mAP |\n|---:|---:|---:|---:|---:|---:|\n| {at_half:.4f} | {in_sample:.4f} | {honest:.4f} | "
                f"{f1_score(y, pred, average='macro', zero_division=0):.4f} | {self.score('roc_auc', y, outputs):.4f} | "
                f"{self.score('map', y, outputs):.4f} |\n\nPer tag: report.csv (thresholds, precision, recall), "
                f"roc.png.\n\n")


def nested_thresholds(y: np.ndarray, probs: np.ndarray, folds: np.ndarray) -> np.ndarray:
    """0/1 predictions where each fold's rows are cut at thresholds fitted on the other folds' rows only."""
    from kit.core.metrics import best_thresholds
    out = np.zeros_like(y, dtype=bool)
    for k in np.unique(folds):
        held = folds == k
        out[held] = probs[held] >= np.asarray(best_thresholds(y[~held], probs[~held]))
    return out
