"""Fold models loaded for inference (members of an ensemble, or a student's teachers): each with its settings,
task, normalization and score, weight standardization folded for speed, and their predictions on image files."""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from timm.layers import Conv2dSame, ScaledStdConv2d, ScaledStdConv2dSame, StdConv2d, StdConv2dSame

from kit.core.errors import KitError
from kit.core.images import load_rgb
from kit.core.task import Task, restore
from kit.store.rundir import FULL, RunDir, setup_changes
from kit.settings.config import Config, from_dict, test_size
from kit.store import state
from kit.train.model import ImageNormalizer, create_model

log = logging.getLogger(__name__)
_STD_CONVS = (StdConv2d, StdConv2dSame, ScaledStdConv2d, ScaledStdConv2dSame)


@dataclass
class Member:
    """One fold model, ready for inference, and where it came from."""
    run: RunDir
    fold: int
    model: torch.nn.Module
    config: Config
    task: Task
    mean: list
    std: list
    score: float                    # its best validation score (out of fold)
    weight: float = 1.0             # share of the ensemble's output
    views: tuple = ("identity",)    # TTA views averaged for it (kit.evaluate.blend.VIEWS)

    @property
    def size(self) -> int:
        """The image size it predicts at (its run's test size)."""
        return test_size(self.config)


def _load_member(run: RunDir, k: int) -> Member:
    path = run.best(k)
    saved = state.read_best(path)
    cfg = from_dict(saved.config, str(path))
    task = restore(saved.task, saved.classes)
    model = create_model(cfg.model, len(task.names))
    try:
        model.load_state_dict(saved.weights)
    except RuntimeError as e:
        raise KitError(f"{path} does not match model {cfg.model!r} with {len(task.names)} classes: "
                       f"{str(e).splitlines()[0]}") from None
    return Member(run, k, model.eval(), cfg, task, saved.mean, saved.std, saved.score)


def load_members(run: RunDir, folds: Optional[list[int]] = None) -> list[Member]:
    """Best checkpoint of each requested fold. By default every fold that finished training; a fold that started but
    has not finished (training now, or stopped) is refused rather than silently left out of the ensemble: --folds
    names the folds to export while others train."""
    available = run.folds("best.pt")
    full = [FULL] if run.best(FULL).is_file() else []
    if not available and folds is None:
        hint = "; it holds the full model: pass --folds full" if full else "; train first: python train.py --fold 0"
        raise KitError(f"no trained folds in {run} (no fold<k>/best.pt){hint}")
    if folds is None:
        folds = [k for k in available if run.finished(k)]
        unfinished = sorted(set(available) - set(folds))
        if not folds:
            raise KitError(f"no fold in {run} has finished its epochs yet (in progress: {unfinished}); wait, or pass "
                           f"--folds to export a fold's best checkpoint so far")
        if unfinished:
            raise KitError(f"fold(s) {unfinished} of {run} have not finished training (still running, or stopped); "
                           f"an ensemble without them is not the run's. Wait for them (or --resume them), or pass "
                           f"--folds {','.join(map(str, folds))} to export the finished folds alone")
    if len(set(folds)) != len(folds):
        raise KitError(f"--folds lists a fold twice ({folds}); each fold model can join the ensemble once")
    available = available + full
    missing = [k for k in folds if k not in available]
    if missing:
        raise KitError(f"fold(s) {missing} have no best.pt in {run}; trained folds: {available}")
    members = [_load_member(run, k) for k in folds]
    first = members[0]
    for m in members[1:]:
        if not m.task.same_outputs(first.task):
            raise KitError(f"fold {m.fold} in {run} predicts other classes than fold {first.fold}; they cannot form "
                           f"one ensemble")
        changes = setup_changes(first.config.to_dict(), m.config.to_dict())
        if changes:
            log.warning(f"warning: fold {m.fold} of {run} was trained with another setup than fold {first.fold} "
                        f"({'; '.join(changes)})")
    for m in members:
        m.weight = 1.0 / len(members)
    return members


def standardized_weight(conv: torch.nn.Conv2d) -> torch.Tensor:
    """The weight a weight-standardized conv computes on every forward, computed once, the same way timm does."""
    gain = (conv.gain * conv.scale).view(-1) if hasattr(conv, "gain") else None
    return F.batch_norm(conv.weight.reshape(1, conv.out_channels, -1), None, None, weight=gain, training=True,
                        momentum=0.0, eps=conv.eps).reshape_as(conv.weight)


@torch.no_grad()
def fold_weight_standardization(model: torch.nn.Module) -> int:
    """Replace every weight-standardized conv by a plain conv holding its standardized weight, in place.

    Inference then does no per-call standardization (exported naively, it is a BatchNormalization, mean and
    variance over every conv weight on every call). Returns the number of convs folded.
    """
    targets = [(name, m) for name, m in model.named_modules() if isinstance(m, _STD_CONVS)]
    for name, conv in targets:
        cls = Conv2dSame if getattr(conv, "same_pad", False) else torch.nn.Conv2d
        plain = cls(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                    padding=0 if cls is Conv2dSame else conv.padding, dilation=conv.dilation, groups=conv.groups,
                    bias=conv.bias is not None)
        plain.weight.copy_(standardized_weight(conv))
        if conv.bias is not None:
            plain.bias.copy_(conv.bias)
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, plain)
    return len(targets)


@torch.no_grad()
def predict(member: Member, paths: Sequence[Path], batch_size: int = 128) -> np.ndarray:
    """The member's predictions (its task's activation) for image files, decoded at its size as the graph takes
    them; weight standardization folded (equal outputs, several times faster)."""
    model = copy.deepcopy(member.model)
    fold_weight_standardization(model)
    model.eval()
    normalize = ImageNormalizer(member.mean, member.std)
    out = []
    for start in range(0, len(paths), batch_size):
        images = np.stack([load_rgb(p, member.size) for p in paths[start:start + batch_size]])
        out.append(member.task.activate(model(normalize(torch.from_numpy(images)).contiguous())).numpy())
    return np.concatenate(out) if out else np.zeros((0, len(member.task.names)), np.float32)
