"""timm model creation, local/pretrained weights, and the facts about a model the engine needs."""
from __future__ import annotations

import difflib
import json
from pathlib import Path

import timm
import torch

from kit.store import checkpoint
from kit.train import nf_resnet  # noqa: F401 - nf_resnet registers the kit's NF-ResNets with timm
from kit.core.errors import KitError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def create_model(name: str, num_classes: int, pretrained: bool = False, pretrained_file: str | None = None,
                 drop_rate: float = 0.0, drop_path_rate: float = 0.0) -> torch.nn.Module:
    """A timm model with a `num_classes` head.

    Weights: timm's hub (pretrained=True, timm's own download and cache) or a local file (pretrained_file).
    Weights that cannot be had are an error, never a silent random init.
    """
    check_model_name(name)
    kwargs = dict(num_classes=num_classes, drop_rate=drop_rate, drop_path_rate=drop_path_rate)
    if pretrained_file:
        model = timm.create_model(name, **kwargs)
        load_weights_file(model, name, Path(pretrained_file))
        return model
    if not pretrained:
        return timm.create_model(name, **kwargs)
    try:
        return timm.create_model(name, pretrained=True, **kwargs)
    except Exception as e:  # noqa: BLE001 - network, cache and key-mismatch failures all end here
        raise KitError(f"cannot load timm's pretrained weights for {name!r}: {type(e).__name__}: {e}. Pass "
                       f"--pretrained-file PATH to a local weights file for this architecture, or --no-pretrained "
                       f"to train from scratch") from None


def check_model_name(name: str) -> None:
    base = name.split(".")[0]
    if not timm.is_model(base):          # a typo's nearest names first (nf_resnet26_halff: nf_resnet26_half)
        close = difflib.get_close_matches(base, timm.list_models(), n=8, cutoff=0.75) or timm.list_models("*nfnet*")[:8]
        raise KitError(f"unknown timm model {name!r}; similar names: {', '.join(close)}")


HUB_WEIGHTS = ("model.safetensors", "pytorch_model.bin")      # as timm publishes a model on the Hugging Face hub


def hub_architecture(folder: Path) -> str | None:
    """The architecture a hub folder's config.json names (timm writes "architecture"), or None."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return config.get("architecture") if isinstance(config, dict) else None


def weights_source(path: Path, name: str) -> Path:
    """The weights file of --pretrained-file: the file itself, or in a folder laid out as timm publishes on the hub
    (config.json + model.safetensors or pytorch_model.bin), whose architecture must be `name`."""
    if not path.exists():
        raise KitError(f"--pretrained-file {path} does not exist")
    if not path.is_dir():
        return path
    found = sorted(p.name for p in path.iterdir())
    weights = next((path / w for w in HUB_WEIGHTS if (path / w).is_file()), None)
    if weights is None:
        raise KitError(f"--pretrained-file {path} is a folder without {' or '.join(HUB_WEIGHTS)} (it holds: "
                       f"{', '.join(found[:8]) or 'nothing'}); pass the folder timm publishes on the hub, or a weights "
                       f"file")
    architecture = hub_architecture(path)
    if architecture and architecture.split(".")[0] != name.split(".")[0]:
        raise KitError(f"--pretrained-file {path} holds {architecture} (its config.json), not --model {name}; pass "
                       f"--model {architecture.split('.')[0]} (or --model auto)")
    return weights


def load_weights_file(model: torch.nn.Module, name: str, path: Path) -> None:
    """Load local weights: a .safetensors file, a .pth/.pt/.bin state dict or training checkpoint (its
    state_dict_ema, model_ema, state_dict or model; `module.` prefixes dropped: timm's load_state_dict, always with
    weights_only=True), a kit run's fold<k>/best.pt, or a hub folder (weights_source). The classifier is
    re-initialized when its shape differs (a new class count); any other missing, unexpected or mis-shaped key is an
    error: a silently half-loaded body trains like random init while looking pretrained."""
    source = weights_source(path, name)
    try:
        state = timm.models.load_state_dict(str(source), use_ema=True, weights_only=True)
    except Exception as e:  # noqa: BLE001 - a truncated or foreign file: one line
        if checkpoint.refused_unpickling(e):
            raise checkpoint.refusal(source, e) from None
        raise KitError(f"--pretrained-file {source} cannot be read as weights ({type(e).__name__}: "
                       f"{str(e).splitlines()[0] if str(e) else 'unreadable'}); pass a .safetensors, .pth, .pt or .bin "
                       f"file saved with torch.save or safetensors") from None
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise KitError(f"--pretrained-file {source} holds no state dict (name -> tensor)")
    head = classifier_prefix(model) + "."
    own = model.state_dict()
    state = {k: v for k, v in state.items()
             if not (k.startswith(head) and (k not in own or own[k].shape != v.shape))}
    mismatched = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    result = model.load_state_dict({k: v for k, v in state.items() if k not in mismatched}, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith(head)]
    problems = [f"{len(lst)} {what} (e.g. {lst[0]})" for what, lst in
                (("missing", missing), ("unexpected", result.unexpected_keys), ("mis-shaped", mismatched)) if lst]
    if problems:
        raise KitError(f"--pretrained-file {source} does not fit model {name!r}: {', '.join(problems)} weights. "
                       f"Use a weights file saved from {name}, or set --model to the file's architecture")


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


class ImageNormalizer(torch.nn.Module):
    """uint8 RGB images [N, H, W, 3] -> normalized float [N, 3, H, W].

    The one preprocessing step of training, validation and the exported ONNX graph. Batches travel as uint8
    (4x fewer bytes from the loader workers and to the GPU) and are normalized where the model runs. The
    output has channels_last strides (a view of NHWC memory); call .contiguous() for NCHW.
    """

    def __init__(self, mean: list, std: list):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1) * 255.0)
        self.register_buffer("inv_std", 1.0 / (torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1) * 255.0))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return (images.permute(0, 3, 1, 2).float() - self.mean) * self.inv_std
