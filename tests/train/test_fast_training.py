"""Training as fast as the machine allows without changing what is learned: images decoded once into memory, the
arithmetic (--precision), the learning rate that follows the batch, validation every N epochs, the time budget's
re-plan, the kit's NF-ResNets and `--model auto`."""
from __future__ import annotations

import json
import math
import re
import time

import numpy as np
import pytest
import timm
import torch

from helpers import TINY, assert_user_error, fold_setup, make_competition, run_entry
from kit.core.errors import KitError
from kit.store import checkpoint
from kit.train.distributed import Dist
from kit.train.fold import Trainer

FP32 = ["--precision", "fp32"]


def trainer(tmp_path, **settings) -> Trainer:
    cfg, task, data, run = fold_setup(tmp_path, **settings)
    return Trainer(cfg, task, data, run, Dist())


def test_nf_resnet18_is_a_timm_model_of_basic_blocks_that_starts_as_the_identity():
    from kit.train.model import create_model
    from kit.train.members import fold_weight_standardization
    from kit.train.nf_resnet import NormFreeBasicBlock
    model = create_model("nf_resnet18", 5)
    assert timm.is_model("nf_resnet18") and timm.is_model("nf_resnet34")
    assert [len(stage) for stage in model.stages] == [2, 2, 2, 2]
    assert all(isinstance(b, NormFreeBasicBlock) for stage in model.stages for b in stage)
    assert [stage[0].conv1.out_channels for stage in model.stages] == [64, 128, 256, 512]
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(11.18e6, rel=0.01)    # ResNet18's size
    block = model.stages[0][1]                       # no downsample: at init its residual branch adds nothing
    x = torch.randn(2, 64, 8, 8)
    torch.testing.assert_close(block(x), x)
    model.eval()
    images = torch.randn(3, 3, 32, 32)
    before = model(images)
    assert fold_weight_standardization(model) == 2 * 8 + 3 + 1      # 2 convs a block, 3 downsamples, the stem
    torch.testing.assert_close(model(images), before, rtol=1e-4, atol=1e-5)      # exported graphs fold it so


def test_nf_resnet26_half_is_nf_resnet26_at_half_the_width():
    """The short-budget model: timm's nf_resnet26 with every stage half as wide, nothing else changed (a wrong width
    or depth, or another block type, fails here)."""
    from kit.train.model import create_model
    from timm.models.nfnet import NormFreeBlock
    full, half = create_model("nf_resnet26", 5), create_model("nf_resnet26_half", 5)
    for narrow, factor in ((half, 2), (create_model("nf_resnet26_quarter", 5), 4)):
        assert [len(stage) for stage in narrow.stages] == [len(stage) for stage in full.stages] == [2, 2, 2, 2]
        assert all(isinstance(b, NormFreeBlock) for stage in narrow.stages for b in stage)
        assert [s[0].conv3.out_channels * factor for s in narrow.stages] == [s[0].conv3.out_channels
                                                                             for s in full.stages]
        assert narrow.stem.conv.out_channels == full.stem.conv.out_channels == 64        # the stem is nf_resnet26's
    assert sum(p.numel() for p in half.parameters()) == pytest.approx(3.52e6, rel=0.01)
    half.eval()
    before = half(torch.randn(2, 3, 32, 32)).shape
    assert before == (2, 5)


def test_precision_the_machine_cannot_do_is_one_error_line(tmp_path, capsys, monkeypatch):
    comp = make_competition(tmp_path / "comp", per_class=4)
    base = ["train.py", "--data-dir", comp, "--folds-csv", tmp_path / "f.csv", *TINY]
    assert_user_error(run_entry(capsys, *base, "--run-dir", tmp_path / "a", "--precision", "fp16"),
                      r"--precision fp16 needs a CUDA GPU")
    import kit.train.device
    monkeypatch.setattr(kit.train.device, "cpu_has_bf16", lambda: False)
    assert_user_error(run_entry(capsys, *base, "--run-dir", tmp_path / "b", "--precision", "bf16"),
                      r"--precision bf16: this CPU has no native bfloat16")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists() and not (tmp_path / "f.csv").exists()
    from kit.train.device import resolve_precision
    monkeypatch.setattr(kit.train.device, "cpu_has_bf16", lambda: True)
    assert resolve_precision("auto", torch.device("cpu")).name == "fp32"      # measured no faster: fp32 even with bf16
    assert resolve_precision("bf16", torch.device("cpu")).dtype == torch.bfloat16
    assert not resolve_precision("bf16", torch.device("cpu")).scaled              # bf16 needs no loss scaling


