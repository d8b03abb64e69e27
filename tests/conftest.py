"""The fixtures: small competition folders built from real digit scans, a trained run, its exported graphs (shared
helpers are in helpers.py)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):
    # one torch thread per test worker, and in every command a test starts: two workers with torch's default of a
    # thread per core would oversubscribe the cores
    os.environ["OMP_NUM_THREADS"] = "1"

from helpers import TINY, make_competition, make_task_competition, run_cli


@pytest.fixture(scope="session", autouse=True)
def digest_cache(tmp_path_factory):
    """The tests' commands remember file digests (kit.core.digest) in a folder of their own, not the user's cache."""
    os.environ["KIT_CACHE_DIR"] = str(tmp_path_factory.mktemp("kit-cache"))


@pytest.fixture
def kit_log(caplog):
    """caplog, receiving the kit's messages (the entry points stop them from reaching the root logger)."""
    import logging
    logger = logging.getLogger("kit")
    logger.addHandler(caplog.handler)
    caplog.set_level(logging.INFO, logger="kit")
    yield caplog
    logger.removeHandler(caplog.handler)



@pytest.fixture
def competition(tmp_path) -> Path:
    return make_competition(tmp_path / "comp")



@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """A 3-fold test_nfnet run trained with `--fold all` on a small competition (string labels)."""
    tmp = tmp_path_factory.mktemp("e2e")
    comp = make_competition(tmp / "comp", per_class=10)
    run_dir, folds_csv = tmp / "run", tmp / "folds.csv"
    result = run_cli("train.py", "--data-dir", comp, "--fold", "all", "--num-folds", "3", "--run-dir", run_dir,
                     "--folds-csv", folds_csv, *TINY[:-4], "--num-workers", "1", "--lr", "0.05")
    assert result.returncode == 0, result.stderr
    return comp, run_dir, folds_csv, result



@pytest.fixture(scope="session")
def task_graphs(tmp_path_factory, onnx_file, trained) -> dict:
    """{kind: (competition, exported graph)} for a multiclass, a multilabel and a regression run (test_nfnet)."""
    graphs = {"multiclass": (trained[0], onnx_file)}
    for kind in ("multilabel", "regression"):
        tmp = tmp_path_factory.mktemp(kind)
        comp = make_task_competition(tmp / "comp", kind)
        r = run_cli("train.py", "--data-dir", comp, "--fold", "all", "--num-folds", "2", "--run-dir", tmp / "run",
                    "--folds-csv", tmp / "folds.csv", "--task", kind, *TINY[:3], "--img-size", "16", "--epochs", "1",
                    "--batch-size", "8", "--num-workers", "0")
        assert r.returncode == 0, r.stderr
        r = run_cli("infer.py", "--run-dir", tmp / "run", "--export-only", "--onnx-out", tmp / "graph.onnx")
        assert r.returncode == 0, r.stderr
        graphs[kind] = (comp, tmp / "graph.onnx")
    return graphs



@pytest.fixture(scope="session")
def onnx_file(trained, tmp_path_factory):
    """The trained run's ensemble, exported through the CLI and moved out of the run dir."""
    _, run_dir, _, _ = trained
    out = tmp_path_factory.mktemp("onnx") / "ensemble.onnx"
    r = run_cli("infer.py", "--run-dir", run_dir, "--export-only")
    assert r.returncode == 0, r.stderr
    (run_dir / "ensemble.onnx").rename(out)
    return out

