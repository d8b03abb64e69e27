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

    def loss(self, logits, soft):
        import torch.nn.functional as F
        return F.cross_entropy(logits, soft, reduction="none")         # probability targets

    def distill_loss(self, logits, teacher, temperature):
        """KL divergence of the student's softened distribution from the teacher's (Hinton et al. 2015), times T²
        so its gradients keep their scale at any temperature. The teacher's probabilities p soften as p^(1/T),
        renormalized: the softmax of its logits / T."""
        import torch.nn.functional as F
        soft = (teacher.clamp_min(1e-8).log() / temperature).softmax(-1)
        return F.kl_div((logits.float() / temperature).log_softmax(-1), soft, reduction="none").sum(-1) * temperature ** 2

    def confidence(self, outputs):
        return np.asarray(outputs).max(1)

    def hard_loss(self, logits, target, smoothing=0.0, reduction="mean"):
        import torch.nn.functional as F
        return F.cross_entropy(logits.float(), target, label_smoothing=smoothing, reduction=reduction)

    def metrics(self):
        from kit.core.metrics import MULTICLASS
        return MULTICLASS

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

    def report_rows(self, y, outputs):
        """Per class precision, recall, F1 and support, then the macro and weighted averages."""
        from sklearn.metrics import classification_report
        rep = classification_report(y, outputs.argmax(1), labels=np.arange(len(self.names)), target_names=self.names,
                                    output_dict=True, zero_division=0)
        return (["class", "precision", "recall", "f1", "support"],
                [[name, f"{v['precision']:.4f}", f"{v['recall']:.4f}", f"{v['f1-score']:.4f}", int(v["support"])]
                 for name, v in rep.items() if isinstance(v, dict)])
