"""timm model creation, local/pretrained weights, and the facts about a model the engine needs."""
from __future__ import annotations

from pathlib import Path

import timm
import torch

from .errors import KitError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def create_model(name: str, num_classes: int, pretrained: bool = False, pretrained_file: str | None = None,
                 drop_rate: float = 0.0, drop_path_rate: float = 0.0) -> torch.nn.Module:
    """A timm model with a fresh `num_classes` head.

    Weights come from timm's normal mechanism: its hub (pretrained=True) or a local file (pretrained_file,
    passed as timm's `pretrained_cfg_overlay=dict(file=...)`, loaded with weights_only=True). A mismatched
    classifier is dropped and re-initialized by timm. Missing weights are an error, never random init.
    """
    if not timm.list_models(name) and name not in timm.list_models(pretrained=True):
        base = name.split(".")[0]
        close = timm.list_models(f"*{base.split('_')[-1]}*")[:8] or timm.list_models("*nfnet*")[:8]
        raise KitError(f"unknown timm model {name!r}; similar names: {', '.join(close)}")
    kwargs = dict(num_classes=num_classes, drop_rate=drop_rate, drop_path_rate=drop_path_rate)
    if pretrained_file:
        path = Path(pretrained_file)
        if not path.is_file():
            raise KitError(f"--pretrained-file {path} does not exist")
        kwargs.update(pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    elif not pretrained:
        return timm.create_model(name, **kwargs)
    else:
        kwargs.update(pretrained=True)
    try:
        return timm.create_model(name, **kwargs)
    except Exception as e:  # noqa: BLE001 - download, unpickling and key-mismatch failures all end here
        source = f"file {pretrained_file}" if pretrained_file else "timm's hub"
        raise KitError(f"cannot load pretrained weights for {name!r} from {source}: {type(e).__name__}: {e}. "
                       f"Pass --pretrained-file PATH to a local weights file for this architecture, "
                       f"or --no-pretrained to train from scratch") from None


def classifier_prefix(model: torch.nn.Module) -> str:
    """Module path of the classifier head (e.g. 'head.fc'), found by identity, not by parameter order."""
    head = model.get_classifier()
    for name, module in model.named_modules():
        if module is head:
            return name
    raise KitError(f"cannot locate the classifier of {type(model).__name__}; AGC needs it to skip the head")


def split_head_params(model: torch.nn.Module) -> tuple[list, list]:
    """(body parameters, classifier parameters): AGC clips the body only, as in Brock et al. 2021."""
    prefix = classifier_prefix(model) + "."
    body, head = [], []
    for name, p in model.named_parameters():
        (head if name.startswith(prefix) else body).append(p)
    return body, head


def normalization(model: torch.nn.Module, mean=None, std=None) -> tuple[list, list]:
    """Mean/std the model's weights expect (its pretrained config), unless given explicitly."""
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    mean = list(mean or cfg.get("mean", IMAGENET_MEAN))
    std = list(std or cfg.get("std", IMAGENET_STD))
    return [float(v) for v in mean], [float(v) for v in std]