def test_the_legacy_amp_setting_loads_from_a_saved_config_and_a_yaml_file_is_told_its_new_name(tmp_path):
    from kit.settings.config import from_dict, load_config
    assert from_dict({"amp": False}, "old config.yaml").precision == "fp32"
    assert from_dict({"amp": True}, "old config.yaml").precision == "auto"
    (tmp_path / "c.yaml").write_text("amp: false\n")
    with pytest.raises(KitError, match=r"the setting 'amp' is now 'precision' \(auto, fp32, bf16 or fp16\)"):
        load_config(str(tmp_path / "c.yaml"))


def test_images_in_memory_train_exactly_the_model_the_files_do(tmp_path, capsys):
    """The cache changes how fast, never what is learned: the same decoder and the same per-image augmentation."""
    comp = make_competition(tmp_path / "comp", per_class=6)
    base = ["train.py", "--data-dir", comp, "--folds-csv", tmp_path / "f.csv", "--num-folds", "2", *TINY, *FP32,
            "--aug-shift-scale-rotate", "1", "--aug-brightness-contrast", "1"]
    for name, flags in (("files", ["--cache-images", "off"]), ("memory", ["--cache-images", "on"]),
                        ("files-workers", ["--cache-images", "off", "--num-workers", "2"])):
        r = run_entry(capsys, *base, "--run-dir", tmp_path / name, *flags)
        assert r.returncode == 0, r.stderr
        said = "images in memory" if name == "memory" else "images read from the files every epoch"
        assert said in r.stdout, r.stdout
    models = {n: checkpoint.load(tmp_path / n / "fold0" / "best.pt")["model"] for n in ("files", "memory",
                                                                                          "files-workers")}
    for name in ("memory", "files-workers"):
        assert all(torch.equal(models["files"][k], models[name][k]) for k in models["files"]), name
    assert "decoded into memory" in run_entry(capsys, *base, "--run-dir", tmp_path / "again").stdout   # auto: on


def test_the_cache_memory_limit_and_a_corrupt_image_are_one_line_each(tmp_path, capsys):
    comp = make_competition(tmp_path / "comp", per_class=4)
    base = ["train.py", "--data-dir", comp, "--folds-csv", tmp_path / "f.csv", *TINY]
    assert_user_error(run_entry(capsys, *base, "--run-dir", tmp_path / "a", "--cache-images", "on",
                                "--cache-memory-mb", "0"),
                      r"the decoded images need more than --cache-memory-mb 0 MB; raise it, or use --cache-images off")
    bad = sorted((comp / "train_images").iterdir())[:2]
    for path in bad:
        path.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    for flags in (["--cache-images", "on"], ["--cache-images", "off"]):
        assert_user_error(run_entry(capsys, *base, "--run-dir", tmp_path / "b", *flags),
                          rf"2 image\(s\) cannot be decoded: {bad[0]}: .*Replace these files")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_the_learning_rate_follows_the_global_batch_unless_it_is_set(tmp_path):
    from kit.settings.config import load_config, scaled_lr
    sgd = load_config(None, {"pretrained": False})
    assert scaled_lr(sgd, 32) == pytest.approx(0.05) and scaled_lr(sgd, 128) == pytest.approx(0.2)     # linear
    adamw = load_config(None, {"pretrained": False, "optimizer": "adamw"})
    assert scaled_lr(adamw, 64) == pytest.approx(0.001) and scaled_lr(adamw, 256) == pytest.approx(0.002)   # sqrt
    assert scaled_lr(load_config(None, {"lr_base": 0.1}), 64) == pytest.approx(0.025)
    t = trainer(tmp_path / "a", batch_size=4, accum_steps=2, lr=None, epochs=1)
    assert t.lr == pytest.approx(0.4 * 8 / 256) and t.optimizer.param_groups[0]["initial_lr"] == pytest.approx(t.lr)
    assert t.plan["lr"] == t.lr and t.plan["batch_size"] == 4
    assert trainer(tmp_path / "b", batch_size=4, lr=0.3, epochs=1).lr == 0.3        # a given lr is used as it is


