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
