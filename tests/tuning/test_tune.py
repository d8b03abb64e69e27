"""kit.tune: the space file is checked before anything runs; each trial is a run dir whose CV is the trial's value;
a failed trial is recorded as failed; the study continues where it stopped; two workers share one study."""
from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest

from helpers import ROOT, TINY, assert_user_error, csv_records, make_competition, run_entry

optuna = pytest.importorskip("optuna", reason="optuna (the tune extra; in dev)")

FIXED = [*TINY[:5], "--epochs", "1", "--batch-size", "8", "--num-workers", "0"]


def study(tmp_path, name="s"):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path / 'study' / 'study.db'}")


@pytest.mark.parametrize("space, message", [
    ("lr_bsae: {low: 0.01, high: 0.1}", r"lr_bsae is not a setting \(did you mean lr_base\?\)"),
    ("folds_csv: {choices: [a.csv, b.csv]}", r"folds_csv cannot be searched"),
    ("accum_steps: {low: 5, high: 2}", r"accum_steps: low and high must be integers with low < high"),
    ("accum_steps: {low: 1.5, high: 4}", r"accum_steps: low and high must be integers"),
    ("lr: {low: 0, high: 0.1, log: true}", r"lr: a log range needs low > 0"),
    ("optimizer: {low: 1, high: 2}", r"optimizer is a str setting: give choices"),
    ("optimizer: {choices: [sgd, lion]}", r"optimizer: the choice 'lion' is refused"),
    ("img_size: {choices: [16, 24]}", r"img_size is also given on the command line"),
    ("ema: true", r"ema needs either choices"),
])
def test_a_bad_space_is_one_line_and_nothing_is_created(tmp_path, capsys, space, message):
    comp = make_competition(tmp_path / "comp", per_class=4)
    (tmp_path / "space.yaml").write_text(space + "\n")
    r = run_entry(capsys, "kit.tune", "--data-dir", comp, "--space", tmp_path / "space.yaml", "--trials", "2",
                  "--run-dir", tmp_path / "study", "--folds-csv", tmp_path / "folds.csv", *FIXED)
    assert_user_error(r, message)
    assert not (tmp_path / "study").exists() and not (tmp_path / "folds.csv").exists()


def test_each_trial_is_a_run_dir_whose_cv_is_its_value_and_the_study_continues(tmp_path, capsys):
    comp = make_competition(tmp_path / "comp", per_class=6)
    (tmp_path / "space.yaml").write_text("lr: {low: 0.001, high: 0.1, log: true}\n"
                                         "model: {choices: [test_nfnet, not_a_timm_model]}\n")
    args = ["kit.tune", "--data-dir", comp, "--space", tmp_path / "space.yaml", "--run-dir", tmp_path / "study",
            "--folds-csv", tmp_path / "folds.csv", "--pruner", "none", "--study", "s", *FIXED[2:]]
    r = run_entry(capsys, *args, "--trials", "4")
    assert r.returncode == 0, r.stderr
    trials = study(tmp_path).trials
    assert len(trials) == 4
    states = [t.state.name for t in trials]
    assert {"FAIL", "COMPLETE"} <= set(states)                # the refused model was drawn (seeded), the others ran
    for t in trials:
        run = tmp_path / "study" / f"trial_{t.number}"
        if t.params["model"] == "not_a_timm_model":        # refused by train.py: failed, with its error, no score
            assert t.state.name == "FAIL" and "not_a_timm_model" in t.user_attrs["error"] and t.value is None
            continue
        assert t.state.name == "COMPLETE", states
        oof = csv_records(run / "fold0" / "oof.csv")
        columns = [k for k in oof[0] if k.startswith("prob_")]
        probs = np.array([[float(row[c]) for c in columns] for row in oof])
        accuracy = np.mean([columns[i] == "prob_" + row["label"] for i, row in zip(probs.argmax(1), oof)])
        assert t.value == pytest.approx(accuracy)                         # the value is the trial's own OOF score
        assert (run / "config.yaml").read_text().count(f"lr: {t.params['lr']}") == 1
    best = study(tmp_path).best_trial
    from kit.settings.config import load_config
    cfg = load_config(str(tmp_path / "study" / "best.yaml"))
    assert cfg.lr == best.params["lr"] and cfg.model == "test_nfnet" and cfg.run_dir != str(tmp_path / "study")
    table = (tmp_path / "study" / "trials.md").read_text()
    assert re.search(rf"\| {best.number} \| complete \| {best.value:.6f} \|", table)
    # re-run: the study continues up to --trials, never re-runs a trial
    r = run_entry(capsys, *args, "--trials", "4")
    assert r.returncode == 0 and len(study(tmp_path).trials) == 4
    r = run_entry(capsys, *args, "--trials", "5")
    trials = study(tmp_path).trials
    assert r.returncode == 0 and [t.number for t in trials] == [0, 1, 2, 3, 4]
    assert trials[4].params["lr"] not in [t.params["lr"] for t in trials[:4]]     # a resumed study draws anew