def test_the_batch_follows_the_model_unless_it_is_set():
    from kit.settings.config import batch_for, load_config
    assert batch_for(load_config(None, {"model": "nf_resnet18", "pretrained": False})) == 64
    assert batch_for(load_config(None, {"model": "nf_resnet26", "pretrained": False})) == 32
    assert batch_for(load_config(None, {"model": "nf_resnet18", "batch_size": 16})) == 16


def test_validation_every_n_epochs_scores_those_and_the_last(tmp_path):
    t = trainer(tmp_path, epochs=5, val_every=2, precision="fp32")
    scored = []
    real = t.evaluate
    t.evaluate = lambda: scored.append(t.progress.epoch + 1) or real()
    t.fit()
    assert scored == [2, 4, 5]
    from kit.store.oof import read_history
    history = read_history(t.run.history(0))
    assert [math.isnan(e.score) for e in history] == [True, False, True, False, False]
    assert checkpoint.load(t.run.best(0))["epoch"] in (2, 4, 5)


def test_the_budget_is_planned_again_after_the_first_epoch(tmp_path, monkeypatch):
    """A first epoch slower than the probe said cuts the epochs; the schedule then ends at the new count."""
    from kit.train import budget
    t = trainer(tmp_path, epochs=1, time_budget="10m", precision="fp32")
    assert t.plan["first_plan_epochs"] == t.epochs > 3          # ten minutes fit many tiny epochs
    monkeypatch.setattr(budget, "_deadline", lambda trainer: __import__("time").time() + 2.5 * t.plan["seconds_per_epoch"])
    monkeypatch.setattr(budget.statistics, "median", lambda values: t.plan["seconds_per_epoch"] / t.batches_per_epoch)
    planned_val = t.plan["val_images"] * t.plan["seconds_per_val_image"]
    replan = t._replan           # the first epoch's validation and checkpoints as planned, whatever the machine's load
    t._replan = lambda train, val, epoch: replan(train, planned_val, train + planned_val)
    t.fit()
    plan = json.loads(t.run.plan(0).read_text())
    assert plan["epochs"] == t.epochs == len(t.progress.history) < plan["first_plan_epochs"]
    assert plan["replanned"] is not None and checkpoint.load(t.run.last(0))["plan"] == plan
    assert plan["last_epoch_steps"] == t.last_epoch_steps <= t.batches_per_epoch
    warmup = t.scheduler.warmup_t                                           # the cosine ends with the new count
    assert warmup + t.scheduler.t_initial == t.progress.updates == \
        (t.epochs - 1) * t.batches_per_epoch + t.last_epoch_steps
    assert t.optimizer.param_groups[0]["lr"] == pytest.approx(t.cfg.min_lr, rel=1e-3)


def _planned(monkeypatch, *, time_budget=None, left=None, val_rows=4, val_every=None, pace=None, probe=0.1,
             per_image=0.01, steps=10, epochs=8, warmup=1.0):
    """budget.plan over a stand-in trainer: `left` seconds to the deadline, `probe` the probe's seconds a step (or
    a `pace` from before), `per_image` validation's."""
    from types import SimpleNamespace
    from kit.train import budget
    started = time.time() - 2.0
    monkeypatch.setattr(budget, "_deadline", lambda t: time.time() + left)
    monkeypatch.setattr(budget, "_train_seconds_per_step", lambda t: time.sleep(0.05) or probe)
    monkeypatch.setattr(budget, "_val_seconds_per_image", lambda t: per_image)
    restored = []
    trainer = SimpleNamespace(
        cfg=SimpleNamespace(epochs=epochs, val_every=val_every, warmup_epochs=warmup, model="nf_resnet26",
                            time_budget=time_budget),
        batches_per_epoch=steps, data=SimpleNamespace(val_rows=np.arange(val_rows)), started=started,
        precision=SimpleNamespace(name="fp32"), batch_size=32, lr=0.05, agc_note=lambda: "0.1131 (auto)",
        model_why="set by --model", pace=pace,
        step=SimpleNamespace(snapshot=lambda: "weights", restore=restored.append))
    record = budget.plan(trainer)
    return record, restored


