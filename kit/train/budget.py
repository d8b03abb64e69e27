"""--time-budget: how many epochs fit a fold's time budget, from the measured time of its first steps.

The probe runs PROBE_STEPS real training steps (after one warm-up step) through the Trainer's own Step
(kit.train.step: autocast, loss scaling, AGC, optimizer, EMA) on the fold's own loaders, and one validation batch,
once the Trainer is complete; then it puts back the weights, optimizer, scaler and EMA states and every RNG, so the
fold trains exactly as it would have (a budget changes how many epochs run, never what one epoch does). The probe
is skipped where the same model's step at the same batch was already timed in this process (a `Pace`): by
`--model auto`'s choice (kit.train.choice) for a run's first fold, by the fold before for the next ones. Each probe
costs a few seconds, a tenth of a budget of half a minute; the re-plan after the first epoch corrects an estimate.

The plan is whole epochs and then, in the seconds they leave, one partial epoch: the first `last_epoch_steps` batches
of its epoch's order (at least MIN_PART of an epoch, else the seconds are left). Whole epochs alone left up to 0.97
of an epoch of a 42-s budget untrained (digits-hard seed 1: three of five folds left 6-8 s, bench/RESULTS.md "Equal
wall time, a second seed"). The schedule (warmup, cosine decay) is fitted to the updates planned, the partial
epoch's included, so the last update reaches min_lr. After the first epoch, its validation and last.pt included,
the plan is made again from that epoch's real time (`replan`): a few steps can misjudge an epoch (one fold ran 41 %
over its budget on the probe alone, bench/RESULTS.md), and what an epoch costs beyond its steps and its validation
(last.pt, best.pt, the OOF and metrics.csv written: 0.43-0.59 s of an ~8-s nf_resnet26 epoch on digits-hard, last.pt
alone 168 MB fsynced in 0.35-0.43 s) is known only then; the partial epoch made the plans tight enough for it to
matter (42-s runs ended at 43.6 s on average without it, 41.2 s with it; bench/RESULTS.md "A partial last epoch").
Resuming keeps the plan (last.pt and fold<k>/plan.json hold it).

What the fold's start-up took counts against the budget: for a run's first fold, from the process's start
(imports, reading the data, the cache); SAFETY of the budget, and at least RESERVE_S, is kept in hand for what
follows the last epoch (the best weights and OOF written, the reports drawn).

Validation under a budget: when scoring the fold's validation images would take more than VAL_SHARE of an epoch's
time, the fold is scored every `val_every` epochs (and always after the last), and the plan counts it.

fold<k>/plan.json  (every fold; the budget's fields are null without one)
                   {"budget_s", "epochs", "first_plan_epochs", "replanned", "seconds_per_step",
                    "seconds_per_val_image", "steps_per_epoch", "last_epoch_steps", "val_images", "val_every",
                    "seconds_per_epoch", "epoch_overhead_s", "warmup_epochs", "startup_s", "precision", "batch_size",
                    "lr", "agc", "model", "model_why",
                    "pace_from"}
  epochs: the plan in force (the `epochs` setting without a budget) (after the re-plan once the first epoch ran), the
          partial last epoch counted; first_plan_epochs: the probe's;
  last_epoch_steps: the batches the last epoch trains (steps_per_epoch when it is whole, always without a budget);
  replanned: the first epoch's training seconds when the plan was made again from it (null until then);
  epoch_overhead_s: what the first epoch took beyond its steps and its validation (checkpoints, OOF, history), counted
                    in every later epoch's seconds_per_epoch (null until the re-plan);
  agc: the AGC clip factor in force and why, e.g. "0.1131 (auto)", "off (auto: the model has BatchNorm2d layers)"
  model, model_why: the model trained and why (kit.train.choice, for --model auto; else "set by --model")
  pace_from: where seconds_per_step came from: "this fold's probe", "the model choice's probe", "fold <k>'s
             steps" (null without a budget)
"""
from __future__ import annotations

import json
import math
import statistics
import time
from dataclasses import dataclass

import torch

from kit.core.atomic import write_text
from kit.core.entry import parse_duration
from kit.train import distributed
from kit.train.device import rng_state, set_rng_state

PROBE_STEPS = 4
SAFETY = 0.05
RESERVE_S = 3.0          # at least this much kept for the end of the fold (reports: ~1-2 s measured at 32 px)
VAL_SHARE = 0.10
MIN_PART = 0.1           # a partial last epoch under this share of an epoch is not trained: mostly its validation


