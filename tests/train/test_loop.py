"""The training loop itself, driven in this process: what it clips, accumulates, schedules, keeps as best and
refuses to save."""
import contextlib
import math

import numpy as np
import pytest
import torch

from helpers import fold_setup
from kit.store import checkpoint
from kit.train.fold import Trainer
from kit.core.errors import KitError
from kit.train.distributed import Dist
from kit.store.oof import read_history


def trainer(tmp_path, **settings) -> Trainer:
    cfg, task, data, run = fold_setup(tmp_path, **settings)
    return Trainer(cfg, task, data, run, Dist())


def test_the_loop_clips_every_parameter_but_the_head_once_per_optimizer_step(tmp_path, monkeypatch):
    calls = []
    import kit.train.step
    real = kit.train.step.adaptive_clip_grad_
    monkeypatch.setattr(kit.train.step, "adaptive_clip_grad_", lambda params, *a: calls.append(list(params)) or real(params, *a))
    t = trainer(tmp_path, epochs=1, accum_steps=2)
    t.fit()
    head = {id(p) for p in t.model.get_classifier().parameters()}
    body = [p for p in t.model.parameters() if id(p) not in head]
    assert len(calls) == t.progress.updates == math.ceil(t.batches_per_epoch / 2)
    for params in calls:
        assert {id(p) for p in params} == {id(p) for p in body}          # the whole body, never the head


def test_agc_sees_unscaled_gradients_under_a_loss_scaler(tmp_path, monkeypatch):
    """AMP's loss scaling multiplies every gradient by the scale (2^16 here); AGC must see the true gradients,
    or it compares the weights with gradients 65,536 times too large and clips every unit. The same step with
    and without an enabled scaler must hand AGC the same gradients (GradScaler runs on the CPU too)."""
    import kit.train.step
    seen = {}
    real = kit.train.step.adaptive_clip_grad_

    def record(params, *a):
        seen.setdefault(key, [p.grad.detach().clone() for p in params])
        return real(params, *a)
    monkeypatch.setattr(kit.train.step, "adaptive_clip_grad_", record)
    for key in ("plain", "scaled"):
        t = trainer(tmp_path / key, epochs=1, precision="fp32")
        if key == "scaled":
            t.step.scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 16)
        t.fit()
    for plain, scaled in zip(seen["plain"], seen["scaled"]):
        torch.testing.assert_close(scaled, plain, rtol=1e-4, atol=1e-7)


def test_gradient_accumulation_equals_the_larger_batch(tmp_path):
    """2 accumulated batches of 4 = 1 batch of 8: same images, same augmentation, same updates."""
    settings = dict(epochs=1, drop_rate=0.0, drop_path_rate=0.0, per_class=12)     # 18 training images
    big = trainer(tmp_path / "big", batch_size=8, **settings)
    big.fit()
    small = trainer(tmp_path / "small", batch_size=4, accum_steps=2, **settings)
    small.fit()
    assert small.progress.updates == big.progress.updates > 1
    diff = max((a - b).abs().max().item() for a, b in zip(big.model.state_dict().values(),
                                                          small.model.state_dict().values()) if a.is_floating_point())
    assert diff < 1e-4, diff
    moved = max((a - b).abs().max().item() for a, b in zip(big.model.state_dict().values(),
                                                           trainer(tmp_path / "init", **settings).model.state_dict().values())
                if a.is_floating_point())
    assert moved > 1e-3                                   # training did change the weights: the match means something


def test_adamw_trains_with_adam_state(tmp_path):
    t = trainer(tmp_path, optimizer="adamw", lr=1e-3, epochs=1)
    before = {k: v.clone() for k, v in t.model.state_dict().items()}
    t.fit()
    state = checkpoint.load(t.run.last(0))["optimizer"]["state"]
    assert state and all("exp_avg" in s and "exp_avg_sq" in s for s in state.values())
    assert any(not torch.equal(before[k], v) for k, v in t.model.state_dict().items())


def _scripted_evaluations(t: Trainer, true_probs: list[float], monkeypatch):
    """Make epoch e's validation predictions give the true class probability true_probs[e]."""
    y = t.data.targets[t.data.val_rows]
    n, c = len(y), len(t.task.names)
    outputs = []
    for p in true_probs:
        probs = np.full((n, c), (1 - p) / (c - 1))
        probs[np.arange(n), y] = p
        outputs.append(probs)
    it = iter(outputs)
    monkeypatch.setattr(t, "evaluate", lambda: (next(it), 0.5))