def test_a_plan_without_a_budget_is_the_settings_in_the_documented_schema(monkeypatch):
    """plan.json's keys are those the budget module documents, each with its value: nothing probed, nothing timed."""
    from kit.train import budget
    record, restored = _planned(monkeypatch, val_rows=288, steps=35)
    startup = record.pop("startup_s")
    assert 1.9 < startup < 10 and restored == []
    assert record == {"budget_s": None, "epochs": 8, "first_plan_epochs": 8, "replanned": None,
                      "seconds_per_step": None, "seconds_per_val_image": None, "steps_per_epoch": 35,
                      "last_epoch_steps": 35, "val_images": 288, "val_every": 1, "seconds_per_epoch": None,
                      "epoch_overhead_s": None, "warmup_epochs": 1.0, "precision": "fp32", "batch_size": 32,
                      "lr": 0.05, "agc": "0.1131 (auto)", "model": "nf_resnet26", "model_why": "set by --model",
                      "pace_from": None}
    documented = budget.__doc__.split("fold<k>/plan.json  (every fold")[1].split("}")[0]
    assert sorted(re.findall(r'"(\w+)"', documented)) == sorted([*record, "startup_s"])
    assert _planned(monkeypatch, val_every=3)[0]["val_every"] == 3


@pytest.mark.parametrize("left, epochs, last", [
    (3.71, 4, 5),         # 3 whole epochs (1 s + 0.04 s of validation each), then 5 batches of a fourth
    (3.21, 3, 10),        # 3 whole epochs, and less than a batch after them: no partial one
    (0.59, 1, 10),        # only 5 batches fit: one whole epoch instead
    (0.02, 1, 10),        # nothing fits: one whole epoch
])
def test_a_budgeted_plan_counts_whole_epochs_then_a_partial_one(monkeypatch, left, epochs, last):
    """10 batches of 0.1 s an epoch, 4 validation images at 0.01 s: the epochs and the partial last one that fit
    `left` seconds, the seconds an epoch costs, the warmup capped at a fifth of the epochs, and the probe's changes
    undone."""
    record, restored = _planned(monkeypatch, time_budget="40s", left=left)
    assert (record["epochs"], record["first_plan_epochs"], record["last_epoch_steps"]) == (epochs, epochs, last)
    assert record["budget_s"] == 40 and record["seconds_per_step"] == 0.1 and record["seconds_per_val_image"] == 0.01
    assert record["seconds_per_epoch"] == pytest.approx(1.04) and record["val_every"] == 1
    assert record["warmup_epochs"] == pytest.approx(min(1.0, (epochs - 1 + last / 10) / 5))
    assert 2.05 <= record["startup_s"] < 10, record        # measured after the probe, which took 0.05 s
    assert record["pace_from"] == "this fold's probe" and restored == ["weights"]
    assert _planned(monkeypatch, time_budget="40s", left=left, val_every=3)[0]["val_every"] == 3      # as set


def test_a_known_pace_is_planned_from_without_probing_and_validation_is_spaced_when_it_costs(monkeypatch):
    """A pace timed before (same model and batch) replaces the probe, which then changes no weight to restore. With
    validation at 0.9 s against 2 s of training, it runs every 5th epoch (under a tenth of the time) and an epoch
    costs 2 + 0.9/5 s; a fold without validation images times none."""
    from kit.train.budget import Pace
    pace = Pace("nf_resnet26", 32, 0.2, "fold 0's steps")
    record, restored = _planned(monkeypatch, time_budget="1m", left=100, pace=pace, probe=99.0, per_image=0.003,
                                val_rows=300)
    assert record["seconds_per_step"] == 0.2 and record["pace_from"] == "fold 0's steps" and restored == []
    assert record["val_every"] == 5 and record["seconds_per_epoch"] == pytest.approx(2 + 0.9 / 5)
    assert record["budget_s"] == 60
    bare, _ = _planned(monkeypatch, time_budget="1m", left=100, val_rows=0, per_image=5.0)
    assert bare["seconds_per_val_image"] == 0.0 and bare["seconds_per_epoch"] == pytest.approx(1.0)
    other = Pace("nf_resnet26", 64, 0.2, "fold 0's steps")                  # another batch: probed again
    assert _planned(monkeypatch, time_budget="1m", left=100, pace=other)[0]["pace_from"] == "this fold's probe"