@dataclass(frozen=True)
class Pace:
    """A training step's measured seconds for one model at one per-process batch, and where they were measured:
    what a fold's plan starts from instead of probing again."""
    model: str
    batch_size: int
    seconds_per_step: float
    source: str

    def fits(self, trainer) -> bool:
        return (self.model, self.batch_size) == (trainer.cfg.model, trainer.batch_size) and self.seconds_per_step > 0


def budget_seconds(text: str) -> float:
    return parse_duration(text, "m")          # a bare number: minutes


@torch.no_grad()
def _val_seconds_per_image(trainer) -> float:
    model = trainer.eval_model
    model.eval()
    x, y = next(iter(trainer.val_loader))
    x, _ = trainer.batch.eval(x, y)
    times = []
    for _ in range(2):                         # the first call builds the kernels
        t = time.perf_counter()
        with trainer.eval_precision.autocast(trainer.device):
            model(x)
        times.append(time.perf_counter() - t)
    return times[-1] / max(len(x), 1)


def _cycle(trainer):
    """Training batches, epoch after epoch (a tiny fold has fewer batches than the probe takes)."""
    epoch = 0
    while True:
        trainer.train_sampler.set_epoch(epoch)
        yield from trainer.train_loader
        epoch += 1


def _train_seconds_per_step(trainer) -> float:
    """The median time of the Trainer's own step on its own batches (loading and augmentation included)."""
    step, batch = trainer.step, trainer.batch
    trainer.net.train()
    batches = _cycle(trainer)
    times = []
    for i in range(PROBE_STEPS + 1):
        t = time.perf_counter()
        x, y = next(batches)
        x, y, mix = batch.train(x, y, 0, i)
        step.backward(step.loss(x, y, mix))
        step.update(i + 1)
        times.append(time.perf_counter() - t)
    return statistics.median(times[1:])


