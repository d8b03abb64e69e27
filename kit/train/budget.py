"""--time-budget: how many epochs fit a fold's time budget, from the measured time of its first steps.

The probe runs PROBE_STEPS real training steps (after one warm-up step) and one validation batch on the fold's own
loaders, model and optimizer, then puts back the weights, the optimizer's state and every RNG, so the fold then
trains exactly as it would have (a budget changes how many epochs run, never what one epoch does). The schedule
(warmup, cosine decay) is fitted to the planned epochs; resuming keeps the plan (last.pt and fold<k>/plan.json hold
it). What the startup took is counted against the budget, and SAFETY of it is kept in hand for what the probe
cannot see (checkpoints, the reports between folds).

fold<k>/plan.json  {"budget_s", "epochs", "seconds_per_step", "seconds_per_val_image", "steps_per_epoch",
                    "val_images", "seconds_per_epoch"}
"""
from __future__ import annotations

import copy
import json
import math
import statistics
import time

import torch

from kit.core.atomic import write_text
from kit.core.entry import parse_duration
from kit.train import distributed
from kit.train.agc import adaptive_clip_grad_
from kit.train.device import rng_state, set_rng_state

PROBE_STEPS = 4
SAFETY = 0.05


def budget_seconds(text: str) -> float:
    return parse_duration(text, "m")          # a bare number: minutes


@torch.no_grad()
def _val_seconds_per_image(trainer) -> float:
    model = trainer.eval_model
    model.eval()
    x, y = next(iter(trainer.val_loader))
    x, _ = trainer.batch.eval(x, y)
    t = time.perf_counter()
    model(x)
    return (time.perf_counter() - t) / max(len(x), 1)


def _cycle(trainer):
    """Training batches, epoch after epoch (a tiny fold has fewer batches than the probe takes)."""
    epoch = 0
    while True:
        trainer.train_sampler.set_epoch(epoch)
        yield from trainer.train_loader
        epoch += 1


def _train_seconds_per_step(trainer) -> float:
    net, batch, objective = trainer.net, trainer.batch, trainer.objective
    net.train()
    batches = _cycle(trainer)
    times = []
    for step in range(PROBE_STEPS + 1):
        t = time.perf_counter()
        x, y = next(batches)
        x, y, _ = batch.train(x, y, 0, step)
        loss = objective.train_loss(net(x), y)
        loss.backward()
        adaptive_clip_grad_(trainer.body_params, trainer.agc_clip, trainer.cfg.agc_eps)
        trainer.optimizer.step()
        trainer.optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t)
    return statistics.median(times[1:])


def plan(trainer, started: float) -> dict:
    """The fold's epochs under its budget, measured on its own first steps (every rank takes rank 0's plan)."""
    cfg = trainer.cfg
    saved = (copy.deepcopy(trainer.model.state_dict()), copy.deepcopy(trainer.optimizer.state_dict()), rng_state())
    try:
        per_step = _train_seconds_per_step(trainer)
        per_image = _val_seconds_per_image(trainer) if trainer.data.val_rows.size else 0.0
    finally:
        trainer.model.load_state_dict(saved[0])
        trainer.optimizer.load_state_dict(saved[1])
        set_rng_state(saved[2])
    budget = budget_seconds(cfg.time_budget)
    val_images = len(trainer.data.val_rows)
    per_epoch = trainer.batches_per_epoch * per_step + val_images * per_image
    left = budget * (1 - SAFETY) - (time.time() - started)
    epochs = max(1, math.floor(left / per_epoch))
    result = {"budget_s": budget, "epochs": epochs, "seconds_per_step": per_step, "seconds_per_val_image": per_image,
              "steps_per_epoch": trainer.batches_per_epoch, "val_images": val_images, "seconds_per_epoch": per_epoch}
    return distributed.gather(result)[0]


def save(path, result: dict) -> None:
    write_text(path, json.dumps(result) + "\n")


def load(path) -> dict | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