def test_log_loss_keeps_its_lowest_epoch(tmp_path, monkeypatch):
    t = trainer(tmp_path, metric="log_loss", epochs=3)
    _scripted_evaluations(t, [0.6, 0.9, 0.4], monkeypatch)          # log loss 0.51, 0.11, 0.92
    t.fit()
    history = read_history(t.run.history(0))
    assert [e.is_best for e in history] == [True, True, False]
    assert checkpoint.load(t.run.best(0))["epoch"] == 2
    assert history[1].score == pytest.approx(-math.log(0.9), abs=1e-6)


def test_best_checkpoint_holds_the_ema_weights(tmp_path):
    t = trainer(tmp_path, epochs=1, batch_size=4, per_class=12)           # 4 updates: the EMA lags the weights
    t.fit()
    best, last = checkpoint.load(t.run.best(0)), checkpoint.load(t.run.last(0))
    assert all(torch.equal(best["model"][k], v) for k, v in last["ema"].items())
    assert any(not torch.equal(best["model"][k], v) for k, v in last["model"].items())


def test_learning_rate_follows_warmup_then_cosine(tmp_path):
    lr, min_lr, epochs = 0.05, 1e-6, 4
    t = trainer(tmp_path, epochs=epochs, lr=lr, min_lr=min_lr, warmup_epochs=1.0, per_class=8)
    t.fit()
    per_epoch = t.batches_per_epoch
    warmup, total = per_epoch, per_epoch * epochs
    start = lr * 0.01

    def expected(u):                                         # the schedule written out, not asked of timm
        if u < warmup:
            return start + (lr - start) * u / warmup
        return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * (u - warmup) / (total - warmup)))

    got = [e.lr for e in read_history(t.run.history(0))]
    assert got == pytest.approx([expected(per_epoch * (e + 1)) for e in range(epochs)], rel=1e-4)
    assert got[0] == pytest.approx(lr, rel=1e-4) and got[-1] < got[1] < lr
    assert got[-1] == pytest.approx(min_lr, rel=1e-4)               # the last update ends the cosine at min_lr


def test_layer_decay_gives_the_head_the_scheduled_lr_and_each_group_below_a_decayed_one(tmp_path):
    """--layer-decay d: after the schedule has run, the head trains at the logged lr and the stem at d^depth of it
    (timm's groups carry an lr_scale that its scheduler applies; an optimizer built without them, or a scheduler
    that set one lr for all, fails here)."""
    decay = 0.5
    t = trainer(tmp_path, epochs=2, layer_decay=decay, warmup_epochs=0.0)
    t.fit()
    logged = read_history(t.run.history(0))[-1].lr
    group_of = {id(p): g for g in t.optimizer.param_groups for p in g["params"]}
    head = group_of[id(t.model.get_classifier().weight)]
    stem = group_of[id(next(p for name, p in t.model.named_parameters() if name.startswith("stem")))]
    depth = round(math.log(stem["lr_scale"]) / math.log(decay))
    assert depth >= 2 and head["lr_scale"] == 1.0
    assert head["lr"] == pytest.approx(logged, rel=1e-6)
    assert stem["lr"] == pytest.approx(logged * decay ** depth, rel=1e-6)
    saved = checkpoint.load(t.run.last(0))["optimizer"]["param_groups"]        # a resume restores the groups
    assert sorted({g["lr_scale"] for g in saved}) == sorted({g["lr_scale"] for g in t.optimizer.param_groups})


