"""Train one fold: a small Trainer (fit -> train_epoch / evaluate) over the pieces built in its constructor.

Determinism: the data order of an epoch and the augmentation of every sample are pure functions of
(seed, epoch, position) (kit.train.loader), and the rest of the randomness (init, dropout) comes from torch's global
RNG, whose state goes into every resumable checkpoint. So a resumed run replays exactly what an uninterrupted
one does.
"""
from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from timm.optim import create_optimizer_v2
from timm.scheduler import CosineLRScheduler
from timm.utils import ModelEmaV3
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from kit.store import state
from kit.train import budget, distributed
from kit.train.agc import clip_factor, norm_layer
from kit.train.augment import TrainAugment, policy_name
from kit.train.batch import DeviceBatch, Mixer
from kit.train.cache import ImageStore
from kit.settings.config import Config, batch_for, mixing, save_config, scaled_lr, test_size
from kit.core.table import Table
from kit.train.device import (activation_layout, keep_freed_memory, make_deterministic, resolve_device,
                              resolve_precision, rng_state, seed_everything, set_rng_state)
from kit.core.errors import KitError
from kit.train.loader import EpochSampler, ImageDataset, class_balance, make_loader, start_workers, worker_errors
from kit.train.model import ImageNormalizer, create_model, normalization, split_head_params
from kit.train.keep import keeper_for
from kit.train.objective import Objective
from kit.train.step import Step
from kit.train.teacher import Teaching
from kit.train.tracking import Tracking
from kit.store.oof import Epoch, Oof, write_history
from kit.store.rundir import FULL, RunDir
from kit.core.task import Task

log = logging.getLogger(__name__)


@dataclass
class FoldData:
    """One fold's share of the competition: its training and validation rows of train.csv, and for a student
    (kit.train.teacher) the packed targets of its training images and the pseudo-labelled test images after them."""
    table: Table
    targets: np.ndarray             # the task's encoding of every train.csv row (validation, OOF)
    fold_of_row: np.ndarray
    fold: int | str                 # a fold number, or FULL
    teaching: Optional[Teaching] = None

    @property
    def val_rows(self) -> np.ndarray:
        return np.flatnonzero(self.fold_of_row == self.fold) if self.fold != FULL else np.zeros(0, np.int64)

    @property
    def train_rows(self) -> np.ndarray:
        """Indices into `paths`: the train.csv rows outside the fold, then the pseudo-labelled images."""
        rows = np.flatnonzero(self.fold_of_row != self.fold) if self.fold != FULL else np.arange(len(self.table.ids))
        extra = len(self.teaching.extra_paths) if self.teaching else 0
        return np.concatenate([rows, len(self.table.ids) + np.arange(extra)]).astype(np.int64)

    @property
    def labelled_train_rows(self) -> np.ndarray:
        """The training rows of train.csv (no pseudo-labelled image): what class counts are taken over."""
        rows = self.train_rows
        return rows[rows < len(self.table.ids)]

    @property
    def paths(self) -> list:
        return self.table.paths + (self.teaching.extra_paths if self.teaching else [])

    @property
    def train_targets(self) -> np.ndarray:
        """What the loss sees per item of `paths`: the encoded labels, or a student's packed targets."""
        return self.teaching.targets if self.teaching else self.targets

    @property
    def seed_offset(self) -> int:
        """Added to the seed for this fold's initial weights and data order (the full model: one past the folds)."""
        return self.fold if self.fold != FULL else int(self.fold_of_row.max()) + 1


@dataclass
class FoldResult:
    fold: int | str
    best_epoch: int
    best_score: float              # NaN for the full model
    oof: Optional[Oof]             # predictions of the best checkpoint for the fold's validation rows (full: None)
    seconds: float
    pace: Optional[budget.Pace] = None      # its last epoch's steady step: the next fold's plan starts from it


def sampling_weights(task: Task, data: FoldData, rule: str) -> np.ndarray | None:
    """Per training item, its class's weight under `rule` (kit.train.loader.class_balance); pseudo-labelled test
    images, which have no class, weigh the mean."""
    if rule == "none":
        return None
    rows = data.labelled_train_rows
    weights = class_balance(task.sampling_classes(data.targets[rows]), rule)
    return np.concatenate([weights, np.full(len(data.train_rows) - len(rows), weights.mean())])