def test_budget_arithmetic():
    from kit.train.budget import epochs_left, epochs_that_fit, val_every
    assert epochs_left(100, 9, 1, 1) == 10                       # 10 x (9 + 1)
    assert epochs_left(100, 9, 9, 2) == 7                        # 7 x 9 + 4 validations x 9 = 99
    # 10 steps of 1 s an epoch, 2 s to validate: 3 whole epochs (36 s) and, in the 10 s left, 8 steps of a 4th
    # beside its own validation
    assert epochs_that_fit(46, 1.0, 10, 2, 1) == (3, 8)
    assert epochs_that_fit(46.9, 1.0, 10, 2, 1) == (3, 8)        # a step starts only if it fits
    assert epochs_that_fit(39, 1.0, 10, 2, 1) == (3, 1)          # one step, MIN_PART of 10
    assert epochs_that_fit(38.9, 1.0, 10, 2, 1) == (3, 0)        # the validation alone: no partial epoch
    assert epochs_that_fit(47.9, 1.0, 10, 2, 1) == (3, 9)        # never a whole epoch's steps as "partial"
    assert epochs_that_fit(48, 1.0, 10, 2, 1) == (4, 0)
    assert epochs_that_fit(30, 0.1, 100, 1, 1) == (2, 70)        # 2 x 10 + 3 validations + 70 x 0.1 = 30
    assert epochs_that_fit(23.5, 0.1, 100, 1, 1) == (2, 0)       # 5 steps: under MIN_PART (10 of 100)
    # validated every 2nd epoch: 2 whole epochs (20 s), the 2nd and the partial 3rd (the last) scored (4 s), 6 steps
    assert epochs_that_fit(30, 1.0, 10, 2, 2) == (2, 6)
    assert val_every(None, train_s=10, val_s=0.5) == 1           # under a tenth: every epoch
    assert val_every(None, train_s=10, val_s=5) == 5             # 5 s every 5th epoch: 1 s in 11 s
    assert val_every(3, train_s=10, val_s=5) == 3                # as set


def test_budget_edges_deadlines_and_the_words_a_plan_is_told_in():
    """The arithmetic's edges (no time, nothing to validate, a per-epoch overhead, every 3rd epoch), the deadline's
    reserve, a bare number as minutes, the steady step, whether a pace fits, and a plan's epochs in words."""
    from types import SimpleNamespace
    from kit.train.budget import (Pace, budget_seconds, deadline, epochs_left, epochs_text, epochs_that_fit,
                                  partial_text, steady_seconds, val_every)
    assert epochs_left(5, 9, 1, 1) == 0 and epochs_left(-3, 9, 1, 1) == 0         # never below 0, never a free one
    assert epochs_left(21, 9, 3, 3) == 1                    # its estimate for 2: 2 x 9 + (2/3 + 2/3) x 3 = 22 s
    assert epochs_that_fit(46, 1.0, 10, 2, 1, overhead_s=1.0) == (3, 4)     # 3 x 11, 4 validations, its 1 s: 4 steps
    assert epochs_that_fit(21, 1.0, 9, 3, 3) == (1, 8)      # the estimate leaves a whole epoch: 8 of its 9 steps
    assert val_every(None, train_s=0.5, val_s=5) == 90 and val_every(None, 0, 5) == 1 and val_every(None, 10, 0) == 1
    assert val_every(None, train_s=10, val_s=1e-9) == 1 and val_every(None, train_s=0.5, val_s=0.5) == 9
    assert deadline("100s", 1000.0) == 1000 + 100 - 5                      # 5 % of the budget kept
    assert deadline("20s", 1000.0) == 1000 + 20 - 3                        # at least RESERVE_S
    assert budget_seconds("2") == 120 and budget_seconds("90s") == 90
    assert steady_seconds([9.0, 9.0, 1.0, 1.0, 1.0, 2.0, 2.0, 2.0]) == 1.5 and steady_seconds([]) is None  # 1st quarter out
    trainer = SimpleNamespace(cfg=SimpleNamespace(model="m"), batch_size=8)
    assert Pace("m", 8, 0.1, "x").fits(trainer) and not Pace("m", 8, 0.0, "x").fits(trainer)
    assert not Pace("n", 8, 0.1, "x").fits(trainer) and not Pace("m", 4, 0.1, "x").fits(trainer)
    assert epochs_text({"epochs": 4, "last_epoch_steps": 41, "steps_per_epoch": 68}) == \
        "4 epochs, the last 41 of 68 batches"
    for whole in ({"epochs": 4, "last_epoch_steps": 68, "steps_per_epoch": 68}, {"epochs": 4},
                  {"epochs": 4, "last_epoch_steps": 0, "steps_per_epoch": 68},
                  {"epochs": 4, "last_epoch_steps": 41, "steps_per_epoch": None}):
        assert epochs_text(whole) == "4 epochs" and partial_text(whole) == ""


