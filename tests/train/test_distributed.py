"""torchrun on the CPU (gloo): 2 processes at per-process batch B/2 against 1 process at batch B."""
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from helpers import ROOT, csv_records, make_competition, run_cli
from kit.store import checkpoint

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def torchrun(nproc, *args, **kw):
    return run_cli("-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "train.py", *args,
                   env=ENV, **kw)


def common(comp, tmp_path, run, batch):
    (tmp_path / "nodrop.yaml").write_text("drop_rate: 0.0\ndrop_path_rate: 0.0\n")
    return ["--config", tmp_path / "nodrop.yaml", "--data-dir", comp, "--folds-csv", tmp_path / "folds.csv",
            "--num-folds", "2", "--run-dir", tmp_path / run, "--model", "test_nfnet", "--no-pretrained",
            "--img-size", "32", "--epochs", "2", "--batch-size", str(batch), "--num-workers", "0"]


@pytest.fixture(scope="module")
def one_and_two(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    comp = make_competition(tmp / "comp", per_class=12)
    t = time.time()
    single = run_cli("train.py", *common(comp, tmp, "one", 8), "--fold", "all", env=ENV)
    t_single, t = time.time() - t, time.time()
    double = torchrun(2, *common(comp, tmp, "two", 4), "--fold", "all")
    t_double = time.time() - t
    assert single.returncode == 0, single.stderr
    assert double.returncode == 0, double.stderr + double.stdout
    print(f"\n1 process: {t_single:.1f}s, 2 processes: {t_double:.1f}s")
    return comp, tmp, single, double


def test_two_processes_match_one_at_the_same_global_batch(one_and_two):
    comp, tmp, single, double = one_and_two
    for k in range(2):
        a = checkpoint.load(tmp / "one" / f"fold{k}" / "last.pt")
        b = checkpoint.load(tmp / "two" / f"fold{k}" / "last.pt")
        assert a["updates"] == b["updates"] and b["world_size"] == 2
        # same images in the same global batches: only the float summation order differs
        diff = max((a["model"][n] - b["model"][n]).abs().max().item() for n in a["model"])
        assert diff < 1e-3, diff
        sa = [float(m["score"]) for m in csv_records(tmp / "one" / f"fold{k}" / "metrics.csv")]
        sb = [float(m["score"]) for m in csv_records(tmp / "two" / f"fold{k}" / "metrics.csv")]
        assert np.allclose(sa, sb, atol=0.05), (sa, sb)


def test_oof_covers_every_image_once(one_and_two):
    comp, tmp, single, double = one_and_two
    oof = csv_records(tmp / "two" / "oof.csv")
    ids = [r["image_id"] for r in oof]
    assert len(ids) == len(set(ids)) == len(csv_records(comp / "train.csv"))
    for k in range(2):
        fold_ids = [r["image_id"] for r in csv_records(tmp / "two" / f"fold{k}" / "oof.csv")]
        want = [r["image_id"] for r in csv_records(tmp / "folds.csv") if r["fold"] == str(k)]
        assert sorted(fold_ids) == sorted(want) and len(fold_ids) == len(set(fold_ids))
    # rank 0 alone prints: one CV line, one banner per fold
    assert double.stdout.count("CV accuracy:") == 1
    assert double.stdout.count("on each of 2 processes") == 2


@pytest.mark.slow      # in CI's second pass (-m slow); the default run stays under ~10 minutes
def test_resume_under_torchrun_is_exact(tmp_path):
    comp = make_competition(tmp_path / "comp", per_class=40)

    def args(run):
        return [*common(comp, tmp_path, run, 2), "--fold", "0", "--epochs", "3", "--save-every-steps", "1"]

    reference = torchrun(2, *args("reference"))
    assert reference.returncode == 0, reference.stderr + reference.stdout
    last = tmp_path / "killed" / "fold0" / "last.pt"
    rng = __import__("random").Random(7)
    for attempt in range(4):
        proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone",
                                 "--nproc_per_node=2", "train.py", *map(str, args("killed"))], cwd=ROOT, env=ENV,
                                start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while not last.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.3))                  # somewhere in the training loop
        if proc.poll() is None:           # the launcher and its workers (which torchrun puts in their own sessions)
            os.killpg(proc.pid, signal.SIGKILL)
            subprocess.run(["pkill", "-KILL", "-f", str(tmp_path / "killed")])
        proc.wait()
        time.sleep(0.5)
        if last.exists() and checkpoint.load(last)["epoch"] < 3:
            break
        shutil.rmtree(tmp_path / "killed")
    else:
        pytest.fail("every run finished before the kill; the test data is too small for this machine")
    r = torchrun(2, *args("killed"), "--resume")
    assert r.returncode == 0, r.stderr + r.stdout
    assert "resuming at epoch" in r.stdout, r.stdout
    a = checkpoint.load(tmp_path / "reference" / "fold0" / "last.pt")
    b = checkpoint.load(last)
    assert a["updates"] == b["updates"]
    assert all(torch.equal(a["model"][n], b["model"][n]) for n in a["model"])
    assert all(torch.equal(a["ema"][n], b["ema"][n]) for n in a["ema"])
