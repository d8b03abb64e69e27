"""One training step, defined once: the forward pass under autocast, the loss in fp32, the backward pass of the
(scaled) loss, and per optimizer update: unscale, AGC on the body, the optimizer step, the scaler's update, the
EMA. The Trainer (kit.train.fold) runs it on every batch and the --time-budget probe (kit.train.budget) times it,
so the probe measures exactly what the epochs then do (autocast and loss scaling included). timm keeps the same
sequence in one object (timm.utils.NativeScaler).
"""
from __future__ import annotations

import copy
from typing import Optional

import torch

from kit.train.agc import adaptive_clip_grad_
from kit.train.device import Precision
from kit.train.objective import Objective


class Step:
    def __init__(self, net: torch.nn.Module, model: torch.nn.Module, objective: Objective,
                 optimizer: torch.optim.Optimizer, ema, body_params: list, agc_clip: float, agc_eps: float,
                 precision: Precision, device: torch.device, accum_steps: int = 1):
        self.net, self.model, self.objective, self.optimizer, self.ema = net, model, objective, optimizer, ema
        self.body_params, self.agc_clip, self.agc_eps = body_params, agc_clip, agc_eps
        self.precision, self.device, self.accum_steps = precision, device, accum_steps
        self.scaler = torch.amp.GradScaler(device.type, enabled=precision.scaled)

    def loss(self, x: torch.Tensor, y: torch.Tensor, mix: Optional[torch.Tensor]) -> torch.Tensor:
        """The training loss of a batch: the network under autocast, the loss on fp32 outputs."""
        with self.precision.autocast(self.device):
            out = self.net(x)
        return self.objective.train_loss(out.float(), y, mix)

    def backward(self, loss: torch.Tensor) -> None:
        self.scaler.scale(loss / self.accum_steps).backward()

    def update(self, updates: int) -> None:
        """One optimizer update on the accumulated gradients; `updates` counts it (the EMA's warmup reads it)."""
        self.scaler.unscale_(self.optimizer)        # AGC compares true gradients with weights, never scaled ones
        adaptive_clip_grad_(self.body_params, self.agc_clip, self.agc_eps)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update(self.model, step=updates)

    def snapshot(self) -> tuple:
        """Everything a step changes (weights, optimizer and scaler state, EMA), to put back after a probe."""
        return (copy.deepcopy(self.model.state_dict()), copy.deepcopy(self.optimizer.state_dict()),
                copy.deepcopy(self.scaler.state_dict()),
                copy.deepcopy(self.ema.module.state_dict()) if self.ema is not None else None)

    def restore(self, saved: tuple) -> None:
        model, optimizer, scaler, ema = saved
        self.model.load_state_dict(model)
        self.optimizer.load_state_dict(optimizer)
        self.optimizer.zero_grad(set_to_none=True)
        if scaler:                                  # a disabled scaler's state is empty
            self.scaler.load_state_dict(scaler)
        if ema is not None:
            self.ema.module.load_state_dict(ema)