def worker_errors_in(batches, what: str):
    """The batches of a loader, a worker's error re-raised as its one line (kit.train.loader.worker_errors)."""
    iterator = iter(batches)
    while True:
        with worker_errors(what):
            batch = next(iterator, None)
        if batch is None:
            return
        yield batch


def _all_finite(module: torch.nn.Module) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in module.state_dict().values() if t.is_floating_point())


class Trainer:
    """Everything one fold's training needs, built once; `fit` runs the epochs."""

    def __init__(self, cfg: Config, task: Task, data: FoldData, run: RunDir, dist: distributed.Dist,
                 resume: bool = False, force_resume: bool = False, images: ImageStore | None = None,
                 started: float | None = None, model_why: str = "set by --model", pace: budget.Pace | None = None,
                 track: Tracking | None = None):
        """`images`: the run's decoded images (kit.train.cache), shared by its folds; `started`: when this fold's
        time budget began (the process's start for a run's first fold: its start-up counts); `model_why`: why
        this model (kit.train.choice), for the plan; `pace`: a step already timed in this process (kit.train.budget),
        which a --time-budget plans from instead of probing again; `track`: the run's trackers (kit.train.tracking),
        told every epoch."""
        started = started or time.time()
        self.model_why, self.pace, self.step_seconds, self.track = model_why, pace, [], track
        self.cfg, self.task, self.data, self.run, self.dist, self.fold = cfg, task, data, run, dist, data.fold
        device = resolve_device(cfg.device)
        if device.type == "cuda" and dist.active:
            device = torch.device("cuda", dist.local_rank)
        self.device = device
        self.precision = resolve_precision(cfg.precision, device)
        # validation in fp32 on the CPU (it is cheap there next to training, and the OOF outputs then are what the
        # exported fp32 graph computes); under CUDA autocast as training
        self.eval_precision = self.precision if device.type == "cuda" else resolve_precision("fp32", device)
        keep_freed_memory()
        if cfg.deterministic:
            make_deterministic()
        self.identity = state.identity(cfg, task, self.fold, state.split_fingerprint(data.table.ids, data.val_rows),
                                       dist.world)
        self.resumable = None
        if resume and run.last(self.fold).is_file():      # checked before anything is built for it
            self.resumable = state.load_resumable(run.last(self.fold), self.identity, force_resume)
        seed_everything(cfg.seed + data.seed_offset)      # the same initial weights on every rank

        train_rows = data.train_rows
        self.batch_size = max(1, min(batch_for(cfg), len(train_rows) // dist.world))     # per process
        self.train_sampler = EpochSampler(train_rows, cfg.seed + data.seed_offset, True, self.batch_size, dist.rank,
                                          dist.world, sampling_weights(task, data, cfg.sampler))
        self._loaders(images or ImageStore(cfg.cache_images, cfg.cache_memory_mb))

        memory_format = activation_layout(cfg.channels_last, device)
        self.model = create_model(cfg.model, len(task.names), cfg.pretrained, cfg.pretrained_file, cfg.drop_rate,
                                  cfg.drop_path_rate).to(device, memory_format=memory_format)
        if dist.active:
            torch.manual_seed(cfg.seed + data.seed_offset + 7919 * dist.rank)      # independent dropout per rank
        self.mean, self.std = normalization(self.model, cfg.mean, cfg.std)
        self.body_params, _ = split_head_params(self.model)     # AGC clips these: every parameter but the head
        # under torchrun, DDP averages gradients during backward, so AGC sees the same gradients on every rank
        self.net = DistributedDataParallel(self.model, device_ids=[device.index] if device.type == "cuda" else None) \
            if dist.active else self.model
        self.batches_per_epoch = self.train_sampler.global_batches
        # fused: one kernel for the whole update instead of several passes per tensor; on the CPU it measured
        # 3x faster for SGD (10 vs 32 ms a step on eca_nfnet_l0), bit-identical. layer_decay: timm's lr_scale groups
        self.lr = cfg.lr if cfg.lr is not None else scaled_lr(cfg, self.batch_size * cfg.accum_steps * dist.world)
        self.optimizer = create_optimizer_v2(self.model, opt=cfg.optimizer, lr=self.lr, weight_decay=cfg.weight_decay,
                                             momentum=cfg.momentum, fused=True, layer_decay=cfg.layer_decay)
        # lambda of the global batch per optimizer step, the batch the gradient is averaged over
        self.norm_layer = norm_layer(self.model)
        self.agc_clip = clip_factor(cfg.agc_clip, self.batch_size * cfg.accum_steps * dist.world, cfg.optimizer,
                                    self.norm_layer)
        if self.norm_layer and self.agc_clip > 0:
            log.warning(f"fold {self.fold}: AGC {self.agc_clip} on {cfg.model}, a net with {self.norm_layer} layers: "
                        f"AGC is for normalizer-free nets, and it kept a BatchNorm resnet18 from learning at all (bench/"
                        f"RESULTS.md); --agc-clip auto turns it off for such a net")
        self.objective = Objective(task, cfg.label_smoothing, cfg.distill_weight if data.teaching else None,
                                   cfg.distill_temperature,
                                   task.class_weights(data.targets[data.labelled_train_rows])
                                   if cfg.class_weights == "auto" else None,
                                   cfg.focal_gamma if cfg.loss == "focal" else None).to(device)
        self.ema = ModelEmaV3(self.model, decay=cfg.ema_decay, use_warmup=True) if cfg.ema else None
        self.batch = DeviceBatch(ImageNormalizer(self.mean, self.std), device, memory_format)
        self.step = Step(self.net, self.model, self.objective, self.optimizer, self.ema, self.body_params,
                         self.agc_clip, cfg.agc_eps, self.precision, device, cfg.accum_steps)
        self.started = started
        self.plan = self._plan()           # a --time-budget times self.step: everything above exists
        self.epochs, self.val_every, self.last_epoch_steps = (self.plan["epochs"], self.plan["val_every"],
                                                              self.plan["last_epoch_steps"])  # a budget's partial epoch
        if mixing(cfg):
            self.batch.mixer = Mixer(cfg, self.batch_size, self.epochs)
        self._schedule()
        self.keeper = keeper_for(self)      # its best scored epoch, or the full model's last (kit.train.keep)
        self.identity.update(mean=self.mean, std=self.std)
        self.progress = state.Progress()
        self.saved_at: str | None = None         # where last.pt stands, for messages

    def _loaders(self, images: ImageStore) -> None:
        """The training and validation loaders over the fold's images: decoded into memory once (kit.train.cache)
        or from the files every epoch; the augmentation runs in this process unless worker processes are asked
        for (or the per-image policies need them: RandAugment, TrivialAugment, or images read from the files)."""
        cfg, data, dist = self.cfg, self.data, self.dist
        self.test_size = test_size(cfg)
        train, val, self.cached = images.sources(cfg, data.paths, data.table.paths)
        workers = cfg.num_workers if cfg.num_workers is not None else \
            0 if self.cached and policy_name(cfg) is None else 2
        pin = self.device.type == "cuda"
        self.train_loader = make_loader(ImageDataset(train, data.train_targets, TrainAugment(cfg)),
                                        self.train_sampler, self.batch_size, workers, pin, cfg.seed)
        self.val_loader = make_loader(ImageDataset(val, data.targets),
                                      EpochSampler(data.val_rows, 0, False, rank=dist.rank, world=dist.world),
                                      self.batch_size * 2, workers, pin, cfg.seed)
        for loader in (self.train_loader, self.val_loader):
            start_workers(loader)

    def _plan(self) -> dict:
        """The fold's plan (kit.train.budget): under --time-budget the epochs that fit, measured on this fold's
        first steps; or the plan a resumed fold was started with."""
        saved = (self.resumable or {}).get("plan")
        if saved and saved.get("budget_s") and self.cfg.time_budget:     # a budget's epochs were measured: kept
            return {"last_epoch_steps": self.batches_per_epoch, **saved}     # (saved before partial epochs: whole)
        result = budget.plan(self)
        if self.dist.main:
            budget.save(self.run.plan(self.fold), result)
        if self.cfg.time_budget:
            every = f", validating every {result['val_every']} epochs and after the last" if result["val_every"] > 1 \
                else ""
            log.info(f"fold {self.fold}: time budget {self.cfg.time_budget}: {result['seconds_per_epoch']:.1f}s an "
                     f"epoch measured ({result['seconds_per_step'] * 1000:.0f} ms a step from {result['pace_from']}, "
                     f"start-up {result['startup_s']:.1f}s) -> {budget.epochs_text(result)}{every}")
        return result

    def _replan(self, train_seconds: float, val_seconds: float | None, epoch_seconds: float) -> None:
        """After the first epoch, the plan again from its real pace (the probe's few steps can misjudge an epoch, and
        the checkpoints' time is known only now); the schedule is fitted to the new count from the next update on,
        and last.pt is written again so that a resume follows the new plan. The first epoch is warmup (or a fifth
        of the epochs), which the new schedule keeps."""
        new = budget.replan(self, train_seconds, val_seconds, epoch_seconds)
        if (new["epochs"], new["last_epoch_steps"]) != (self.epochs, self.last_epoch_steps):
            log.info(f"fold {self.fold}: the first epoch ran at {new['seconds_per_epoch']:.1f}s an epoch: "
                     f"{budget.epochs_text(new)} fit the budget instead of {budget.epochs_text(self.plan)}")
            self.epochs, self.last_epoch_steps = new["epochs"], new["last_epoch_steps"]
            if self.batch.mixer is not None:
                self.batch.mixer = Mixer(self.cfg, self.batch_size, self.epochs)
            self._schedule()
            self.scheduler.step_update(self.progress.updates)
        self.plan = new
        if self.dist.main:
            budget.save(self.run.plan(self.fold), new)
        self.save_last()

    def _schedule(self) -> None:
        """Linear warmup then cosine decay over this fold's updates (a budget's plan: its warmup at most a fifth, and
        its partial last epoch's updates counted)."""
        cfg = self.cfg
        updates_per_epoch = math.ceil(self.batches_per_epoch / cfg.accum_steps)
        updates = updates_per_epoch * (self.epochs - 1) + math.ceil(self.last_epoch_steps / cfg.accum_steps)
        warmup = int(self.plan["warmup_epochs"] * updates_per_epoch)
        # warmup_prefix: the cosine follows the warmup, so together they span the fold's updates and the last one
        # reaches min_lr (until 2026-12-06 the cosine spanned them all after the warmup and never ended: an 8-epoch
        # run finished at 3.8 % of the peak, a 4-epoch one at 15 %)
        self.scheduler = CosineLRScheduler(self.optimizer, t_initial=max(1, updates - warmup),
                                           lr_min=cfg.min_lr, warmup_t=warmup, warmup_lr_init=self.lr * 0.01,
                                           warmup_prefix=True, t_in_epochs=False)

    @property
    def eval_model(self) -> torch.nn.Module:
        return self.ema.module if self.ema is not None else self.model

    # --- the loop ---------------------------------------------------------------------------------------------

    def fit(self) -> FoldResult:
        t0 = time.time()
        if self.resumable is not None:
            self._resume()
        cfg, p = self.cfg, self.progress
        self.scheduler.step_update(p.updates)
        self._log_start()
        while p.epoch < self.epochs:
            e0, whole = time.time(), p.step_in_epoch == 0
            train_loss, train_rate = self.train_epoch()
            trained, val_seconds = time.time() - e0, None
            if self.keeper.scores(p.epoch + 1):
                probs, val_loss = self.evaluate()
                val_score = self.task.score(cfg.metric, self.data.targets[self.data.val_rows], probs)
                val_seconds = time.time() - e0 - trained
            else:                                   # an epoch not scored (every epoch of the full model)
                probs, val_loss, val_score = None, math.nan, math.nan
            self._check_finite(train_loss, val_loss)
            p.epoch += 1
            p.step_in_epoch = 0
            improved = self.keeper.epoch_end(probs, val_score)
            p.history.append(Epoch(p.epoch, max(g["lr"] for g in self.optimizer.param_groups), train_loss, val_loss, cfg.metric,
                                   val_score, improved, time.time() - e0, train_rate))
            if self.dist.main:
                write_history(self.run.history(self.fold), p.history)
            if self.track is not None:
                self.track.epoch(self.fold, p.history[-1])
            self.save_last()
            log.info(f"fold {self.fold} epoch {p.epoch}/{self.epochs}: train_loss {train_loss:.4f} val_loss "
                     f"{val_loss:.4f} {cfg.metric} {val_score:.4f}{' *' if improved else ''} ({time.time() - e0:.1f}s)")
            if self.cfg.time_budget and p.epoch == 1 and whole and self.plan.get("replanned") is None:
                self._replan(trained, val_seconds, time.time() - e0)     # the whole first epoch is timed
        return self._finish(t0)

    def batches_in(self, epoch: int) -> int:
        """The batches epoch `epoch` (0-based) trains: every one, or a budget's partial last epoch's first ones."""
        return self.last_epoch_steps if epoch == self.epochs - 1 else self.batches_per_epoch

    def _log_start(self) -> None:
        cfg, d = self.cfg, self.dist
        tested = f" (tested at {self.test_size}px)" if self.test_size != cfg.img_size else ""
        extra = len(self.data.train_rows) - int((self.data.train_rows < len(self.data.table.ids)).sum())
        log.info(f"fold {self.fold}: {len(self.data.train_rows) - extra} train{f' + {extra} pseudo-labelled' if extra else ''}"
                 f" / {len(self.data.val_rows)} val images, {cfg.model} @ {cfg.img_size}px{tested}"
                 f"{f', recipe {cfg.recipe}' if cfg.recipe else ''}{', distilled' if self.data.teaching else ''}, "
                 f"device {self.device} ({self.precision.name}), batch {self.batch_size}x{cfg.accum_steps}"
                 f"{f' on each of {d.world} processes' if d.active else ''}, lr {self.lr:.4g}, "
                 f"images {'in memory' if self.cached else 'read from the files every epoch'}, "
                 f"AGC {self.agc_note()}")

    def agc_note(self) -> str:
        """The clip factor in force and where it came from, e.g. "off (auto: the model has BatchNorm2d layers)"."""
        why = "" if self.cfg.agc_clip != "auto" else \
            f" (auto: the model has {self.norm_layer} layers)" if self.norm_layer else " (auto)"
        return f"{'off' if self.agc_clip == 0 else self.agc_clip}{why}"

    def _check_finite(self, train_loss: float, val_loss: float) -> None:
        if self.keeper.scores(self.progress.epoch + 1) and not math.isfinite(val_loss):
            self._diverged(f"the validation loss is {val_loss}", epoch=self.progress.epoch + 1)
        if not math.isfinite(train_loss) or not _all_finite(self.eval_model):
            self._diverged("the weights are no longer finite", epoch=self.progress.epoch + 1)

    def _finish(self, t0: float) -> FoldResult:
        """The kept model (kit.train.keep), read back from best.pt."""
        cfg, fold = self.cfg, self.fold
        self.keeper.finish()
        distributed.barrier()                           # rank 0's files are complete before anyone reads them
        if not self.run.best(fold).is_file():
            raise KitError(f"fold {fold}: no epoch produced a finite {cfg.metric}; nothing to keep. Check the "
                           f"labels and the metric")
        best = state.read_best(self.run.best(fold))
        steady = budget.steady_seconds(self.step_seconds)
        pace = budget.Pace(cfg.model, self.batch_size, steady, f"fold {fold}'s steps") if steady else None
        kept, score, oof = self.keeper.described(best)
        log.info(f"fold {fold}: {kept} -> {self.run.best(fold)}")
        return FoldResult(fold, best.epoch, score, oof, time.time() - t0, pace)

    def train_epoch(self) -> tuple[float, float]:
        """One pass over the training rows (from where a resumed epoch stopped). Returns (mean loss, images/s)."""
        cfg, p, d = self.cfg, self.progress, self.dist
        e0 = time.time()
        self.net.train()
        batches = self.batches_in(p.epoch)
        self.train_sampler.set_epoch(p.epoch, start_batch=p.step_in_epoch, stop_batch=batches)
        loss_sum = torch.zeros((), device=self.device)
        seen, self.step_seconds, t = 0, [], time.perf_counter()
        bar = tqdm(self.train_loader, total=batches - p.step_in_epoch, disable=None if d.main else True,
                   leave=False, desc=f"fold {self.fold} epoch {p.epoch + 1}/{self.epochs}")
        for x, y in worker_errors_in(bar, f"fold {self.fold}, epoch {p.epoch + 1}"):
            x, y, mix = self.batch.train(x, y, p.epoch, p.step_in_epoch)
            p.step_in_epoch += 1
            optimizer_step = p.step_in_epoch % cfg.accum_steps == 0 or p.step_in_epoch == batches
            with self.net.no_sync() if d.active and not optimizer_step else contextlib.nullcontext():
                loss = self.step.loss(x, y, mix)
                self._check_loss(loss)
                self.step.backward(loss)
            loss_sum += loss.detach()
            seen += 1
            if optimizer_step:
                p.updates += 1
                self.step.update(p.updates)
                self.scheduler.step_update(p.updates)
                if cfg.save_every_steps and p.updates % cfg.save_every_steps == 0 and p.step_in_epoch < batches:
                    self.save_last()
            if bar.total and seen % 10 == 0:
                bar.set_postfix(loss=f"{loss_sum.item() / seen:.4f}")
            self.step_seconds.append(time.perf_counter() - t)     # loading included; --time-budget's re-plan
            t = time.perf_counter()
        bar.close()
        losses = distributed.gather((loss_sum.item(), seen))
        images = sum(n for _, n in losses) * self.batch_size
        return sum(l for l, _ in losses) / max(sum(n for _, n in losses), 1), images / (time.time() - e0)

    @torch.no_grad()
    def evaluate(self) -> tuple[np.ndarray, float]:
        """Predictions for every validation row (every rank holds them all) and the mean validation loss."""
        model = self.eval_model
        model.eval()
        preds, loss_sum = [], 0.0
        for x, y in worker_errors_in(self.val_loader, f"fold {self.fold}, validation"):
            x, y = self.batch.eval(x, y)
            with self.eval_precision.autocast(self.device):
                logits = model(x).float()
            loss_sum += self.objective.eval_loss_sum(logits, y).item()
            preds.append(self.objective.activate(logits).cpu().numpy())
        shares = distributed.gather((np.concatenate(preds).astype(np.float64), loss_sum))
        n = len(self.data.val_rows)
        full = np.empty((n, shares[0][0].shape[1]), dtype=np.float64)
        for rank, (part, _) in enumerate(shares):
            full[rank::self.dist.world] = part
        return full, sum(loss for _, loss in shares) / n

    # --- state ------------------------------------------------------------------------------------------------

    def save_last(self) -> None:
        """The resumable state, only ever a finite one (so last.pt is always a state worth resuming)."""
        rng = distributed.gather(rng_state())       # every rank's dropout stream, for an exact resume
        if self.dist.main and _all_finite(self.model):
            p = self.progress
            state.save_last(self.run.last(self.fold), self.identity, self.model, self.optimizer, self.step.scaler,
                            self.ema, p, rng, self.plan)
            self.saved_at = f"epoch {p.epoch + 1}, batch {p.step_in_epoch}" if p.step_in_epoch \
                else f"the end of epoch {p.epoch}"

    def _resume(self) -> None:
        self.progress, ranks = state.restore(self.resumable, self.model, self.optimizer, self.step.scaler, self.ema)
        self.resumable = None
        set_rng_state(ranks[self.dist.rank % len(ranks)])
        p = self.progress
        self.saved_at = "the resumed state"
        if p.epoch < self.epochs:
            log.info(f"fold {self.fold}: resuming at epoch {p.epoch + 1}, batch {p.step_in_epoch} ({p.updates} "
                     f"optimizer steps done)")
        else:
            log.info(f"fold {self.fold}: already trained ({p.epoch}/{self.epochs} epochs); nothing to resume")

    def _check_loss(self, loss: torch.Tensor) -> None:
        finite = loss.detach().clone()
        if self.dist.active:
            torch.distributed.all_reduce(finite)    # a NaN on any rank stops every rank
        if not torch.isfinite(finite):
            self._diverged(f"the loss became {finite.item()}", epoch=self.progress.epoch + 1,
                           batch=self.progress.step_in_epoch)

    def _diverged(self, what: str, epoch: int, batch: int | None = None) -> None:
        last = self.run.last(self.fold)
        kept = (f"{last} keeps the last finite state ({self.saved_at})" if self.saved_at else
                "no resumable state was saved before that")
        where = f"epoch {epoch}, batch {batch}" if batch is not None else f"epoch {epoch}"
        raise KitError(f"fold {self.fold}: {what} at {where}; training stopped, {kept}. Lower --lr or --agc-clip, "
                       f"or check the images")


def train_fold(cfg: Config, task: Task, data: FoldData, run: RunDir, resume: bool = False,
               force_resume: bool = False, images: ImageStore | None = None, started: float | None = None,
               model_why: str = "set by --model", pace: budget.Pace | None = None,
               track: Tracking | None = None) -> FoldResult:
    """Train one fold, recording the settings it trains with. The caller holds the fold's lock (kit.train.run)."""
    d = distributed.current()
    if d.main:
        save_config(cfg, run.fold_config_file(data.fold))
    if resume and not run.last(data.fold).is_file():
        log.info(f"fold {data.fold}: no checkpoint to resume from in {run.fold_dir(data.fold)}; starting the fold")
    return Trainer(cfg, task, data, run, d, resume, force_resume, images, started, model_why, pace, track).fit()