def test_same_weights_with_and_without_loader_workers(tmp_path):
    states = []
    for workers in (0, 2):
        t = trainer(tmp_path / f"w{workers}", epochs=1, num_workers=workers)
        t.fit()
        states.append(t.model.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_a_nan_validation_loss_is_never_best_nor_resumable(tmp_path, monkeypatch):
    t = trainer(tmp_path, epochs=3)
    real = t.evaluate
    calls = iter([real, lambda: (np.full_like(real()[0], np.nan), float("nan"))])
    monkeypatch.setattr(t, "evaluate", lambda: next(calls)())
    with pytest.raises(KitError, match=r"fold 0: the validation loss is nan at epoch 2; training stopped, .*last.pt "
                                       r"keeps the last finite state \(the end of epoch 1\)"):
        t.fit()
    assert checkpoint.load(t.run.best(0))["epoch"] == 1
    last = checkpoint.load(t.run.last(0))
    assert last["epoch"] == 1 and last["step_in_epoch"] == 0
    assert len(read_history(t.run.history(0))) == 1


def test_diverged_weights_are_never_saved(tmp_path, monkeypatch):
    t = trainer(tmp_path, epochs=3, save_every_steps=1, batch_size=4, per_class=12)       # 4 steps an epoch
    real_update = t.step.update

    def poisoned_update(updates):
        real_update(updates)
        if t.progress.epoch == 1 and t.progress.step_in_epoch == t.batches_per_epoch:     # epoch 2's last update
            with torch.no_grad():
                next(t.model.parameters()).fill_(float("inf"))
                next(t.ema.module.parameters()).fill_(float("inf"))

    monkeypatch.setattr(t.step, "update", poisoned_update)
    with pytest.raises(KitError, match=r"at epoch 2; training stopped, .*last.pt keeps the last finite state \(epoch 2, "
                                       r"batch 3\)"):
        t.fit()
    last = checkpoint.load(t.run.last(0))
    assert (last["epoch"], last["step_in_epoch"]) == (1, 3)
    assert all(torch.isfinite(v).all() for v in last["model"].values() if v.is_floating_point())
    assert all(torch.isfinite(v).all() for v in checkpoint.load(t.run.best(0))["model"].values() if v.is_floating_point())
    assert checkpoint.load(t.run.best(0))["epoch"] == 1


def test_a_partial_last_epoch_trains_its_epochs_first_batches_and_ends_the_schedule(tmp_path, monkeypatch):
    """A budget's plan can end on a partial epoch (kit.train.budget): that epoch trains the first
    last_epoch_steps batches of the order a whole epoch would have, the cosine spans the updates planned so the last
    one reaches min_lr, and a run stopped inside the partial epoch resumes to the same weights."""
    from kit.train import budget
    settings = dict(epochs=3, batch_size=4, per_class=12, lr=0.05, min_lr=1e-6, warmup_epochs=0.5, save_every_steps=1)
    real_plan, setups = budget.plan, {}

    def run(name, last=None, stop_after=None, resume=False):
        if last is not None:
            monkeypatch.setattr(budget, "plan", lambda trainer: {**real_plan(trainer), "last_epoch_steps": last})
        if name not in setups:
            setups[name] = fold_setup(tmp_path / name, **settings)
        t = Trainer(*setups[name], Dist(), resume=resume)
        monkeypatch.undo()
        seen, real_train = [], t.batch.train
        t.batch.train = lambda x, y, epoch, step: seen.append((epoch, step, x.clone())) or real_train(x, y, epoch, step)
        if stop_after is not None:
            real_update = t.step.update

            def update(n):
                real_update(n)
                if n == stop_after:
                    t.save_last()
                    raise KeyboardInterrupt
            t.step.update = update
        with pytest.raises(KeyboardInterrupt) if stop_after is not None else contextlib.nullcontext():
            t.fit()
        return t, seen

    whole, whole_seen = run("whole")
    per_epoch = whole.batches_per_epoch
    assert per_epoch >= 4
    part, part_seen = run("part", last=2)
    assert part.progress.updates == 2 * per_epoch + 2 == len(part_seen)
    assert len(read_history(part.run.history(0))) == 3                      # the partial epoch is epoch 3
    for (e1, s1, x1), (e2, s2, x2) in zip(part_seen, whole_seen):              # the same batches, in the same order
        assert (e1, s1) == (e2, s2) and torch.equal(x1, x2)
    assert [e for e, _, _ in part_seen].count(2) == 2
    assert part.scheduler.warmup_t + part.scheduler.t_initial == part.progress.updates
    assert part.optimizer.param_groups[0]["lr"] == pytest.approx(1e-6, rel=1e-3)     # the last update ends it
    assert whole.optimizer.param_groups[0]["lr"] == pytest.approx(1e-6, rel=1e-3)

    run("stopped", last=2, stop_after=2 * per_epoch + 1)                        # inside the partial epoch
    resumed, rest = run("stopped", last=2, resume=True)
    assert [(e, s) for e, s, _ in rest] == [(2, 1)]                             # only its last batch was left
    final, expected = checkpoint.load(resumed.run.last(0)), checkpoint.load(part.run.last(0))
    assert all(torch.equal(final["model"][k], v) for k, v in expected["model"].items())
    assert final["updates"] == expected["updates"]