@pytest.mark.slow
def test_two_workers_share_one_sqlite_study_and_run_no_trial_twice(tmp_path):
    comp = make_competition(tmp_path / "comp", per_class=6)
    (tmp_path / "space.yaml").write_text("lr: {low: 0.001, high: 0.1, log: true}\n")
    cmd = [sys.executable, "-m", "kit.tune", "--data-dir", str(comp), "--space", str(tmp_path / "space.yaml"),
           "--run-dir", str(tmp_path / "study"), "--folds-csv", str(tmp_path / "folds.csv"), "--pruner", "none",
           "--study", "s", "--trials", "4", *map(str, FIXED[2:])]
    workers = [subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for _ in range(2)]
    outs = [w.communicate(timeout=600) for w in workers]
    assert all(w.returncode == 0 for w in workers), [o[1][-2000:] for o in outs]
    trials = study(tmp_path).trials
    numbers = [t.number for t in trials]
    assert 4 <= len(trials) <= 5 and len(set(numbers)) == len(numbers)      # a running trial finishes: at most one over
    assert all(t.state.name == "COMPLETE" for t in trials)
    assert sorted(p.name for p in (tmp_path / "study").glob("trial_*") if p.is_dir()) == \
        sorted(f"trial_{n}" for n in numbers)


OPEN_AT = """
import sys, time
from pathlib import Path
import optuna
from kit.tuning.study import open_study
while time.time() < float(sys.argv[2]):
    pass                                # a busy wait: a sleep staggers their start and hides the race
open_study(optuna, Path(sys.argv[1]), None, "s", "maximize", optuna.pruners.NopPruner())
"""


