"""What a fold keeps as its model: the trainer's one difference between a fold and the full model, as two strategies.

- `BestEpoch`, a fold with validation rows: epochs are scored (every val_every-th and the last), the best one's
  (EMA) weights go to best.pt with its OOF predictions beside them, and with --avg-top-k the mean of the K best
  epochs' weights replaces them when it scores better.
- `LastEpoch`, the full model (`--fold full`, no validation rows): no epoch is scored; the last epoch's weights
  are kept.

The loop (kit.train.fold.Trainer.fit) asks the strategy whether an epoch is scored, tells it each epoch's score and
lets it keep the model at the end; it never asks which mode it is in. A student (kit.train.teacher) is neither: it
differs only in its data (FoldData.teaching: packed targets, pseudo-labelled images), which the objective reads.
"""
from __future__ import annotations

import copy
import logging
import math
import numpy as np
import torch

from kit.store import state
from kit.store.oof import Oof, read_oof, write_kept, write_oof

log = logging.getLogger(__name__)


def average_weights(states: list[dict]) -> dict:
    """The element-wise mean of state dicts (integer buffers, counters, from the first)."""
    return {k: torch.stack([s[k].float() for s in states]).mean(0).to(v.dtype) if v.is_floating_point() else v
            for k, v in states[0].items()}


class BestEpoch:
    """A fold with validation rows: keep the best scored epoch (or the average of the K best, if it scores better)."""

    def __init__(self, trainer):
        self.t = trainer                # the fold's kit.train.fold.Trainer (not imported: it imports this module)

    def scores(self, epoch: int) -> bool:
        """Whether epoch `epoch` (1-based) is scored: every val_every-th, and always the last."""
        return epoch % self.t.val_every == 0 or epoch >= self.t.epochs

    def epoch_end(self, probs: np.ndarray | None, score: float) -> bool:
        """After epoch progress.epoch: remember it for --avg-top-k; keep it if it beats the best. True if kept."""
        t, p = self.t, self.t.progress
        self._remember(score)
        if probs is None or not t.task.is_better(t.cfg.metric, score, p.best_score):
            return False
        p.best_score, p.best_epoch = score, p.epoch
        if t.dist.main:
            state.save_best(t.run.best(t.fold), t.identity, t.eval_model.state_dict(), p.epoch, score)
            write_oof(t.run.oof(t.fold), self._oof(probs))
        return True

    def finish(self) -> None:
        self._average()

    def described(self, best: state.BestModel) -> tuple[str, float, Oof]:
        """(the log line's end, the fold's score, its OOF predictions)."""
        t = self.t
        return (f"best {t.cfg.metric} {best.score:.4f} at epoch {best.epoch}", best.score,
                read_oof([t.run.oof(t.fold)]))

    def _remember(self, score: float) -> None:
        """--avg-top-k: keep the K best epochs' evaluated (EMA) weights, best first."""
        t, p = self.t, self.t.progress
        if t.cfg.avg_top_k < 2 or not math.isfinite(score):
            return
        p.top.append({"epoch": p.epoch, "score": score,
                      "model": {k: v.detach().cpu().clone() for k, v in t.eval_model.state_dict().items()}})
        p.top.sort(key=lambda e: e["score"], reverse=t.task.higher_is_better(t.cfg.metric))
        del p.top[t.cfg.avg_top_k:]

    def _average(self) -> None:
        """The mean of the K best epochs' weights, scored on the validation images like an epoch and kept only if it
        scores better than the best epoch. NFNets have no BatchNorm, so the averaged weights need no statistics
        refreshed (SWA's update_bn pass); a model with BatchNorm would (its running stats are averaged here)."""
        t, p, cfg = self.t, self.t.progress, self.t.cfg
        if len(p.top) < 2 or p.best_score is None:
            return
        saved = copy.deepcopy(t.eval_model.state_dict())
        t.eval_model.load_state_dict(average_weights([e["model"] for e in p.top]))
        probs, loss = t.evaluate()
        score = t.task.score(cfg.metric, t.data.targets[t.data.val_rows], probs)
        epochs = sorted(e["epoch"] for e in p.top)
        # strictly better, or the plain best epoch stays: on digits-hard 2 of 5 folds tied (bench/RESULTS.md
        # "--avg-top-k 3 against the best epoch"), and a choice between equals goes to the one that does less
        kept = math.isfinite(loss) and t.task.is_better(cfg.metric, score, p.best_score)
        log.info(f"fold {t.fold}: the average of epochs {epochs} scores {cfg.metric} {score:.4f} against the best "
                 f"epoch's {p.best_score:.4f}: {'kept' if kept else 'the best epoch is kept'}")
        if t.dist.main:
            if kept:
                state.save_best(t.run.best(t.fold), t.identity, t.eval_model.state_dict(), p.best_epoch, score,
                                epochs)
                write_oof(t.run.oof(t.fold), self._oof(probs))
            write_kept(t.run.kept(t.fold), epochs if kept else [p.best_epoch], p.best_score, score)
        t.eval_model.load_state_dict(saved)

    def _oof(self, probs: np.ndarray) -> Oof:
        data = self.t.data
        rows, table = data.val_rows, data.table
        return Oof([table.ids[r] for r in rows], [table.labels[r] for r in rows], data.fold_of_row[rows], probs,
                   self.t.task.output_columns())


class LastEpoch:
    """The full model: nothing to score it on; the last epoch's (EMA) weights are kept."""

    def __init__(self, trainer):
        self.t = trainer

    def scores(self, epoch: int) -> bool:
        return False

    def epoch_end(self, probs: np.ndarray | None, score: float) -> bool:
        return False

    def finish(self) -> None:
        t = self.t
        if t.dist.main:
            state.save_best(t.run.best(t.fold), t.identity, t.eval_model.state_dict(), t.progress.epoch, math.nan)

    def described(self, best: state.BestModel) -> tuple[str, float, None]:
        return (f"the last epoch's weights ({'EMA, ' if self.t.ema else ''}no validation images)", math.nan, None)


def keeper_for(trainer) -> BestEpoch | LastEpoch:
    return BestEpoch(trainer) if trainer.data.val_rows.size else LastEpoch(trainer)