def steady_seconds(times: list[float]) -> float | None:
    """A step's seconds once the kernels are built: the median of an epoch's steps after its first quarter."""
    return statistics.median(times[len(times) // 4:]) if times else None


def val_every(setting: int | None, train_s: float, val_s: float) -> int:
    """`setting` if given; else the least N that keeps validation under VAL_SHARE of the time."""
    if setting:
        return setting
    if train_s <= 0 or val_s <= 0:
        return 1
    return max(1, math.ceil(val_s * (1 - VAL_SHARE) / (VAL_SHARE * train_s)))


def deadline(time_budget: str, started: float) -> float:
    """When a fold's last epoch must end: its budget from `started`, less what is kept for after it."""
    budget = budget_seconds(time_budget)
    return started + budget - max(SAFETY * budget, RESERVE_S)


def _deadline(trainer) -> float:
    return deadline(trainer.cfg.time_budget, trainer.started)


def epochs_left(left_s: float, train_s: float, val_s: float, every: int) -> int:
    """Epochs that fit `left_s` seconds: n epochs cost n x train_s and about n / every + (1 - 1 / every)
    validations (every `every`-th epoch, and always the last)."""
    return max(0, math.floor((left_s - val_s * (1 - 1 / every)) / (train_s + val_s / every)))


def epochs_that_fit(left_s: float, per_step: float, steps: int, val_s: float, every: int,
                    overhead_s: float = 0.0) -> tuple[int, int]:
    """(whole epochs, batches of one more, partial epoch or 0) that fit `left_s` seconds with their validations and
    each epoch's `overhead_s`: the whole ones as `epochs_left`; the partial one in what they leave after its own
    validation (the last epoch is always scored) and overhead, from MIN_PART of an epoch's `steps` to one batch short
    of a whole epoch."""
    train_s = steps * per_step + overhead_s
    whole = epochs_left(left_s, train_s, val_s, every)
    spare = left_s - whole * train_s - math.ceil((whole + 1) / every) * val_s - overhead_s
    part = min(steps - 1, math.floor(spare / per_step)) if per_step > 0 else 0
    return whole, part if part >= max(1, MIN_PART * steps) else 0


def plan(trainer) -> dict:
    """The fold's plan: what it trains and for how many epochs. Under a budget the epochs are measured on the
    fold's own first steps (every rank takes rank 0's plan); without one they are the `epochs` setting."""
    cfg = trainer.cfg
    record = {"budget_s": None, "epochs": cfg.epochs, "first_plan_epochs": cfg.epochs, "replanned": None,
              "seconds_per_step": None, "seconds_per_val_image": None, "steps_per_epoch": trainer.batches_per_epoch,
              "last_epoch_steps": trainer.batches_per_epoch, "val_images": len(trainer.data.val_rows),
              "val_every": cfg.val_every or 1, "seconds_per_epoch": None,
              "epoch_overhead_s": None, "warmup_epochs": cfg.warmup_epochs, "startup_s": time.time() - trainer.started,
              "precision": trainer.precision.name, "batch_size": trainer.batch_size, "lr": trainer.lr,
              "agc": trainer.agc_note(), "model": cfg.model, "model_why": trainer.model_why, "pace_from": None}
    if not cfg.time_budget:
        return record
    known = trainer.pace if trainer.pace is not None and trainer.pace.fits(trainer) else None
    saved, rng = None if known else trainer.step.snapshot(), rng_state()    # only a training probe changes weights
    try:
        per_step = known.seconds_per_step if known else _train_seconds_per_step(trainer)
        per_image = _val_seconds_per_image(trainer) if trainer.data.val_rows.size else 0.0
    finally:
        if saved is not None:
            trainer.step.restore(saved)
        set_rng_state(rng)                          # a loader's iterator draws its seed from the global RNG
    train_s, val_s = trainer.batches_per_epoch * per_step, record["val_images"] * per_image
    every = val_every(cfg.val_every, train_s, val_s)
    steps = trainer.batches_per_epoch
    whole, part = epochs_that_fit(_deadline(trainer) - time.time(), per_step, steps, val_s, every)
    epochs, last = (whole + 1, part) if whole and part else (max(1, whole), steps)     # one whole epoch at least
    record.update(budget_s=budget_seconds(cfg.time_budget), epochs=epochs, first_plan_epochs=epochs,
                  last_epoch_steps=last, seconds_per_step=per_step, seconds_per_val_image=per_image, val_every=every,
                  seconds_per_epoch=train_s + val_s / every,
                  warmup_epochs=min(cfg.warmup_epochs, (epochs - 1 + last / steps) / 5),
                  startup_s=time.time() - trainer.started, pace_from=known.source if known else "this fold's probe")
    return distributed.gather(record)[0]


def replan(trainer, train_seconds: float, val_seconds: float | None, epoch_seconds: float) -> dict:
    """The plan again once the first epoch is over (its validation and checkpoints written): as many more epochs as
    fit the time left at its pace. A step's time is the median of its steps (loading included) after the first
    ones, which build the kernels and would make every later epoch look slower than it is; validation is what the
    first one took (`val_seconds`; None when it was not scored: the planned rate); the rest of the epoch's
    `epoch_seconds` past `train_seconds` and the validation is each later epoch's overhead."""
    p = trainer.plan
    steps = p["steps_per_epoch"]
    per_step = steady_seconds(trainer.step_seconds) or train_seconds / steps
    planned_val = p["val_images"] * p["seconds_per_val_image"]
    val_s = val_seconds if val_seconds is not None else planned_val
    overhead = max(0.0, epoch_seconds - train_seconds - (val_seconds or 0.0))
    left = _deadline(trainer) - time.time()
    more, part = epochs_that_fit(left, per_step, steps, val_s, p["val_every"], overhead)
    result = {**p, "epochs": 1 + more + (part > 0), "last_epoch_steps": part or steps, "replanned": train_seconds,
              "seconds_per_epoch": per_step * steps + overhead + val_s / p["val_every"], "epoch_overhead_s": overhead}
    return distributed.gather(result)[0]


def save(path, result: dict) -> None:
    write_text(path, json.dumps(result) + "\n")


def load(path) -> dict | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def epochs_text(p: dict) -> str:
    """A plan.json's epochs (kit.train.budget): "4 epochs", or "4 epochs, the last 41 of 68 batches" when its last
    epoch is partial."""
    return f"{p['epochs']} epochs{partial_text(p)}"


def partial_text(p: dict) -> str:
    """', the last 41 of 68 batches' when a plan's last epoch is partial, else ''."""
    last, steps = p.get("last_epoch_steps"), p.get("steps_per_epoch")
    return f", the last {last} of {steps} batches" if last and steps and last < steps else ""