def test_the_probe_times_the_trainers_own_steps_after_a_warm_up_one(monkeypatch):
    """PROBE_STEPS + 1 steps through the Trainer's batch and Step (epoch 0, the step's index, its mix, updates
    counted from 1), cycling the loader epoch after epoch; the median of all but the first step's time."""
    from types import SimpleNamespace
    from kit.train import budget
    calls, epochs = [], []
    sampler = SimpleNamespace(set_epoch=epochs.append)
    step = SimpleNamespace(loss=lambda x, y, mix: ("loss", x, mix), backward=lambda loss: calls.append(("back", loss)),
                           update=lambda n: calls.append(("update", n)))
    batch = SimpleNamespace(train=lambda x, y, epoch, i: (f"{x}@{epoch}/{i}", y, f"mix{i}"))
    trainer = SimpleNamespace(step=step, batch=batch, net=SimpleNamespace(train=lambda: None), train_sampler=sampler,
                              train_loader=[("a", 0), ("b", 1)])
    ticks = iter([0, 5, 5, 6, 6, 8, 8, 9, 9, 12, 12, 13])       # step times 5, 1, 2, 1, 3, 1: median of 1,2,1,3 = 1.5
    monkeypatch.setattr(budget.time, "perf_counter", lambda: next(ticks))
    assert budget._train_seconds_per_step(trainer) == 1.5
    assert epochs == [0, 1, 2] and budget.PROBE_STEPS == 4
    assert [c for c in calls if c[0] == "update"] == [("update", n) for n in range(1, 6)]
    assert [c[1] for c in calls if c[0] == "back"] == [("loss", x, f"mix{i}") for i, x in
                                                        enumerate(["a@0/0", "b@0/1", "a@0/2", "b@0/3", "a@0/4"])]


def test_the_replan_counts_what_the_first_epoch_took_beyond_its_steps(monkeypatch):
    """10 steps of 1 s, 2 s of validation, 1 s more for the checkpoints (13 s an epoch), 40.5 s left: 3 more whole
    epochs and no partial one fit; counted without the 1 s, a partial 4th would have been planned past the deadline."""
    import time
    from types import SimpleNamespace
    from kit.train import budget
    plan = {"steps_per_epoch": 10, "val_images": 100, "seconds_per_val_image": 0.03, "val_every": 1, "epochs": 9,
            "last_epoch_steps": 10}
    trainer = SimpleNamespace(plan=plan, step_seconds=[5.0] + [1.0] * 9)       # the first step builds the kernels
    monkeypatch.setattr(budget, "_deadline", lambda t: time.time() + 40.5)
    new = budget.replan(trainer, 14.0, 2.0, 17.0)
    assert (new["epochs"], new["last_epoch_steps"]) == (4, 10)
    assert new["epoch_overhead_s"] == pytest.approx(1.0) and new["seconds_per_epoch"] == pytest.approx(13.0)
    assert new["replanned"] == 14.0
    no_overhead = budget.replan(trainer, 14.0, 2.0, 16.0)
    assert (no_overhead["epochs"], no_overhead["last_epoch_steps"]) == (5, 2)
    unscored = budget.replan(trainer, 14.0, None, 15.0)        # not validated: the planned 3 s, and 1 s overhead
    assert unscored["epoch_overhead_s"] == pytest.approx(1.0) and unscored["seconds_per_epoch"] == pytest.approx(14.0)
    # no step times kept (the epoch's seconds over its steps), validated every 2nd epoch, 39.5 s left: 3 whole epochs
    # of 11 s, 2 validations, and one batch of a partial 5th in the 1.5 s after its own overhead
    sparse = SimpleNamespace(plan={**plan, "val_every": 2}, step_seconds=[])
    monkeypatch.setattr(budget, "_deadline", lambda t: time.time() + 39.5)
    new = budget.replan(sparse, 10.0, 2.0, 13.0)
    assert (new["epochs"], new["last_epoch_steps"]) == (5, 1) and new["seconds_per_epoch"] == pytest.approx(12.0)


