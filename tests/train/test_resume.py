"""Crash safety: SIGKILL at random moments + --resume ends bit-identical to an uninterrupted run."""
import hashlib
import os
import random
import subprocess
import sys
import time

import pytest
import torch

from helpers import ROOT, make_competition, run_cli, save_crafted_checkpoint
from kit.store import checkpoint
from kit.core.errors import KitError


def digest(state: dict) -> str:
    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode())
        h.update(state[k].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def train_args(comp, tmp_path, run, *extra):
    return ["train.py", "--data-dir", comp, "--fold", "0", "--num-folds", "2", "--folds-csv", tmp_path / "folds.csv",
            "--run-dir", tmp_path / run, "--model", "test_nfnet", "--no-pretrained", "--img-size", "48",
            "--epochs", "4", "--batch-size", "4", "--num-workers", "0", "--save-every-steps", "1", *extra]


def start_training(args):
    """Start train.py; return (process, its output lines so far) once it has printed its training banner."""
    proc = subprocess.Popen([sys.executable, *map(str, args)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, bufsize=1, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if " train / " in line:            # "fold 0: N train / M val images, ..." -> the training loop starts
            break
    return proc, lines


def test_kill_and_resume_is_bit_identical(tmp_path):
    comp = make_competition(tmp_path / "comp", per_class=20)
    clean = run_cli(*train_args(comp, tmp_path, "clean"))
    assert clean.returncode == 0, clean.stderr
    with open(tmp_path / "clean" / "fold0" / "metrics.csv") as f:
        train_seconds = sum(float(r.split(",")[7]) for r in f.read().splitlines()[1:])

    rng = random.Random(1234)
    kills, outputs = 0, []
    last = tmp_path / "killed" / "fold0" / "last.pt"
    for _ in range(15):
        before = last.stat().st_mtime_ns if last.exists() else 0
        proc, lines = start_training(train_args(comp, tmp_path, "killed", "--resume"))
        while proc.poll() is None and (last.stat().st_mtime_ns if last.exists() else 0) == before:
            time.sleep(0.005)                                   # wait for this run's first saved step
        time.sleep(rng.uniform(0.0, 0.3) * train_seconds)     # then a random moment of the training loop
        if proc.poll() is None:
            proc.kill()
            kills += 1
        outputs.append("".join(lines) + proc.communicate()[0])
        assert proc.returncode in (0, -9), outputs[-1]
        if proc.returncode == 0 or kills == 4:
            break
    final = run_cli(*train_args(comp, tmp_path, "killed", "--resume"))
    assert final.returncode == 0, final.stderr
    outputs.append(final.stdout)
    resumes = [ln for o in outputs for ln in o.splitlines() if "resuming at epoch" in ln]
    assert kills >= 3, f"only {kills} kills landed; outputs: {outputs}"
    assert any(", batch 0 " not in ln for ln in resumes), resumes      # at least one mid-epoch resume

    for name in ("last.pt", "best.pt"):
        a = checkpoint.load(tmp_path / "clean" / "fold0" / name)
        b = checkpoint.load(tmp_path / "killed" / "fold0" / name)
        assert digest(a["model"]) == digest(b["model"]), name
        assert a["epoch"] == b["epoch"]
    a = checkpoint.load(tmp_path / "clean" / "fold0" / "last.pt")
    b = checkpoint.load(tmp_path / "killed" / "fold0" / "last.pt")
    assert digest(a["ema"]) == digest(b["ema"]) and a["updates"] == b["updates"]
    assert (tmp_path / "clean/fold0/oof.csv").read_text() == (tmp_path / "killed/fold0/oof.csv").read_text()
    leftovers = [p for p in (tmp_path / "killed").rglob(".*tmp*")]
    assert leftovers == []


def test_resume_refuses_changed_settings_unless_forced(tmp_path):
    comp = make_competition(tmp_path / "comp", per_class=6)
    first = run_cli(*train_args(comp, tmp_path, "run")[:-2], "--epochs", "1")
    assert first.returncode == 0, first.stderr
    r = run_cli(*train_args(comp, tmp_path, "run")[:-2], "--epochs", "2", "--lr", "0.2", "--resume")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "cannot resume fold 0: epochs: 1 -> 2; lr: 0.00625 -> 0.2" in r.stderr and "--force-resume" in r.stderr   # lr: 0.4 x 4 / 256
    r = run_cli(*train_args(comp, tmp_path, "run")[:-2], "--epochs", "2", "--force-resume")
    assert r.returncode == 0, r.stderr
    assert "warning: resuming with changed settings" in r.stdout
    assert checkpoint.load(tmp_path / "run" / "fold0" / "last.pt")["epoch"] == 2


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    comp = make_competition(tmp_path / "comp", per_class=6)
    r = run_cli(*train_args(comp, tmp_path, "run"), "--lr", "1e30", "--agc-clip", "0")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "the loss became nan at epoch 1, batch 2" in r.stderr or "the loss became inf at epoch 1, batch 2" in r.stderr
    last = checkpoint.load(tmp_path / "run" / "fold0" / "last.pt")
    assert last["updates"] == 1
    assert all(torch.isfinite(v).all() for v in last["model"].values() if v.is_floating_point())


def test_second_trainer_on_the_same_fold_is_refused(tmp_path):
    from kit.store.lock import fold_lock
    comp = make_competition(tmp_path / "comp", per_class=6)
    (tmp_path / "run" / "fold0").mkdir(parents=True)
    with fold_lock(tmp_path / "run" / "fold0") as lock:
        lock.claim()
        r = run_cli(*train_args(comp, tmp_path, "run"))
    assert r.returncode == 2 and "is being trained by another process" in r.stderr
    import os
    assert f"pid {os.getpid()}" in r.stderr
    r = run_cli(*train_args(comp, tmp_path, "run"), "--epochs", "1")       # lock released: trains
    assert r.returncode == 0, r.stderr


def test_crash_while_saving_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    checkpoint.save({"model": {"w": torch.ones(3)}}, path)

    def dying_save(obj, f):
        with open(f, "wb") as fh:
            fh.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.torch, "save", dying_save)
    with pytest.raises(OSError):
        checkpoint.save({"model": {"w": torch.zeros(3)}}, path)
    assert torch.equal(checkpoint.load(path)["model"]["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_crafted_checkpoint_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    save_crafted_checkpoint(tmp_path / "evil.pt", "model", marker)
    with pytest.raises(KitError, match="refusing to load .*evil.pt.*could run arbitrary code"):
        checkpoint.load(tmp_path / "evil.pt")
    assert not marker.exists()
