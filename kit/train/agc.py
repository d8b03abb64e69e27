"""Adaptive Gradient Clipping (Brock et al. 2021, "High-Performance Large-Scale Image Recognition Without
Normalization", arXiv:2102.06171, section 4).

For every unit i (a row of a weight: one output channel of a conv or linear layer; a whole vector for biases
and gains), with W_i its weights and G_i its gradient:

    G_i <- G_i * (lambda * max(||W_i||, eps) / ||G_i||)   if ||G_i|| > lambda * max(||W_i||, eps)

Same result as timm.utils.adaptive_clip_grad, with less memory traffic: per tensor two norm passes and, only
where some unit is clipped, one in-place rescale, instead of timm's eight passes and two temporary
gradient-sized tensors; the per-unit scale factors of all tensors are computed in one batch of small ops.
"""
from __future__ import annotations

from typing import Iterable

import torch


def _rows(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1) if t.ndim > 1 else t.reshape(1, -1)


@torch.no_grad()
def adaptive_clip_grad_(parameters: Iterable[torch.Tensor], clip_factor: float, eps: float = 1e-3) -> None:
    """Clip gradients in place, unit-wise. Call after gradients are final (unscaled, accumulated)."""
    params = [p for p in parameters if p.grad is not None]
    if not params or clip_factor <= 0:
        return
    weight_norms = [torch.linalg.vector_norm(_rows(p), dim=1) for p in params]
    grad_norms = [torch.linalg.vector_norm(_rows(p.grad), dim=1) for p in params]
    sizes = [n.numel() for n in weight_norms]
    max_norm = torch.cat(weight_norms).clamp_(min=eps).mul_(clip_factor)
    grad_norm = torch.cat(grad_norms)
    clip = grad_norm >= max_norm
    scale = torch.where(clip, max_norm / grad_norm.clamp(min=1e-6), torch.ones_like(grad_norm))
    # only tensors with a clipped unit are rescaled: in most steps most tensors have none, and the rescale
    # is a full read-and-write pass over the gradient
    owner = torch.repeat_interleave(torch.arange(len(params)), torch.tensor(sizes))
    touched = torch.zeros(len(params), dtype=torch.bool).index_fill_(0, owner[clip], True).tolist()
    for p, s, t in zip(params, scale.split(sizes), touched):
        if t:
            p.grad.mul_(s.reshape(-1, *([1] * (p.grad.ndim - 1))) if p.grad.ndim > 1 else s.squeeze(0))


NORM_LAYERS = (torch.nn.modules.batchnorm._NormBase, torch.nn.GroupNorm, torch.nn.LayerNorm, torch.nn.LocalResponseNorm)


def norm_layer(model: torch.nn.Module) -> str | None:
    """The class name of the first normalization layer in `model` (BatchNorm, GroupNorm, LayerNorm...), None for a
    normalizer-free net."""
    return next((type(m).__name__ for m in model.modules() if isinstance(m, NORM_LAYERS)), None)


def clip_factor(setting: str, batch_size: int, optimizer: str, normalized_by: str | None = None) -> float:
    """lambda for the `agc_clip` setting: a number as given, or `auto`: a function of the global batch size (per
    optimizer step) and the optimizer, and 0 (off) for a model with normalization layers (`normalized_by`).

    AGC is what lets a normalizer-free net train without BatchNorm; on a BatchNorm net it is the wrong tool. Measured
    (digits-hard fold 0, timm resnet18, 5 epochs; bench/RESULTS.md "The model under a short budget, and AGC on a
    BatchNorm net"): clipped at the SGD factor below it did not learn at all (validation accuracy 0.135, chance 0.10;
    the train loss stayed above ln 10), because a unit whose weight norm is ~0 -- BatchNorm's zero-initialized last
    gains, every bias -- can move only eps x lambda a step; unclipped it reached 0.590.

    SGD: 0.01 * sqrt(4096 / batch), capped at 0.16. It passes through the paper's point (0.01 at batch 4096; Brock
    et al. report the best lambda falling as the batch grows) and the one measured here (bench/RESULTS.md, "AGC
    clip factor": at batch 32 with SGD, 0.113 beat 0.05, 0.2 and 0.4, and no clipping diverged); the
    square-root slope between them is an assumption, not a sweep. AdamW: 0.01 at any batch, the value its arm
    of bench/recipe.py was measured with (RESULTS.md); Adam already scales each parameter's step.
    """
    if setting != "auto":
        return float(setting)
    if normalized_by:
        return 0.0
    if optimizer == "adamw":
        return 0.01
    return round(min(0.16, 0.01 * (4096 / batch_size) ** 0.5), 4)
