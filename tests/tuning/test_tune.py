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
