"""--tracker: MLflow, W&B and TensorBoard get the settings, every epoch of every fold, the CV and the reports, read
back through their own readers (MlflowClient over a SQLite store, wandb's reader of its offline files, TensorBoard's
EventAccumulator)."""
from __future__ import annotations

import pytest

from helpers import TINY, assert_user_error, csv_records, make_competition, run_entry

def _train_in_two_commands(tmp_path, capsys, tracker: str):
    """Fold 0, then fold 1 and the CV from another command (--fold all --resume), into tmp_path/run of a 3-class
    competition, tracked by `tracker`; the second command's result."""
    comp = make_competition(tmp_path / "comp", per_class=5)
    base = ["train.py", "--data-dir", comp, "--run-dir", tmp_path / "run", "--folds-csv", tmp_path / "f.csv",
            "--num-folds", "2", *TINY, "--tracker", tracker]
    r = run_entry(capsys, *base, "--fold", "0")
    assert r.returncode == 0, r.stderr
    r = run_entry(capsys, *base, "--fold", "all", "--resume")
    assert r.returncode == 0, r.stderr
    return r


def test_mlflow_gets_settings_epochs_cv_and_reports_in_one_run_per_run_dir(tmp_path, capsys, monkeypatch):
    pytest.importorskip("mlflow")      # the dev extra has it (mlflow-skinny)
    from mlflow.tracking import MlflowClient
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    (tmp_path / "store").mkdir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    r = _train_in_two_commands(tmp_path, capsys, "mlflow,tensorboard")
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("comp")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1                                     # one MLflow run for the run dir, found again by its tag
    run = runs[0]
    assert run.data.params["model"] == "test_nfnet" and run.data.params["batch_size"] == "8"
    assert run.data.tags["kit.run_dir"] == str((tmp_path / "run").resolve())
    for fold in (0, 1):
        logged = [m.value for m in sorted(client.get_metric_history(run.info.run_id, f"fold{fold}.val_accuracy"),
                                          key=lambda m: m.step)]
        scores = [float(m["score"]) for m in csv_records(tmp_path / "run" / f"fold{fold}" / "metrics.csv")]
        assert logged == pytest.approx(scores, abs=1e-6) and len(logged) == 2
    cv = float(next(ln for ln in r.stdout.splitlines() if ln.startswith("CV accuracy:")).split()[2])
    assert run.data.metrics["cv.accuracy"] == pytest.approx(cv, abs=1e-4)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"cv.md", "oof.csv", "curves.png", "fold0", "fold1"} <= artifacts
    assert {"fold1/metrics.csv", "fold1/plan.json"} <= {a.path for a in client.list_artifacts(run.info.run_id, "fold1")}
    assert (tmp_path / "store" / "mlartifacts").is_dir()      # beside the store, not in the working directory
    assert (tmp_path / "run" / "fold1" / "tb").is_dir()       # the second tracker too


def test_an_unknown_or_missing_tracker_is_one_error_line(tmp_path, capsys, monkeypatch):
    comp = make_competition(tmp_path / "comp", per_class=4)
    base = ["train.py", "--data-dir", comp, "--folds-csv", tmp_path / "f.csv", *TINY]
    assert_user_error(run_entry(capsys, *base, "--run-dir", tmp_path / "a", "--tracker", "mlflow,comet"),
                      r"--tracker 'comet': unknown tracker; trackers: none, tensorboard, mlflow")
    import kit.train.tracking
    monkeypatch.setattr(kit.train.tracking.importlib.util, "find_spec",
                        lambda name: None if name == "mlflow" else object())
    assert_user_error(run_entry(capsys, *base, "--run-dir", tmp_path / "b", "--tracker", "mlflow"),
                      r"--tracker mlflow needs the mlflow package: pip install -e '.\[track\]'")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists() and not (tmp_path / "f.csv").exists()


def _wandb_records(run_dir):
    """Every record of the W&B offline runs under a run dir (one per command), by type, read with wandb's own reader
    of its run files (`wandb leet inspect --json`)."""
    import json
    import subprocess
    import sys
    found = {}
    for path in sorted((run_dir / "wandb").glob("offline-run-*/run-*.wandb")):
        out = subprocess.run([sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(path)],
                             capture_output=True, text=True, check=True).stdout
        for record in map(json.loads, out.splitlines()):
            found.setdefault(record["type"], []).append(record[record["type"]])
    return found


def test_wandb_offline_gets_settings_epochs_cv_and_reports_in_one_run_per_run_dir(tmp_path, capsys, monkeypatch):
    pytest.importorskip("wandb")
    for name in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_DIR", "WANDB_PROJECT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))          # no `wandb login` here: offline by default
    r = _train_in_two_commands(tmp_path, capsys, "wandb")
    records = _wandb_records(tmp_path / "run")
    assert len(records["run"]) == 2 and all(run["run_id"] == records["run"][0]["run_id"] for run in records["run"])
    assert records["run"][0]["project"] == "comp" and all(e["feature"].get("offline") for e in records["telemetry"])
    config = {k: v for c in records["config"] for k, v in c["update"].items()}
    assert config["model"] == "test_nfnet" and config["batch_size"] == 8
    for fold in (0, 1):
        logged = [(h["item"][f"fold{fold}/epoch"], h["item"][f"fold{fold}/val_accuracy"]) for h in records["history"]
                  if f"fold{fold}/val_accuracy" in h["item"]]
        scores = [(int(m["epoch"]), float(m["score"]))
                  for m in csv_records(tmp_path / "run" / f"fold{fold}" / "metrics.csv")]
        assert len(logged) == 2 and [e for e, _ in logged] == [e for e, _ in scores]
        assert [v for _, v in logged] == pytest.approx([v for _, v in scores], abs=1e-6)
    cv = float(next(ln for ln in r.stdout.splitlines() if ln.startswith("CV accuracy:")).split()[2])
    summary = {k: v for s in records["summary"] for k, v in s["update"].items()}
    assert summary["cv/accuracy"] == pytest.approx(cv, abs=1e-4)
    artifact = records["artifact"][-1]           # each command logs the reports as they are then: new versions
    assert artifact["type"] == "run-reports" and {a["name"] for a in records["artifact"]} == {artifact["name"]}
    assert {"cv.md", "oof.csv", "curves.png", "fold1/metrics.csv", "fold1/plan.json"} <= \
        {entry["path"] for entry in artifact["manifest"]["contents"]}
