"""One label per image: class scores, softmax probabilities, the submission names the class."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from kit.core.errors import KitError
from kit.core.task.base import Task, label_order


class Multiclass(Task):
    kind = "multiclass"
    default_metric = "accuracy"
    plots = ("confusion",)

    @classmethod
    def from_labels(cls, labels: Sequence[str], **_) -> "Multiclass":
        classes = label_order(labels)
        if len(classes) < 2:
            raise KitError(f"the training labels hold only one class ({classes[0]!r}); a classifier needs at least "
                           f"two (every score would be a meaningless 1.0)")
        return cls(classes)

    def encode(self, labels):
        index = {c: i for i, c in enumerate(self.names)}
        return np.array([index[v] for v in labels], dtype=np.int64)

    def stratify_key(self, labels):
        return list(labels)

    def activate(self, outputs):
        return outputs.float().softmax(-1)

    def soft_targets(self, target, smoothing):
        """Smoothed one-hot, exactly as timm's mixup_target builds it."""
        import torch
        classes = len(self.names)
        off = smoothing / classes
        out = torch.full((len(target), classes), off, device=target.device)
        return out.scatter_(1, target.view(-1, 1), 1.0 - smoothing + off)

    def loss(self, logits, soft, class_weights=None, focal_gamma=None):
        """Cross-entropy with probability targets, -sum_c q_c log p_c; focal: each term times (1 - p_c)^gamma (the
        soft-target form of Lin et al.'s loss; torchvision has only the sigmoid one); weighted per class."""
        import torch.nn.functional as F
        if class_weights is None and not focal_gamma:
            return F.cross_entropy(logits, soft, reduction="none")
        logp = logits.log_softmax(-1)
        terms = -soft * logp
        if focal_gamma:
            terms = terms * (1 - logp.exp()).pow(focal_gamma)
        if class_weights is not None:
            terms = terms * class_weights
        return terms.sum(-1)

    def class_weights(self, targets):
        counts = np.bincount(np.asarray(targets), minlength=len(self.names)).astype(np.float64)
        return (len(targets) / (len(self.names) * np.maximum(counts, 1))).astype(np.float32)

    def sampling_classes(self, targets):
        return np.asarray(targets)

    def distill_loss(self, logits, teacher, temperature):
        """KL divergence of the student's softened distribution from the teacher's (Hinton et al. 2015), times T²
        so its gradients keep their scale at any temperature. The teacher's probabilities p soften as p^(1/T),
        renormalized: the softmax of its logits / T."""
        import torch.nn.functional as F
        soft = (teacher.clamp_min(1e-8).log() / temperature).softmax(-1)
        return F.kl_div((logits.float() / temperature).log_softmax(-1), soft, reduction="none").sum(-1) * temperature ** 2

    def confidence(self, outputs):
        return np.asarray(outputs).max(1)

    def hard_loss(self, logits, target, smoothing=0.0, reduction="mean", class_weights=None, focal_gamma=None):
        import torch.nn.functional as F
        if class_weights is not None or focal_gamma:
            return super().hard_loss(logits, target, smoothing, reduction, class_weights, focal_gamma)
        return F.cross_entropy(logits.float(), target, label_smoothing=smoothing, reduction=reduction)

    def metrics(self):
        from kit.core.metrics import MULTICLASS
        return MULTICLASS

    def link(self, outputs):
        return np.log(np.clip(outputs, 1e-7, 1))

    def link_torch(self, outputs):
        return outputs.clamp_min(1e-7).log()

    def unlink(self, z):
        z = z - z.max(1, keepdims=True)
        return np.exp(z) / np.exp(z).sum(1, keepdims=True)

    def fit_stacker(self, features, targets):
        """Multinomial logistic regression on every run's log-probabilities."""
        from sklearn.linear_model import LogisticRegression
        n, runs, classes = features.shape
        model = LogisticRegression(C=1.0, max_iter=2000).fit(features.reshape(n, -1), targets)
        coef, bias = np.zeros((classes, runs * classes)), np.zeros(classes)
        if len(model.classes_) == 2 and model.coef_.shape[0] == 1:      # binary: softmax([0, z]) is sigmoid(z)
            coef[model.classes_[1]], bias[model.classes_[1]] = model.coef_[0], model.intercept_[0]
        else:
            coef[model.classes_], bias[model.classes_] = model.coef_, model.intercept_
            bias[np.setdiff1d(np.arange(classes), model.classes_)] = -30.0       # a class no fitting row had
        return coef.reshape(classes, runs, classes), bias

    def check_outputs(self, outputs, quantized=False):
        outputs = np.asarray(outputs, dtype=np.float64)
        atol = 0.02 + outputs.shape[1] / 256 if quantized else 1e-3       # uint8 steps of 1/255 per output
        if outputs.min() < -1e-6 or outputs.max() > 1 + 1e-6 or not np.allclose(outputs.sum(1), 1, atol=atol):
            return "its outputs are not probabilities that sum to 1 per image (no softmax)"
        return None

    def label_cells(self, outputs):
        return [self.names[i] for i in np.asarray(outputs).argmax(1)]

    def answer_spec(self):
        return {"label": "argmax", "scores": "probabilities"}

    def worst(self, y, outputs, labels):
        pred = outputs.argmax(1)
        wrong = np.flatnonzero(pred != y)
        wrong = wrong[np.argsort(-outputs[wrong, pred[wrong]], kind="stable")]
        captions = [f"true {self.names[t]} | pred {self.names[p]} ({outputs[i, p]:.2f})"
                    for i, (t, p) in enumerate(zip(y, pred))]
        return wrong, captions, "most confidently wrong OOF predictions"

    def report_section(self, y, outputs, folds):
        """Per-class recall (the classes with the lowest first, 30 at most), macro-F1 and balanced accuracy: what
        class imbalance costs, visible beside the metric."""
        recall, support = [], np.bincount(y, minlength=len(self.names))
        pred = outputs.argmax(1)
        for c in range(len(self.names)):
            recall.append(float((pred[y == c] == c).mean()) if support[c] else float("nan"))
        order = np.argsort(np.nan_to_num(recall, nan=2.0), kind="stable")[:30]
        rows = "".join(f"| {self.names[c]} | {recall[c]:.4f} | {support[c]} |\n" for c in order)
        scope = "" if len(order) == len(self.names) else f" (the {len(order)} lowest of {len(self.names)})"
        return (f"## Per-class recall (OOF){scope}\n\nBalanced accuracy {self.score('balanced_accuracy', y, outputs):.4f}, "
                f"macro-F1 {self.score('macro_f1', y, outputs):.4f}.\n\n| class | recall | images |\n|---|---:|---:|\n"
                f"{rows}\nEvery class: report.csv.\n\n")

    def report_rows(self, y, outputs):
        """Per class precision, recall, F1 and support, then the macro and weighted averages."""
        from sklearn.metrics import classification_report
        rep = classification_report(y, outputs.argmax(1), labels=np.arange(len(self.names)), target_names=self.names,
                                    output_dict=True, zero_division=0)
        return (["class", "precision", "recall", "f1", "support"],
                [[name, f"{v['precision']:.4f}", f"{v['recall']:.4f}", f"{v['f1-score']:.4f}", int(v["support"])]
                 for name, v in rep.items() if isinstance(v, dict)])