def test_workers_that_start_together_open_a_new_study_one_at_a_time(tmp_path):
    # without the lock, 4 processes creating a new SQLite study at the same instant collided in 3 of 3 tries
    # (alembic's version row: IntegrityError); CI saw it with two tune workers
    import time
    start = time.time() + 8                                        # after every process has imported optuna
    workers = [subprocess.Popen([sys.executable, "-c", OPEN_AT, str(tmp_path), str(start)], cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    outs = [w.communicate(timeout=120) for w in workers]
    assert all(w.returncode == 0 for w in workers), [o[1][-1500:] for o in outs]
    assert [s.study_name for s in optuna.get_all_study_summaries(f"sqlite:///{tmp_path / 'study.db'}")] == ["s"]


def test_epochs_are_reported_per_fold_as_they_finish(tmp_path):
    from kit.store.rundir import RunDir
    from kit.tuning.study import epoch_scores
    fold = tmp_path / "run" / "fold1"
    fold.mkdir(parents=True)
    header = "epoch,lr,train_loss,val_loss,metric,score,is_best,seconds,train_images_per_s\n"
    (fold / "metrics.csv").write_text(header + "1,0.1,2.0,1.9,accuracy,0.40,1,1.0,10\n")
    reported = set()
    assert epoch_scores(RunDir(tmp_path / "run"), reported) == [(1001, 0.40)]
    (fold / "metrics.csv").write_text(header + "1,0.1,2.0,1.9,accuracy,0.40,1,1.0,10\n"
                                               "2,0.1,1.8,1.7,accuracy,0.55,1,1.0,10\n")
    assert epoch_scores(RunDir(tmp_path / "run"), reported) == [(1002, 0.55)]        # only the new epoch
    assert epoch_scores(RunDir(tmp_path / "run"), reported) == []


def test_the_first_trial_trains_the_defaults_as_the_user_would(tmp_path, capsys):
    comp = make_competition(tmp_path / "comp", per_class=6)
    (tmp_path / "space.yaml").write_text("label_smoothing: {low: 0.0, high: 0.3}\n"
                                         "ema_decay: {choices: [0.99, 0.999]}\nbatch_size: {choices: [4, 32]}\n")
    args = ["kit.tune", "--data-dir", comp, "--space", tmp_path / "space.yaml", "--run-dir", tmp_path / "study",
            "--folds-csv", tmp_path / "folds.csv", "--pruner", "none", "--study", "s", *FIXED[:7], "--num-workers", "0"]
    r = run_entry(capsys, *args, "--trials", "2")
    assert r.returncode == 0, r.stderr
    first, second = study(tmp_path).trials
    # the defaults: label_smoothing 0.1, ema_decay 0.999, and the model's batch (32) where the user set none
    assert first.user_attrs["defaults"] and first.params == {"label_smoothing": 0.1, "ema_decay": 0.999,
                                                             "batch_size": 32}
    assert "defaults" not in second.user_attrs
    import yaml
    trial_file = yaml.safe_load((tmp_path / "study" / "trial_0.yaml").read_text())
    assert not {"label_smoothing", "ema_decay", "batch_size"} & set(trial_file)     # left to train.py, as the user's run
    assert set(yaml.safe_load((tmp_path / "study" / "trial_1.yaml").read_text())) >= {"label_smoothing", "ema_decay"}
    assert re.search(r"\| 0 \(the defaults\) \| complete \|", (tmp_path / "study" / "trials.md").read_text())
    r = run_entry(capsys, *args, "--trials", "3")                 # a continued study does not queue them again
    assert r.returncode == 0 and [bool(t.user_attrs.get("defaults")) for t in study(tmp_path).trials] == \
        [True, False, False]


def test_no_defaults_trial_when_the_space_leaves_a_default_out(caplog):
    import logging
    from kit.tuning.space import Param
    from kit.tuning.study import defaults_trial
    inside = [Param("lr_base", "float", 0.1, 1.0, log=True), Param("weight_decay", "float", 1e-5, 1e-4)]
    assert defaults_trial(inside, {}) == {"lr_base": 0.4, "weight_decay": 2e-5}       # lr_base: SGD's 0.4
    assert defaults_trial([Param("lr_base", "float", 1e-4, 1e-2)], {"optimizer": "adamw"}) == {"lr_base": 0.002}
    assert defaults_trial([Param("batch_size", "choice", choices=(32, 64))], {"model": "nf_resnet18"}) == \
        {"batch_size": 64}                                                              # the model's own batch
    with caplog.at_level(logging.INFO, logger="kit.tuning.study"):
        assert defaults_trial([*inside, Param("label_smoothing", "float", 0.15, 0.3)], {}) is None
    assert "label_smoothing=0.1" in caplog.text and "weight_decay" not in caplog.text


@pytest.mark.parametrize("param, value, point", [
    (("aug_hflip", "choice", None, None, False, None, (0, 0.5)), 0.0, 0),           # 0 and 0.0 are one value
    (("ema", "choice", None, None, False, None, (0, 1)), True, None),               # True is not the number 1
    (("agc_clip", "choice", None, None, False, None, ("auto", "0.01")), "auto", "auto"),
    (("epochs", "int", 2, 10, False, 2), 6, 6),                                      # on the step from low
    (("epochs", "int", 2, 10, False, 2), 5, None),                                   # between two steps
    (("drop_rate", "float", 0.0, 0.5), 0.5, 0.5),                                   # the bounds are inside
    (("drop_rate", "float", 0.0, 0.5), 0.6, None),
    (("drop_rate", "float", 0.0, 0.5), None, None),
])
def test_a_space_holds_a_value_only_as_the_sampler_could_draw_it(param, value, point):
    from kit.tuning.space import Param
    got = Param(*param).point(value)
    assert got == point and type(got) is type(point)


def test_trials_md_ranks_completed_trials_only_and_says_where_a_trial_was_pruned(tmp_path):
    from optuna.distributions import FloatDistribution
    from optuna.trial import TrialState, create_trial
    from kit.tuning.space import Param
    from kit.tuning.study import summarize
    s = optuna.create_study(direction="maximize")
    dist = {"drop_rate": FloatDistribution(0.0, 0.5)}
    s.add_trial(create_trial(params={"drop_rate": 0.1}, distributions=dist, value=0.5,
                             user_attrs={"seconds": 9.0, "defaults": True}))
    # Optuna keeps a pruned trial's last epoch as its value: above the completed trial's CV here
    s.add_trial(create_trial(params={"drop_rate": 0.3}, distributions=dist, value=0.9, state=TrialState.PRUNED,
                             intermediate_values={2: 0.9}, user_attrs={"seconds": 3.0, "pruned": "fold 0 epoch 2: 0.9000"}))
    out = summarize(optuna, s, tmp_path, {}, [Param("drop_rate", "float", 0.0, 0.5)])
    assert out["best"] == 0
    rows = [line for line in (tmp_path / "trials.md").read_text().splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert rows[0].startswith("| 0 (the defaults) | complete | 0.500000 | 0.1 |")
    assert rows[1] == "| 1 | pruned |  | 0.3 | 3.0 | fold 0 epoch 2: 0.9000 |"
