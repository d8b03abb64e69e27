"""What competitors tune next: class imbalance (samplers, class weights, focal loss), weight averaging over the best
epochs, and runs per seed blended like any runs."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from helpers import TINY, assert_user_error, make_competition, run_entry
from kit.core.task import Multiclass, Multilabel
from kit.train.loader import EpochSampler, class_balance


def test_focal_loss_and_class_weights_per_task():
    torch.manual_seed(0)
    logits, y = torch.randn(6, 3), torch.tensor([0, 1, 2, 2, 1, 0])
    task = Multiclass(list("abc"))
    soft = task.soft_targets(y, 0.0)
    p = logits.softmax(-1)
    want = -(soft * (1 - p) ** 2 * p.log()).sum(-1)                       # Lin et al.'s focal loss, gamma 2
    torch.testing.assert_close(task.loss(logits, soft, focal_gamma=2.0), want)
    torch.testing.assert_close(task.loss(logits, soft, focal_gamma=0.0), torch.nn.functional.cross_entropy(logits, y, reduction="none"))
    weights = torch.tensor([1.0, 2.0, 0.5])
    torch.testing.assert_close(task.hard_loss(logits, y, class_weights=weights, reduction="none"),
                               torch.nn.functional.cross_entropy(logits, y, reduction="none") * weights[y])
    tags = Multilabel(list("abc"))
    target = (torch.rand(6, 3) > 0.5).float()
    from torchvision.ops import sigmoid_focal_loss
    torch.testing.assert_close(tags.loss(logits, target, focal_gamma=2.0),
                               sigmoid_focal_loss(logits, target, alpha=-1, gamma=2.0, reduction="none").mean(-1))
    counts = np.array([0] * 8 + [1] * 2 + [2] * 10)
    w = task.class_weights(counts)
    assert w[1] == pytest.approx(4 * w[0]) and np.mean(w[counts]) == pytest.approx(1.0)     # mean 1 over the images


def test_class_balanced_sampling_is_deterministic_and_resumable():
    classes = np.array([0] * 90 + [1] * 10)
    rows = np.arange(100)
    sampler = EpochSampler(rows, 7, True, batch_size=10, weights=class_balance(classes, "balanced"))
    sampler.set_epoch(3)
    drawn = [i for i, _ in sampler]
    assert 35 <= np.sum(classes[drawn] == 1) <= 65                     # about half the draws from the 10 % class
    again = EpochSampler(rows, 7, True, batch_size=10, weights=class_balance(classes, "balanced"))
    again.set_epoch(3, start_batch=4)
    assert [i for i, _ in again] == drawn[40:]                          # a resumed epoch continues the same draw
    sqrt = class_balance(classes, "sqrt")
    assert sqrt[95] / sqrt[0] == pytest.approx(3.0)                      # sqrt(90 / 10)
    assert class_balance(classes, "none") is None
    tags = Multilabel(list("abc"))
    y = np.array([[1, 1, 0], [1, 0, 0], [1, 0, 1], [0, 0, 0]])
    assert tags.sampling_classes(y).tolist() == [1, 0, 2, 3]             # the rarest tag; no tag: one more class


@pytest.mark.parametrize("rule", ["balanced", "none"])
def test_the_trainer_draws_by_its_sampler_setting(tmp_path, rule):
    """The Trainer's own loader under --sampler balanced draws a class of 4 training images about as often as the
    classes of 20 (a third of an epoch's draws); under none, each image once."""
    from helpers import fold_setup
    from kit.train.distributed import Dist
    from kit.train.fold import Trainer
    minority = lambda rows: [r for r in rows if r[1] != "fox"] + [r for r in rows if r[1] == "fox"][:8]   # noqa: E731
    cfg, task, data, run = fold_setup(tmp_path, per_class=40, keep=minority, sampler=rule, batch_size=4)
    t = Trainer(cfg, task, data, run, Dist())
    fox = task.names.index("fox")
    counts = np.zeros(3)
    for epoch in range(4):
        t.train_sampler.set_epoch(epoch)
        for _, y in t.train_loader:
            counts += np.bincount(y.numpy(), minlength=3)
    share = counts[fox] / counts.sum()
    in_fold = np.bincount(data.targets[data.train_rows], minlength=3)
    assert in_fold[fox] <= 5 and in_fold.sum() >= 40
    if rule == "balanced":
        assert 0.25 <= share <= 0.42, (share, in_fold)
    else:
        assert share == pytest.approx(in_fold[fox] / in_fold.sum(), abs=0.03)


def test_regression_refuses_settings_that_need_classes(tmp_path, capsys):
    from helpers import make_task_competition
    comp = make_task_competition(tmp_path / "comp", "regression")
    for flags in (["--loss", "focal"], ["--class-weights", "auto"], ["--sampler", "balanced"]):
        r = run_entry(capsys, "train.py", "--data-dir", comp, "--run-dir", tmp_path / "run", "--folds-csv",
                      tmp_path / "f.csv", "--task", "regression", *TINY, *flags)
        assert_user_error(r, r"need classes; a regression target has none")


def test_an_imbalanced_run_reports_per_class_recall(tmp_path, capsys):
    comp = make_competition(tmp_path / "comp", per_class=6)
    r = run_entry(capsys, "train.py", "--data-dir", comp, "--run-dir", tmp_path / "run", "--folds-csv", tmp_path / "f.csv",
                  "--num-folds", "2", *TINY[:-4], "--num-workers", "0", "--epochs", "1", "--fold", "all",
                  "--sampler", "balanced", "--class-weights", "auto", "--loss", "focal", "--metric", "balanced_accuracy")
    assert r.returncode == 0, r.stderr
    cv = (tmp_path / "run" / "cv.md").read_text()
    assert "Class imbalance: sampler balanced, inverse-frequency class weights, focal loss (gamma 2)" in cv
    assert "## Per-class recall (OOF)" in cv and re.search(r"\| (cat|dog|fox) \| [0-9.]+ \| 6 \|", cv)
    assert "Overall OOF balanced_accuracy" in cv


def test_the_average_of_the_best_epochs_is_kept_only_when_it_scores_better(tmp_path, capsys):
    from kit.store import checkpoint
    comp = make_competition(tmp_path / "comp", per_class=8)
    r = run_entry(capsys, "train.py", "--data-dir", comp, "--run-dir", tmp_path / "run", "--folds-csv", tmp_path / "f.csv",
                  "--num-folds", "2", *TINY[:-4], "--num-workers", "0", "--epochs", "4", "--fold", "all",
                  "--avg-top-k", "3", "--metric", "log_loss")
    assert r.returncode == 0, r.stderr
    for k in (0, 1):
        kept = json.loads((tmp_path / "run" / f"fold{k}" / "kept.json").read_text())
        best = checkpoint.load(tmp_path / "run" / f"fold{k}" / "best.pt")
        last = checkpoint.load(tmp_path / "run" / f"fold{k}" / "last.pt")
        assert len(last["top_k"]) == 3 and [t["score"] for t in last["top_k"]] == sorted(t["score"] for t in last["top_k"])
        if len(kept["epochs"]) > 1:            # the average kept: it scored better (log loss: lower)
            assert kept["average_score"] < kept["best_epoch_score"] and best["averaged"] == kept["epochs"]
            assert best["score"] == pytest.approx(kept["average_score"])
            mean = {n: torch.stack([t["model"][n].float() for t in last["top_k"]]).mean(0) for n in best["model"]}
            for n, v in best["model"].items():
                if v.is_floating_point():
                    torch.testing.assert_close(v, mean[n])
        else:
            assert kept["average_score"] >= kept["best_epoch_score"] and best["averaged"] == []
    assert "kept weights |" in (tmp_path / "run" / "cv.md").read_text()
    assert "scores log_loss" in r.stdout and "the average of epochs" in r.stdout


def test_an_average_that_only_ties_the_best_epoch_is_not_kept(tmp_path, capsys, monkeypatch):
    """A tie goes to the plain best epoch: the "average" here is the best epoch's own weights (so it scores exactly
    the same), and the fold keeps the best epoch, not an average of several."""
    from kit.train import keep as keep_module
    monkeypatch.setattr(keep_module, "average_weights", lambda states: states[0])       # top[0]: the best epoch
    comp = make_competition(tmp_path / "comp", per_class=8)
    r = run_entry(capsys, "train.py", "--data-dir", comp, "--run-dir", tmp_path / "run", "--folds-csv", tmp_path / "f.csv",
                  "--num-folds", "2", *TINY[:-4], "--num-workers", "0", "--epochs", "3", "--fold", "0",
                  "--avg-top-k", "2", "--metric", "log_loss")
    assert r.returncode == 0, r.stderr
    kept = json.loads((tmp_path / "run" / "fold0" / "kept.json").read_text())
    assert kept["average_score"] == kept["best_epoch_score"]
    assert len(kept["epochs"]) == 1 and "the best epoch is kept" in r.stdout


def test_seeds_train_on_one_folds_file_and_blend(tmp_path, capsys):
    comp = make_competition(tmp_path / "comp", per_class=6)
    r = run_entry(capsys, "train.py", "--data-dir", comp, "--run-dir", tmp_path / "run", "--folds-csv", tmp_path / "f.csv",
                  "--num-folds", "2", *TINY[:-4], "--num-workers", "0", "--epochs", "1", "--fold", "all",
                  "--seeds", "3,5")
    assert r.returncode == 0, r.stderr
    import yaml
    for seed in (3, 5):
        cfg = yaml.safe_load((tmp_path / "run" / f"seed{seed}" / "config.yaml").read_text())
        assert cfg["seed"] == seed and cfg["folds_csv"] == str(tmp_path / "f.csv")
    weights = [torch.load(tmp_path / "run" / f"seed{s}" / "fold0" / "best.pt", weights_only=True)["model"]
               for s in (3, 5)]
    assert any(not torch.equal(weights[0][n], weights[1][n]) for n in weights[0])       # different seeds, models
    r = run_entry(capsys, "infer.py", "--run-dir", tmp_path / "run", "--out", tmp_path / "s.csv", "--onnx-out",
                  tmp_path / "b.onnx", "--blend", "weights")
    assert r.returncode == 0, r.stderr
    from kit.runtime.predictor import Predictor
    members = Predictor(tmp_path / "b.onnx", "cpu").meta.members
    assert [m["run"].rsplit("/", 1)[1] for m in members] in (["seed3", "seed5"], ["seed3"], ["seed5"])
    assert_user_error(run_entry(capsys, "train.py", "--data-dir", comp, "--run-dir", tmp_path / "x", *TINY,
                                "--seeds", "1,1"), r"--seeds must be distinct integers")


def test_a_time_budget_plans_the_epochs_and_changes_nothing_else(tmp_path, capsys, monkeypatch):
    """The epochs come from the fold's measured first steps; the probe puts back weights, optimizer state and RNGs,
    so the fold then trains bit for bit as a run told that many epochs (the last one cut where the plan cuts it);
    cv.md says the budget and the plan."""
    from kit.train.budget import epochs_text
    from kit.store import checkpoint
    from kit.train import budget
    comp = make_competition(tmp_path / "comp", per_class=6)
    base = ["train.py", "--data-dir", comp, "--folds-csv", tmp_path / "f.csv", "--num-folds", "2", *TINY[:-4],
            "--num-workers", "0", "--warmup-epochs", "0.2", "--fold", "0"]
    r = run_entry(capsys, *base, "--run-dir", tmp_path / "budget", "--time-budget", "8s", "--fold", "all")
    assert r.returncode == 0, r.stderr
    plan = json.loads((tmp_path / "budget" / "fold0" / "plan.json").read_text())
    assert plan["epochs"] >= 1 and plan["budget_s"] == 8 and plan["seconds_per_step"] > 0
    assert plan["pace_from"] == "this fold's probe"
    assert json.loads((tmp_path / "budget" / "fold1" / "plan.json").read_text())["pace_from"] == "fold 0's steps"
    assert 1 <= plan["last_epoch_steps"] <= plan["steps_per_epoch"]
    assert re.search(rf"time budget 8s: [0-9.]+s an epoch measured .* -> {epochs_text(plan)}", r.stdout)
    history = (tmp_path / "budget" / "fold0" / "metrics.csv").read_text().splitlines()
    assert len(history) == plan["epochs"] + 1
    cv = (tmp_path / "budget" / "cv.md").read_text()
    assert (f"Time budget 8s per fold, planned from a timed training step and made again after each fold's first "
            f"epoch: fold 0: {epochs_text(plan)} (") in cv and "the step from fold 0's steps)" in cv
    real_plan = budget.plan                     # a fixed run of that many epochs, its last one cut as the plan's
    monkeypatch.setattr(budget, "plan", lambda t: {**real_plan(t), "last_epoch_steps": plan["last_epoch_steps"]})
    r = run_entry(capsys, *base, "--run-dir", tmp_path / "fixed", "--epochs", str(plan["epochs"]))
    monkeypatch.undo()
    assert r.returncode == 0, r.stderr
    budgeted = checkpoint.load(tmp_path / "budget" / "fold0" / "best.pt")["model"]
    fixed = checkpoint.load(tmp_path / "fixed" / "fold0" / "best.pt")["model"]
    assert all(torch.equal(budgeted[n], fixed[n]) for n in fixed)
    last = checkpoint.load(tmp_path / "budget" / "fold0" / "last.pt")
    assert last["plan"] == plan                                         # a resume keeps the plan
    r = run_entry(capsys, *base, "--run-dir", tmp_path / "budget", "--time-budget", "8s", "--resume", "--fold", "all")
    assert r.returncode == 0 and "already trained" in r.stdout, r.stdout
    assert_user_error(run_entry(capsys, *base, "--run-dir", tmp_path / "x", "--time-budget", "soon"),
                      r"time_budget must be a duration like 20m")


def test_skewed_classes_get_advice_in_the_log_and_cv_md_but_no_silent_change(tmp_path, capsys):
    """A 12:1 class skew with the plain settings: the run says so and names the measured options; with a sampler set
    it says nothing; the settings themselves stay as given."""
    comp = make_competition(tmp_path / "comp", per_class=24)
    import csv
    rows = list(csv.reader(open(comp / "train.csv")))[1:]
    kept = [r for r in rows if r[1] != "fox"] + [r for r in rows if r[1] == "fox"][:2]
    from helpers import write_rows
    write_rows(comp / "train.csv", ["image_id", "label"], kept)
    base = ["train.py", "--data-dir", comp, "--folds-csv", tmp_path / "f.csv", "--num-folds", "2", *TINY, "--epochs", "1"]
    r = run_entry(capsys, *base, "--run-dir", tmp_path / "plain", "--fold", "all")
    assert r.returncode == 0, r.stderr
    said = "The classes are imbalanced (largest 24 images, smallest 2: 12:1) and this run does nothing about it"
    assert said in r.stdout and "--sampler balanced +9.3 pt macro-F1" in r.stdout
    assert said in (tmp_path / "plain" / "cv.md").read_text()
    import yaml
    assert yaml.safe_load((tmp_path / "plain" / "config.yaml").read_text())["sampler"] == "none"
    r = run_entry(capsys, *base, "--run-dir", tmp_path / "balanced", "--sampler", "balanced")
    assert r.returncode == 0 and "imbalanced" not in r.stdout
