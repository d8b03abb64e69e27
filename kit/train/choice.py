"""`--model auto`: which model a run trains, decided once per run before anything is written, and why.

- A run dir whose folds are trained (or training) keeps their model, so its folds form one ensemble.
- With pretrained weights: the architecture a hub folder's config.json names (--pretrained-file FOLDER), else
  eca_nfnet_l0, the fine-tuning default (timm publishes weights for it).
- From scratch without a time budget: nf_resnet26, the from-scratch default before `auto` existed. At equal epochs it
  learned more per epoch than nf_resnet18 (digits-hard, 8 epochs: +6.9 pt validation accuracy, bench/RESULTS.md).
- From scratch under --time-budget: nf_resnet26 when at least MIN_EPOCHS of its epochs fit the fold's budget (timed
  here on a few real steps), else nf_resnet18 (kit/train/nf_resnet.py), which runs 1.4x-2.4x the images a second
  (FAST_FASTER) and so fits that many more epochs. MIN_EPOCHS is 3, chosen on validation accuracy (bench/RESULTS.md
  "The model under a short budget, and AGC on a BatchNorm net"): where this estimate said 3 epochs of nf_resnet26 fit,
  nf_resnet26 beat nf_resnet18's 6 epochs by +4.3 pt validation on digits-hard (5 folds; +3.6 pt held-out test), and
  at 3-4 epochs it beat nf_resnet18 on average on the AVX-512 CPU's runs too (photo-patches +2.6 pt over 2 folds,
  photo-patches-6k +0.3 pt, digits-hard +6.6 pt on the fold where 3 fit); only at 2 epochs did nf_resnet18 win
  (digits-hard, +6.6 pt validation, one fold). It was 4 before, set on that AVX-512 CPU, where nf_resnet18 is 2.4x
  faster. When nf_resnet26 is chosen, its fold plans from this timed step (a Pace; loading is excluded here, ~3 % of
  a step with the images in memory, which the re-plan after the first epoch takes in) instead of timing its own
  again. When nf_resnet18 is chosen, its fold plans from nf_resnet26's timed step divided by the least
  measured speed-up (a Pace) instead of timing its own: a few seconds saved where the budget is short, and the plan
  made again after its first epoch corrects the estimate (on average it errs towards too few epochs; a noisy probe
  can still plan one too many, which the re-plan takes back).
"""
from __future__ import annotations

import dataclasses
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from kit.evaluate.rundir import RunDir
from kit.train.budget import Pace, epochs_left
from kit.train.model import hub_architecture
from kit.settings.config import batch_for

AUTO = "auto"
FINETUNE_MODEL = "eca_nfnet_l0"
SCRATCH_MODEL = "nf_resnet26"
FAST_MODEL = "nf_resnet18"
MIN_EPOCHS = 3
PROBE_STEPS = 3
# nf_resnet18's training images a second over nf_resnet26's (each at its own batch, 32 px, fp32, 2 CPU cores): 2.36
# on an AVX-512 EPYC (bench/throughput.py, 478 vs 202), 1.42 on an AVX2 EPYC (kit.train.choice.seconds_per_step,
# 12 steps, 5.6 vs 7.7 ms an image); the least, so an estimate from it plans too few epochs rather than too many
FAST_FASTER = 1.4


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
    if epochs >= MIN_EPOCHS:      # its fold plans from this step instead of timing its own (~1 s of a 42-s budget)
        return SCRATCH_MODEL, (f"from scratch: {epochs} epochs of {SCRATCH_MODEL} fit the budget ({per_epoch:.1f}s "
                               f"each), at least {MIN_EPOCHS}"), Pace(SCRATCH_MODEL, batch, per_step,
                                                                     "the model choice's probe")
    fast_batch = _batch(cfg, FAST_MODEL, train_images)
    pace = Pace(FAST_MODEL, fast_batch, per_step / batch * fast_batch / FAST_FASTER,
                f"{SCRATCH_MODEL}'s step timed by the model choice, / {FAST_FASTER}")
    return FAST_MODEL, (f"from scratch: only {epochs} epoch(s) of {SCRATCH_MODEL} fit the budget ({per_epoch:.1f}s "
                        f"each), fewer than {MIN_EPOCHS}: the faster {FAST_MODEL} fits more"), pace


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
