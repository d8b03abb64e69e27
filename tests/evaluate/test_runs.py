"""python -m kit.runs: one row per run dir under a folder, its CV the mean of its finished folds' OOF scores, only the
settings that differ as columns, best first in the metric's direction; bad folders are one error line."""
from __future__ import annotations

import shutil

import numpy as np
import yaml

from helpers import assert_user_error, csv_records, run_entry


def fold_accuracy(fold_dir) -> float:
    """A fold's validation accuracy recomputed from its oof.csv (the kept model's predictions), not from metrics.csv."""
    rows = csv_records(fold_dir / "oof.csv")
    columns = [k for k in rows[0] if k.startswith("prob_")]
    probs = np.array([[float(r[c]) for c in columns] for r in rows])
    return float(np.mean([columns[i] == "prob_" + r["label"] for i, r in zip(probs.argmax(1), rows)]))


def cells(table: str, name: str) -> dict:
    lines = [line for line in table.splitlines() if line.startswith("|")]
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    for line in lines[2:]:
        row = [c.strip() for c in line.strip("|").split("|")]
        if row[0] == name:
            return dict(zip(head, row))
    raise AssertionError(f"no row {name} in\n{table}")


def test_every_run_is_a_row_with_its_own_folds_cv_and_only_the_differing_settings(trained, tmp_path, capsys):
    _, run, _, _ = trained
    root = tmp_path / "runs"
    for name in ("a", "b", "deeper/c"):
        shutil.copytree(run, root / name, ignore=shutil.ignore_patterns("ensemble*.onnx", "*.lock"))
    config = yaml.safe_load((root / "b" / "config.yaml").read_text())
    config["lr"] = 0.5                                          # b differs in lr only (as the run's config says)
    (root / "b" / "config.yaml").write_text(yaml.safe_dump(config))
    shutil.rmtree(root / "deeper" / "c" / "fold2")              # c: 2 of 3 folds
    (root / "a" / "ensemble.onnx").write_bytes(b"x")
    (root / "blend_a+b").mkdir()
    r = run_entry(capsys, "kit.runs", root, "--md", tmp_path / "runs.md")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "runs.md").read_text() == r.stdout
    assert r.stdout.startswith(f"3 run(s) under {root}, sorted by cv")
    head = [c.strip() for c in r.stdout.splitlines()[2].strip("|").split("|")]
    assert "lr" in head and "seed" not in head and "epochs" not in head      # equal settings are left out
    a, b, c = cells(r.stdout, "a"), cells(r.stdout, "b"), cells(r.stdout, "deeper/c")
    scores = [fold_accuracy(run / f"fold{k}") for k in range(3)]
    assert a["CV (fold mean ± std)"].startswith(f"{np.mean(scores):.4f} ± {np.std(scores, ddof=1):.4f}")
    assert c["CV (fold mean ± std)"].startswith(f"{np.mean(scores[:2]):.4f}")
    assert (a["folds"], c["folds"]) == ("3/3", "2/3")
    assert (a["lr"], b["lr"], a["model"], a["img"]) == ("0.05", "0.5", "test_nfnet", "32")
    assert (a["exported"], b["exported"]) == ("ensemble.onnx", "–")
    assert a["blends"] == b["blends"] == "blend_a+b" and c["blends"] == "–"
    order = [line.split("|")[1].strip() for line in r.stdout.splitlines()[4:]]
    expected = sorted(["a", "b", "deeper/c"], key=lambda n: -float(cells(r.stdout, n)["CV (fold mean ± std)"][:6]))
    assert order == expected                                    # best CV first (accuracy: higher is better)
    r = run_entry(capsys, "kit.runs", root, "--sort", "name")
    assert [line.split("|")[1].strip() for line in r.stdout.splitlines()[4:]] == ["a", "b", "deeper/c"]


def test_a_folder_without_runs_is_one_error_line_and_nothing_is_written(tmp_path, capsys):
    r = run_entry(capsys, "kit.runs", tmp_path / "missing")
    assert_user_error(r, r"missing is not a folder; give the folder that holds your run dirs")
    (tmp_path / "empty" / "fold0").mkdir(parents=True)
    (tmp_path / "empty" / "fold0" / "config.yaml").write_text("model: x\n")        # a fold's config is not a run
    r = run_entry(capsys, "kit.runs", tmp_path / "empty", "--md", tmp_path / "out.md")
    assert_user_error(r, r"no run dirs under .*empty \(a run dir holds config.yaml and fold<k>/")
    assert not (tmp_path / "out.md").exists()
