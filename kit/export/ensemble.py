"""Ensemble members (the fold models of a run), weight-standardization folding, and the torch module that the
export turns into one ONNX graph."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from timm.layers import Conv2dSame, ScaledStdConv2d, ScaledStdConv2dSame, StdConv2d, StdConv2dSame

from kit.train import checkpoint
from kit.settings.config import Config, from_dict, test_size
from kit.core.errors import KitError
from kit.train.model import create_model
from kit.evaluate.rundir import RunDir, setup_changes
from kit.core.task import Task, restore

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
    ckpt = checkpoint.load(path)
    for key in ("config", "classes", "mean", "std", "score"):
        if key not in ckpt:
            raise KitError(f"{path} is not a fold checkpoint of this kit (no {key!r}); retrain the fold")
    cfg = from_dict(ckpt["config"], str(path))
    task = restore(ckpt.get("task", "multiclass"), ckpt["classes"])
    model = create_model(cfg.model, len(task.names))
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise KitError(f"{path} does not match model {cfg.model!r} with {len(task.names)} classes: "
                       f"{str(e).splitlines()[0]}") from None
    return Member(run, k, model.eval(), cfg, task, ckpt["mean"], ckpt["std"], float(ckpt["score"]))


def load_members(run: RunDir, folds: Optional[list[int]] = None) -> list[Member]:
    """Best checkpoint of each requested fold. By default every fold that finished training, so folds trained as
    separate jobs can be ensembled as they complete; a fold still training is left out."""
    available = run.folds("best.pt")
    if not available:
        raise KitError(f"no trained folds in {run} (no fold<k>/best.pt); train first: python train.py --fold 0")
    if folds is None:
        folds = [k for k in available if run.finished(k)]
        unfinished = sorted(set(available) - set(folds))
        if not folds:
            raise KitError(f"no fold in {run} has finished its epochs yet (in progress: {unfinished}); wait, or pass "
                           f"--folds to export a fold's best checkpoint so far")
        if unfinished:
            log.info(f"export: leaving out fold(s) {unfinished}, still training")
    if len(set(folds)) != len(folds):
        raise KitError(f"--folds lists a fold twice ({folds}); each fold model can join the ensemble once")
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


def view(x: torch.Tensor, name: str) -> torch.Tensor:
    """One TTA view of an NCHW batch of square images (kit.evaluate.blend.VIEWS)."""
    if name == "identity":
        return x
    if name == "hflip":
        return x.flip(3)
    if name == "vflip":
        return x.flip(2)
    if name == "transpose":
        return x.transpose(2, 3)
    if name == "rot90":                                   # counter-clockwise, as torch.rot90(x, 1, (2, 3))
        return x.transpose(2, 3).flip(2)
    if name == "rot180":
        return x.flip(2).flip(3)
    if name == "rot270":
        return x.transpose(2, 3).flip(3)
    raise KitError(f"unknown TTA view {name!r}")


def resize_pixels(x: torch.Tensor, size: int) -> torch.Tensor:
    """float NCHW pixels (0..255) -> size x size: bilinear with antialiasing (the filter of Pillow's BILINEAR
    resize that decoding uses; exported as ONNX Resize with antialias=1), rounded back to pixel values."""
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False).round().clamp(0, 255)


class Preprocess(torch.nn.Module):
    """uint8 NHWC at the graph's input size -> one member's model input: resized to its size (when smaller or
    larger), normalized with its mean/std."""

    def __init__(self, size: int, mean: list, std: list):
        super().__init__()
        self.size = size
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1) * 255.0)
        self.register_buffer("inv_std", 1.0 / (torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1) * 255.0))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return (resize_pixels(pixels, self.size) - self.mean) * self.inv_std


class Ensemble(torch.nn.Module):
    """uint8 NHWC images -> for every member: its preprocessing, its TTA views, its model, the task's
    activation, the mean over views -> (the weighted sum over members [N, C], each member's output [N, M, C]).

    Members that share preprocessing and views share the preprocessed batch.
    """

    def __init__(self, models: list[torch.nn.Module], sizes: list[int], means: list[list], stds: list[list],
                 views: list[list[str]], weights: list[float], task: Task):
        super().__init__()
        self.models = torch.nn.ModuleList(models)
        keys = [(int(z), tuple(m), tuple(s)) for z, m, s in zip(sizes, means, stds)]
        distinct = list(dict.fromkeys(keys))
        self.preprocess = torch.nn.ModuleList(Preprocess(z, list(m), list(s)) for z, m, s in distinct)
        self.uses = [distinct.index(k) for k in keys]
        self.views = [list(v) for v in views]
        self.weights = [float(w) for w in weights]
        self.task = task

    @classmethod
    def of(cls, members: list[Member], models: list[torch.nn.Module] | None = None) -> "Ensemble":
        return cls(models or [m.model for m in members], [m.size for m in members], [m.mean for m in members],
                   [m.std for m in members], [m.views for m in members], [m.weight for m in members],
                   members[0].task)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = images.shape[0]
        pixels = images.permute(0, 3, 1, 2).float()
        batches: dict = {}
        outputs = []
        for model, use, views in zip(self.models, self.uses, self.views):
            key = (use, tuple(views))
            if key not in batches:
                x = self.preprocess[use](pixels)
                batches[key] = torch.cat([view(x, v) for v in views]) if len(views) > 1 else view(x, views[0])
            outputs.append(self.task.activate(model(batches[key])).view(len(views), n, -1).mean(0))
        blend = sum(out * w for out, w in zip(outputs, self.weights))
        return blend, torch.stack(outputs, 1)
