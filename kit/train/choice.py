"""`--model auto`: which model a run trains, decided once per run before anything is written, and why.

- A run dir whose folds are trained (or training) keeps their model, so its folds form one ensemble.
- With pretrained weights: the architecture a hub folder's config.json names (--pretrained-file FOLDER), else
  eca_nfnet_l0, the fine-tuning default (timm publishes weights for it).
- From scratch without a time budget: nf_resnet26, the from-scratch default before `auto` existed. At equal epochs it
  learned more per epoch than nf_resnet18 (digits-hard, 8 epochs: +6.9 pt validation accuracy, bench/RESULTS.md).
- From scratch under --time-budget: nf_resnet26 when more than LONG_EPOCHS of its epochs fit the fold's budget (timed
  here on a few real steps; its fold then plans from this step, a Pace, instead of timing its own again), else
  nf_resnet26_half (kit/train/nf_resnet.py: the same net at half its width, a quarter of its weights), which trains
  2.6x the images a second (0.086 s a step against 0.22 on digits-hard, 2 CPU cores) and so fits 10-11 epochs where
  nf_resnet26 fits 4; its fold times its own step (~0.4 s). Measured at the hand-written ResNet18 loop's 8-epoch
  seconds (bench/RESULTS.md "Half the width under a short budget"), 2 seeds x 5 folds on digits-hard: +5.6 pt held-out
  test over nf_resnet26 (+5.7 validation), +3.2 over the hand loop; +3.0 / +1.3 on photo-patches / digits (5 folds).
  nf_resnet26 learns more per epoch (8 epochs each: −1.7 pt validation for half, n.s.), but where 8 of its epochs fit
  (75 s), half's 20 still scored +1.4 validation / +2.1 test: LONG_EPOCHS is 8, the most nf_resnet26 epochs at which
  half was measured; beyond it the plain choice stays. It replaces nf_resnet18 (1.4x-2.4x nf_resnet26's images a
  second), which lost to nf_resnet26 wherever 3 of its epochs fit.
"""
from __future__ import annotations

import dataclasses
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from kit.store.rundir import RunDir
from kit.train.budget import Pace, epochs_left
from kit.train.model import hub_architecture
from kit.settings.config import batch_for

AUTO = "auto"
FINETUNE_MODEL = "eca_nfnet_l0"
SCRATCH_MODEL = "nf_resnet26"
SHORT_MODEL = "nf_resnet26_half"
LONG_EPOCHS = 8
PROBE_STEPS = 3


def choose_model(cfg, run: RunDir, task, targets: np.ndarray, train_images: int, val_images: int,
                 deadline: float | None) -> tuple[str, str, Pace | None]:
    """(timm model name, why, the chosen model's step if it was timed here) for `--model auto`; `deadline`: when the
    fold's last epoch must end under its --time-budget (kit.train.budget.deadline; None: no budget)."""
    trained = [k for k in run.trained() if run.fold_config_file(k).is_file()]
    if trained:
        return run.fold_setup(trained[0])["model"], f"the model of the run's trained fold {trained[0]}", None
    published = hub_architecture(Path(cfg.pretrained_file)) if cfg.pretrained_file else None
    if published:
        return published.split(".")[0], f"the architecture of --pretrained-file {cfg.pretrained_file} (config.json)", \
            None
    if cfg.pretrained or cfg.pretrained_file:
        return FINETUNE_MODEL, "fine-tuning from pretrained weights: the finetune recipe's model", None
    if deadline is None:
        return SCRATCH_MODEL, "from scratch, no time budget: the model that learned most per epoch", None
    batch = _batch(cfg, SCRATCH_MODEL, train_images)
    per_step = seconds_per_step(cfg, SCRATCH_MODEL, task, targets[:batch])
    train_s = per_step * (train_images // batch)
    val_s = per_step / 3 * val_images / batch                     # a forward pass: about a third of a step
    per_epoch = train_s + val_s
    epochs = epochs_left(deadline - time.time() - 2 * per_step * PROBE_STEPS, train_s, val_s, 1)   # its own probe
    if epochs > LONG_EPOCHS:      # its fold plans from this step instead of timing its own (~1 s of a 42-s budget)
        return SCRATCH_MODEL, (f"from scratch: {epochs} epochs of {SCRATCH_MODEL} fit the budget ({per_epoch:.1f}s "
                               f"each), more than {LONG_EPOCHS}"), Pace(SCRATCH_MODEL, batch, per_step,
                                                                      "the model choice's probe")
    return SHORT_MODEL, (f"from scratch: only {epochs} epoch(s) of {SCRATCH_MODEL} fit the budget ({per_epoch:.1f}s "
                         f"each), {LONG_EPOCHS} or fewer: {SHORT_MODEL}, at half the width, fits more of them"), \
        None


def _batch(cfg, model: str, train_images: int) -> int:
    """The batch `model` would train at (kit.settings.config.batch_for), at most the training images."""
    return max(1, min(batch_for(dataclasses.replace(cfg, model=model)), train_images))


def seconds_per_step(cfg, name: str, task, targets: np.ndarray) -> float:
    """The median time of the kit's own training step (kit.train.step: autocast, AGC, optimizer, EMA) for model
    `name` on a batch of noise images, on the run's device; loading excluded."""
    from timm.optim import create_optimizer_v2
    from timm.utils import ModelEmaV3
    from kit.train.device import resolve_device, resolve_precision
    from kit.train.model import create_model, split_head_params
    from kit.train.objective import Objective
    from kit.train.step import Step
    device = resolve_device(cfg.device)
    state = torch.get_rng_state()
    try:
        model = create_model(name, len(task.names)).to(device)
        optimizer = create_optimizer_v2(model, opt=cfg.optimizer, lr=1e-3, momentum=cfg.momentum, fused=True)
        step = Step(model, model, Objective(task, cfg.label_smoothing), optimizer,
                    ModelEmaV3(model) if cfg.ema else None, split_head_params(model)[0], 0.01, cfg.agc_eps,
                    resolve_precision(cfg.precision, device), device)
        x = torch.randn(len(targets), 3, cfg.img_size, cfg.img_size, device=device)
        y = torch.as_tensor(targets).to(device)
        times = []
        for i in range(PROBE_STEPS + 1):
            t = time.perf_counter()
            step.backward(step.loss(x, y, None))
            step.update(i + 1)
            times.append(time.perf_counter() - t)
        return statistics.median(times[1:])
    finally:
        torch.set_rng_state(state)
