"""Normalizer-free ResNets that timm does not register: of ResNet18's and ResNet34's shape (`nf_resnet18`,
`nf_resnet34`), and timm's nf_resnet26 at half and a quarter of its width (`nf_resnet26_half`, `nf_resnet26_quarter`).

timm's NormFreeNet builds only bottleneck blocks (1x1, 3x3, 1x1), so its smallest NF-ResNet is nf_resnet26. These
use the basic block of He et al. 2016 (two 3x3 convs, stages [2, 2, 2, 2] / [3, 4, 6, 3], widths 64..512) made
normalizer-free as in Brock et al. 2021a ("Characterizing signal propagation to close the performance gap in
unnormalized ResNets", arXiv:2101.08692): scaled weight-standardized convs, the residual branch's input divided by
the expected standard deviation (beta), its output scaled by alpha, the branch's last gain initialized to zero.
Everything else (stem, downsampling, head, initialization, the per-stage variance bookkeeping) is timm's
NormFreeNet, built from an NfCfg and then given basic blocks in place of its bottlenecks. bench/RESULTS.md ("Equal
wall time, fourth wave") measures it against nf_resnet26 and the hand-written ResNet18.

The narrow nf_resnet26s are timm's own NF-ResNet config (bottleneck blocks, stages [2, 2, 2, 2], the same stem) with
every stage's width divided by 2 or 4: 3.5M / 0.9M weights against 14M, 2.6x / 4.4x the training images a second at
32 px on 2 CPU cores. Under a budget that fits few nf_resnet26 epochs they fit that many more and learn more in the
same seconds (bench/RESULTS.md "Half the width under a short budget"); `--model auto` picks nf_resnet26_half there
(kit/train/choice.py). The quarter tied the half on every set measured; it is kept as a name to pick, and for the bench.
"""
from __future__ import annotations

from functools import partial

import torch
from torch import nn
from timm.layers import ScaledStdConv2d, get_act_layer
from timm.models import register_model
from timm.models._builder import build_model_with_cfg
from timm.models.nfnet import NfCfg, NormFreeBlock, NormFreeNet, _dcfg, _nfres_cfg, _nonlin_gamma


class NormFreeBasicBlock(nn.Module):
    """out = x + alpha * conv2(relu(conv1(relu(x) * beta))); the shortcut of a block that changes width or
    stride is timm's average-pool downsample of the scaled input, as in its bottleneck blocks."""

    def __init__(self, bottleneck: NormFreeBlock, conv_layer, act_layer):
        super().__init__()
        self.alpha, self.beta = bottleneck.alpha, bottleneck.beta
        self.downsample = bottleneck.downsample
        self.drop_path = bottleneck.drop_path
        in_chs, out_chs = bottleneck.conv1.in_channels, bottleneck.conv3.out_channels
        self.act1 = act_layer()
        self.conv1 = conv_layer(in_chs, out_chs, 3, stride=bottleneck.conv2.stride)
        self.act2 = act_layer(inplace=True)
        self.conv2 = conv_layer(out_chs, out_chs, 3, gain_init=0.0)    # the block starts as the identity
        for conv in (self.conv1, self.conv2):                           # NormFreeNet's own initialization
            nn.init.kaiming_normal_(conv.weight, mode="fan_in", nonlinearity="linear")
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(x) * self.beta
        shortcut = self.downsample(out) if self.downsample is not None else x
        out = self.conv2(self.act2(self.conv1(out)))
        return self.drop_path(out) * self.alpha + shortcut


default_cfgs = {name: _dcfg(url="", first_conv="stem.conv")
                for name in ("nf_resnet18", "nf_resnet34", "nf_resnet26_half", "nf_resnet26_quarter")}


def _build(variant: str, cfg: NfCfg, pretrained: bool, **kwargs) -> NormFreeNet:
    """timm's NormFreeNet from `cfg`, built as timm builds its own NF nets (_create_normfreenet takes only its names)."""
    return build_model_with_cfg(NormFreeNet, variant, pretrained, model_cfg=cfg,
                                feature_cfg=dict(flatten_sequential=True), **kwargs)


def _basic(variant: str, depths: tuple, pretrained: bool, **kwargs) -> NormFreeNet:
    cfg = NfCfg(depths=depths, channels=(64, 128, 256, 512), stem_type="7x7_pool", stem_chs=64, bottle_ratio=1.0,
                act_layer="relu")
    model = _build(variant, cfg, pretrained, **kwargs)
    conv = partial(ScaledStdConv2d, gamma=_nonlin_gamma[cfg.act_layer], eps=cfg.std_conv_eps)
    act = get_act_layer(cfg.act_layer)
    for stage in model.stages:
        for i, block in enumerate(stage):
            stage[i] = NormFreeBasicBlock(block, conv, act)
    return model


@register_model
def nf_resnet18(pretrained: bool = False, **kwargs) -> NormFreeNet:
    """NF-ResNet-18: basic blocks, stages [2, 2, 2, 2]."""
    return _basic("nf_resnet18", (2, 2, 2, 2), pretrained, **kwargs)


@register_model
def nf_resnet34(pretrained: bool = False, **kwargs) -> NormFreeNet:
    """NF-ResNet-34: basic blocks, stages [3, 4, 6, 3]."""
    return _basic("nf_resnet34", (3, 4, 6, 3), pretrained, **kwargs)


@register_model
def nf_resnet26_half(pretrained: bool = False, **kwargs) -> NormFreeNet:
    """nf_resnet26 at half its width (stages 128..1024 wide)."""
    return _build("nf_resnet26_half", _nfres_cfg((2, 2, 2, 2), (128, 256, 512, 1024)), pretrained, **kwargs)


@register_model
def nf_resnet26_quarter(pretrained: bool = False, **kwargs) -> NormFreeNet:
    """nf_resnet26 at a quarter of its width (stages 64..512 wide)."""
    return _build("nf_resnet26_quarter", _nfres_cfg((2, 2, 2, 2), (64, 128, 256, 512)), pretrained, **kwargs)
