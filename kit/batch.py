"""What happens to a batch on the model's device before the model sees it.

Loader workers only decode and augment single images (uint8); everything that is cheaper on a whole batch, or
on the device, happens here: normalization (the same ImageNormalizer the exported graph starts with), the
activation layout.
"""
from __future__ import annotations

import torch

from .model import ImageNormalizer


class DeviceBatch:
    def __init__(self, normalize: ImageNormalizer, device: torch.device,
                 memory_format: torch.memory_format = torch.contiguous_format):
        self.normalize, self.device, self.memory_format = normalize.to(device), device, memory_format

    def images(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 NHWC from the loader -> normalized float on the device, in the model's layout."""
        x = self.normalize(x.to(self.device, non_blocking=True))
        return x.contiguous(memory_format=self.memory_format)

    def train(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images(x), y.to(self.device, non_blocking=True)

    def eval(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images(x), y.to(self.device, non_blocking=True)