def test_model_auto_keeps_the_plain_choice_unless_too_few_of_its_epochs_fit(tmp_path, monkeypatch):
    from kit.core.task import Multiclass
    from kit.store.rundir import RunDir
    from kit.settings.config import load_config
    from kit.train import choice
    task, targets = Multiclass(["a", "b"]), np.zeros(100, np.int64)
    cfg = load_config(None, {"pretrained": False, "model": "auto"})
    run = RunDir(tmp_path / "run")
    monkeypatch.setattr(choice, "seconds_per_step", lambda *a: 0.1)   # 3 steps of 32 an epoch; its probe: 0.6 s
    now = __import__("time").time()
    assert choice.choose_model(cfg, run, task, targets, 96, 0, None)[0] == "nf_resnet26"
    name, why, pace = choice.choose_model(cfg, run, task, targets, 96, 0, now + 0.6 + 9 * 0.3 + 0.1)
    assert name == "nf_resnet26"                                      # 9 epochs fit; its fold plans from this step
    assert (pace.model, pace.batch_size, pace.seconds_per_step) == ("nf_resnet26", 32, 0.1)
    assert "9 epochs of nf_resnet26 fit the budget" in why
    name, why, pace = choice.choose_model(cfg, run, task, targets, 96, 0, now + 0.6 + 8 * 0.3 + 0.1)
    assert name == "nf_resnet26_half" and "only 8 epoch(s) of nf_resnet26 fit" in why
    assert pace is None                                               # its fold times its own step
    pretrained = load_config(None, {"pretrained": True, "model": "auto"})
    assert choice.choose_model(pretrained, run, task, targets, 96, 0, None)[0] == "eca_nfnet_l0"
    (run.fold_dir(1)).mkdir(parents=True)
    (run.fold_dir(1) / "config.yaml").write_text("model: nf_resnet18\n")
    (run.fold_dir(1) / "last.pt").write_bytes(b"")
    assert choice.choose_model(cfg, run, task, targets, 96, 0, None) == ("nf_resnet18",
                                                                      "the model of the run's trained fold 1", None)


def test_a_timed_step_is_planned_from_not_probed_again(tmp_path, monkeypatch):
    """A fold given its model's step (by --model auto's probe, or the fold before) plans from it; another model's or
    another batch's step is not used. Each fold of a budgeted run hands its steady step to the next."""
    from kit.train import budget

    def no_probe(trainer):
        raise AssertionError("probed again")
    monkeypatch.setattr(budget, "_train_seconds_per_step", no_probe)
    known = budget.Pace("test_nfnet", 4, 0.25, "fold 0's steps")
    t = Trainer(*fold_setup(tmp_path / "a", time_budget="10m", batch_size=4, precision="fp32"), Dist(), pace=known)
    assert (t.plan["seconds_per_step"], t.plan["pace_from"]) == (0.25, "fold 0's steps")
    monkeypatch.undo()
    for other in (budget.Pace("nf_resnet18", 4, 0.25, "x"), budget.Pace("test_nfnet", 8, 0.25, "x")):
        t = Trainer(*fold_setup(tmp_path / other.model / str(other.batch_size), time_budget="10m", batch_size=4,
                                precision="fp32"), Dist(), pace=other)
        assert t.plan["pace_from"] == "this fold's probe" and t.plan["seconds_per_step"] != 0.25
    result = Trainer(*fold_setup(tmp_path / "b", epochs=1, batch_size=4, precision="fp32"), Dist()).fit()
    assert result.pace.model == "test_nfnet" and result.pace.batch_size == 4 and result.pace.seconds_per_step > 0


def test_a_run_says_its_plan_in_cv_md(tmp_path, capsys):
    comp = make_competition(tmp_path / "comp", per_class=6)
    r = run_entry(capsys, "train.py", "--data-dir", comp, "--folds-csv", tmp_path / "f.csv", "--num-folds", "2",
                  "--run-dir", tmp_path / "run", *TINY, "--fold", "1")
    assert r.returncode == 0, r.stderr
    cv = (tmp_path / "run" / "cv.md").read_text()
    plan = json.loads((tmp_path / "run" / "fold1" / "plan.json").read_text())
    assert plan["model"] == "test_nfnet" and plan["batch_size"] == 8 and plan["epochs"] == 2
    assert "## Plan" in cv and f"| 1 | test_nfnet | set by --model | 8 | 0.05 | 0.16 (auto) | {plan['precision']} | 2 |" in cv
    assert plan["agc"] == "0.16 (auto)"                       # batch 8, SGD: the cap; test_nfnet has no norm layers
