"""The torch module the export turns into one ONNX graph: every member's preprocessing, TTA views, model and the
task's activation, weighted. The members themselves (fold models loaded for inference) are kit.train.members'."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from kit.core.errors import KitError
from kit.core.task import Task
from kit.train.members import Member


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


class WeightedHead(torch.nn.Module):
    """The runs' outputs [N, R, C] -> their weighted sum (weights, hill)."""

    def __init__(self, weights):
        super().__init__()
        self.register_buffer("weights", torch.tensor(list(weights), dtype=torch.float32).view(1, -1, 1))

    def forward(self, runs: torch.Tensor) -> torch.Tensor:
        return (runs * self.weights).sum(1)


class RankHead(WeightedHead):
    """Rank averaging: each run's outputs through their OOF distribution (the share of its OOF values at or below),
    then the weighted sum."""

    def __init__(self, weights, quantiles):
        super().__init__(weights)
        self.register_buffer("quantiles", torch.as_tensor(quantiles, dtype=torch.float32))     # [R, C, Q]

    def forward(self, runs: torch.Tensor) -> torch.Tensor:
        ranks = (runs.unsqueeze(-1) >= self.quantiles.unsqueeze(0)).float().mean(-1)
        return super().forward(ranks)


class StackHead(torch.nn.Module):
    """Stacking: the task's link of the runs' outputs -> a linear model -> the task's inverse link."""

    def __init__(self, coef, bias, task: Task):
        super().__init__()
        self.task = task
        self.register_buffer("coef", torch.as_tensor(coef, dtype=torch.float32))             # [C, R, C]
        self.register_buffer("bias", torch.as_tensor(bias, dtype=torch.float32))             # [C]

    def forward(self, runs: torch.Tensor) -> torch.Tensor:
        features = self.task.link_torch(runs)                                              # [N, R, C]
        z = (features.unsqueeze(1) * self.coef.unsqueeze(0)).sum((2, 3)) + self.bias
        return self.task.unlink_torch(z)


def head_of(blend, task: Task) -> torch.nn.Module:
    """The graph's module for a fitted kit.evaluate.blend.Blend."""
    if blend.method == "rank":
        return RankHead(blend.weights, blend.quantiles)
    if blend.method == "stack":
        return StackHead(blend.coef, blend.bias, task)
    return WeightedHead(blend.weights)


class Ensemble(torch.nn.Module):
    """uint8 NHWC images -> for every member: its preprocessing, its TTA views, its model, the task's
    activation, the mean over views; each run's output is the mean of its members (fold models); the head blends the
    runs -> (the blend [N, C], each member's output [N, M, C]).

    Members that share preprocessing and views share the preprocessed batch.
    """

    def __init__(self, models: list[torch.nn.Module], sizes: list[int], means: list[list], stds: list[list],
                 views: list[list[str]], runs: list[int], task: Task, head: torch.nn.Module):
        super().__init__()
        self.models = torch.nn.ModuleList(models)
        keys = [(int(z), tuple(m), tuple(s)) for z, m, s in zip(sizes, means, stds)]
        distinct = list(dict.fromkeys(keys))
        self.preprocess = torch.nn.ModuleList(Preprocess(z, list(m), list(s)) for z, m, s in distinct)
        self.uses = [distinct.index(k) for k in keys]
        self.views = [list(v) for v in views]
        self.runs = list(runs)
        self.task = task
        self.head = head

    @classmethod
    def of(cls, members: list[Member], head: torch.nn.Module | None = None,
           models: list[torch.nn.Module] | None = None) -> "Ensemble":
        """`members` grouped by run in order; `head` blends the runs (default: their equal-weight mean)."""
        order = list(dict.fromkeys(m.run.path for m in members))
        runs = [order.index(m.run.path) for m in members]
        return cls(models or [m.model for m in members], [m.size for m in members], [m.mean for m in members],
                   [m.std for m in members], [m.views for m in members], runs, members[0].task,
                   head or WeightedHead([1 / len(order)] * len(order)))

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
        runs = torch.stack([torch.stack([o for o, r in zip(outputs, self.runs) if r == k]).mean(0)
                            for k in range(max(self.runs) + 1)], 1)
        return self.head(runs), torch.stack(outputs, 1)
