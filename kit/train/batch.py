"""What happens to a batch on the model's device before the model sees it.

Loader workers only decode and augment single images (uint8); everything that is cheaper on a whole batch, or
on the device, happens here: normalization (the same ImageNormalizer the exported graph starts with), the
activation layout, and MixUp/CutMix (timm's Mixup) on the normalized batch.
"""
from __future__ import annotations

import numpy as np
import torch
from timm.data import Mixup

from kit.settings.config import Config
from kit.train.model import ImageNormalizer


class Mixer:
    """MixUp / CutMix of a training batch with its mirror image (timm's Mixup, "batch" mode).

    Returns the mixed images and the mixing matrix M [B, B] (lam on the diagonal, 1 - lam on the anti-diagonal),
    so the objective mixes any kind of target the same way: soft targets = M @ targets. The draw of each batch
    is a pure function of (seed, epoch, step), like the loader's augmentation: runs are reproducible and resume
    exactly.
    """

    def __init__(self, cfg: Config, batch_size: int, epochs: int):
        self.mixup = Mixup(mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, prob=cfg.mix_prob,
                           switch_prob=cfg.mix_switch_prob, mode="batch", label_smoothing=0.0, num_classes=batch_size)
        self.seed = cfg.seed
        self.stop = cfg.mix_stop_epoch if cfg.mix_stop_epoch >= 0 else epochs + cfg.mix_stop_epoch

    def active(self, epoch: int) -> bool:
        """Whether batches of this epoch (0-based) are mixed; the last ones train on clean images."""
        return epoch < self.stop

    def __call__(self, x: torch.Tensor, epoch: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        state = np.random.get_state()                 # timm draws from the global numpy RNG
        np.random.seed(int(np.random.SeedSequence([self.seed, epoch, step, 0x6D6978]).generate_state(1)[0]))
        try:
            return self.mixup(x, torch.arange(len(x), device=x.device))
        finally:
            np.random.set_state(state)


class DeviceBatch:
    def __init__(self, normalize: ImageNormalizer, device: torch.device,
                 memory_format: torch.memory_format = torch.contiguous_format, mixer: Mixer | None = None):
        self.normalize, self.device, self.memory_format = normalize.to(device), device, memory_format
        self.mixer = mixer

    def images(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 NHWC from the loader -> normalized float on the device, in the model's layout."""
        x = self.normalize(x.to(self.device, non_blocking=True))
        return x.contiguous(memory_format=self.memory_format)

    def train(self, x: torch.Tensor, y: torch.Tensor, epoch: int, step: int):
        """(images, targets, mixing matrix or None) of a training batch."""
        x, y = self.images(x), y.to(self.device, non_blocking=True)
        if self.mixer is not None and self.mixer.active(epoch):
            x, mix = self.mixer(x, epoch, step)
            return x, y, mix
        return x, y, None

    def eval(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images(x), y.to(self.device, non_blocking=True)
