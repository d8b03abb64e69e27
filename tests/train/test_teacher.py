"""Distillation and pseudo-labels: the losses, the honest-CV rule (a teacher that memorized a fold cannot inflate the
student's CV for it), a student run end to end (any timm model, a normal run dir), the full model, and refusals."""
from __future__ import annotations

import hashlib
import re
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import TINY, assert_user_error, digest, run_cli, run_entry, write_rows
from kit.core.task import Multiclass, Multilabel, Regression
from kit.train.objective import Objective, pack
from kit.train.run import fold_data


# --- the losses ------------------------------------------------------------------------------------------------------

def test_distillation_losses_per_task():
    torch.manual_seed(0)
    logits, t = torch.randn(5, 3), 3.0
    teacher = torch.softmax(torch.randn(5, 3), -1)
    got = Multiclass(list("abc")).distill_loss(logits, teacher, t)
    soft = torch.softmax(teacher.log() / t, -1)                     # the teacher's logits / T, softmaxed
    want = (soft * (soft.log() - torch.log_softmax(logits / t, -1))).sum(-1) * t ** 2
    torch.testing.assert_close(got, want)
    assert float(Multiclass(list("abc")).distill_loss(teacher.log() * 1.0, teacher, 1.0).abs().max()) < 1e-5  # KL(p||p)=0
    tags = torch.sigmoid(torch.randn(5, 3))
    got = Multilabel(list("abc")).distill_loss(logits, tags, t)
    target = torch.sigmoid(torch.logit(tags) / t)
    torch.testing.assert_close(got, torch.nn.functional.binary_cross_entropy_with_logits(
        logits / t, target, reduction="none").mean(-1) * t ** 2)
    task = Regression(["y"], {"kind": "standard", "shift": 10.0, "factor": 2.0})
    value = task.teacher_targets(np.array([[14.0]]))
    assert value.tolist() == [[2.0]]                                 # the teacher's value, in the model's scale
    torch.testing.assert_close(task.distill_loss(torch.tensor([[1.0]]), torch.from_numpy(value), t),
                               torch.tensor([1.0]))


def test_the_student_loss_mixes_labels_teacher_and_weights():
    task = Multiclass(list("abc"))
    logits = torch.randn(4, 3)
    y = torch.tensor([0, 1, 2, 1])
    objective = Objective(task, 0.1, distill_weight=0.3, temperature=2.0)
    label = objective.label_targets(y).numpy()
    teacher = torch.softmax(torch.randn(4, 3), -1).numpy()
    weight = np.array([1.0, 1.0, 0.5, 0.0])                         # a pseudo-labelled row, and one weighted 0
    packed = torch.from_numpy(pack(label, teacher, weight))
    rows = 0.7 * task.loss(logits, torch.from_numpy(label)) + 0.3 * task.distill_loss(logits, torch.from_numpy(teacher), 2.0)
    torch.testing.assert_close(objective.train_loss(logits, packed), (torch.from_numpy(weight).float() * rows).mean())
    mix = 0.6 * torch.eye(4) + 0.4 * torch.eye(4).flip(0)
    mixed = mix @ packed
    rows = 0.7 * task.loss(logits, mixed[:, :3]) + 0.3 * task.distill_loss(logits, mixed[:, 3:6], 2.0)
    torch.testing.assert_close(objective.train_loss(logits, packed, mix), (mixed[:, 6] * rows).mean())


# --- the honest-CV rule ------------------------------------------------------------------------------------------------

# --- what a student fold is taught, without training --------------------------------------------------------------

def _teacher_runs(root, ids, classes=3, folds=3, runs=2):
    """`runs` teacher run dirs with folds 0..folds-1, each with a best.pt (bytes of its own) and an oof.csv whose
    outputs say which run wrote them: run r's OOF row i is (i, r, 1) normalized."""
    from kit.store.oof import Oof, write_oof
    from kit.store.rundir import RunDir
    out = []
    for r in range(runs):
        run = RunDir(root / f"teacher{r}")
        for k in range(folds):
            run.fold_dir(k).mkdir(parents=True)
            run.best(k).write_bytes(f"run {r} fold {k}".encode())
            rows = [i for i in range(len(ids)) if i % folds == k]
            outputs = np.array([[i + 1, r + 1, 1] for i in rows], float)
            write_oof(run.oof(k), Oof([ids[i] for i in rows], ["a"] * len(rows), np.full(len(rows), k),
                                      outputs / outputs.sum(1, keepdims=True), list("abc")))
        out.append(run)
    return out


def _fold_prediction(run, k, paths):
    """A stand-in teacher fold model: image j's prediction tells the run, the fold and the image apart."""
    r = int(run.path.name[-1])
    rows = np.array([[1 + k, 1 + r, 1 + int(p.stem[3:])] for p in paths], float)
    return rows / rows.sum(1, keepdims=True)


def test_a_student_fold_is_taught_by_its_own_teacher_fold_and_the_full_model_by_all(tmp_path, monkeypatch):
    """Fold k's training rows and pseudo-labels come from teacher fold k (the mean over teacher runs); the full model's
    training rows from each run's OOF, its pseudo-labels from every fold of every run. Labels, teacher targets and
    weights packed per row; only test images at or above the threshold kept, with their own paths and weights."""
    from pathlib import Path
    from types import SimpleNamespace
    import kit.train.teacher as teacher_mod
    from kit.store.rundir import FULL
    from kit.train.teacher import Teacher, fingerprint, teaching
    task = Multiclass(list("abc"))
    ids = [f"img{i}" for i in range(9)]
    table = SimpleNamespace(ids=ids, paths=[Path(f"train/{i}.png") for i in ids])
    runs = _teacher_runs(tmp_path, ids)
    tests = [Path(f"test/img{j}.png") for j in (20, 0, 7)]
    monkeypatch.setattr(teacher_mod, "pseudo_paths", lambda cfg: tests)
    teacher = Teacher(runs, task, _fold_prediction, {(run.path, k): fingerprint(run, k) for run in runs
                                                       for k in range(3)})
    targets = np.array([i % 3 for i in range(9)])
    objective = Objective(task, label_smoothing=0.0, distill_weight=0.5)
    rows = np.array([0, 2, 3, 5, 6, 8])                   # fold 1's training rows

    def mean_of(k, paths):
        return np.mean([_fold_prediction(run, k, paths) for run in runs], 0)
    threshold = float(mean_of(1, tests)[2].max())        # the third test image exactly at the threshold: kept
    cfg = SimpleNamespace(pseudo_label=True, pseudo_threshold=threshold, pseudo_weight=0.3)
    taught = teaching(teacher, objective, cfg, table, targets, rows, 1)
    label, teach, weight = taught.targets[:, :3], taught.targets[:, 3:6], taught.targets[:, 6]
    np.testing.assert_array_equal(label[:9][rows], np.eye(3)[targets[rows]])
    np.testing.assert_array_equal(label[[1, 4, 7]], 0)                       # validation rows never read
    np.testing.assert_allclose(teach[:9][rows], mean_of(1, [table.paths[r] for r in rows]), rtol=1e-6)
    test_out = mean_of(1, tests)
    keep = [j for j in range(3) if test_out[j].max() >= threshold]
    assert keep == [0, 2], test_out.max(1)
    np.testing.assert_allclose(teach[9:], test_out[keep], rtol=1e-6)
    np.testing.assert_allclose(label[9:], test_out[keep], rtol=1e-6)          # a pseudo-label is its soft target
    np.testing.assert_allclose(weight, [1] * 9 + [0.3] * len(keep))
    assert taught.extra_paths == [tests[j] for j in keep]

    full = teaching(teacher, objective, cfg, table, targets, np.arange(9), FULL)
    oof = np.array([[[i + 1, r + 1, 1] for i in range(9)] for r in range(2)], float)
    np.testing.assert_allclose(full.targets[:9, 3:6], (oof / oof.sum(2, keepdims=True)).mean(0), rtol=1e-5)
    every = np.mean([_fold_prediction(run, k, tests) for run in runs for k in range(3)], 0)
    kept = [j for j in range(3) if every[j].max() >= threshold]
    assert 0 < len(kept) < 3, every.max(1)
    np.testing.assert_allclose(full.targets[9:, 3:6], every[kept], rtol=1e-6)
    assert full.extra_paths == [tests[j] for j in kept]

    without = teaching(teacher, objective, SimpleNamespace(**cfg.__dict__ | {"pseudo_label": False}), table, targets,
                       rows, 1)
    assert len(without.targets) == 9 and without.extra_paths == []

    runs[1].best(2).write_bytes(b"retrained")              # teacher fold 2 of run 1 changed since the student started
    teaching(teacher, objective, cfg, table, targets, rows, 1)                 # fold 1 does not read it
    with pytest.raises(Exception, match=r"teacher1: fold 2 changed since this student started"):
        teaching(teacher, objective, cfg, table, targets, rows, 2)
    with pytest.raises(Exception, match="fold 2 changed"):
        teaching(teacher, objective, cfg, table, targets, np.arange(9), FULL)     # the full model reads every fold


def test_a_teacher_loads_each_fold_model_once_and_predicts_the_paths_asked(tmp_path, monkeypatch):
    import kit.train.teacher as teacher_mod
    from kit.train.teacher import Teacher
    runs = _teacher_runs(tmp_path, [f"img{i}" for i in range(6)])
    loaded = []
    monkeypatch.setattr(teacher_mod, "load_members", lambda run, folds: loaded.append((run.path.name, folds)) or
                        [f"model {run.path.name} {folds[0]}"])
    monkeypatch.setattr(teacher_mod, "predict", lambda member, paths: np.array([[len(member), len(paths), 0.0]])
                        if isinstance(paths, list) and member.startswith("model") else None)
    teacher = Teacher(runs, Multiclass(list("abc")))
    assert teacher.predict_fold(runs[1], 2, ("x", "y")).tolist() == [[len("model teacher1 2"), 2, 0]]
    teacher.predict_fold(runs[1], 2, ("x",))
    teacher.ensemble(("x",))
    assert sorted(loaded) == sorted([(f"teacher{r}", [k]) for r in range(2) for k in range(3)])   # once each


def key(path) -> str:
    return hashlib.sha1(open(path, "rb").read()).hexdigest()


def memorizing_competition(root, n=60, classes=3, seed=0):
    """Noise images with random labels (nothing to learn), and a test set of byte-identical copies of them: what a
    model knows about an image's label it can only have memorized."""
    rng = np.random.default_rng(seed)
    for folder in ("train_images", "test_images"):
        (root / folder).mkdir(parents=True)
    rows = []
    for i in range(n):
        image = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
        image.save(root / "train_images" / f"im{i}.png")
        image.save(root / "test_images" / f"copy{i}.png")
        rows.append((f"im{i}", str(rng.integers(0, classes))))
    write_rows(root / "train.csv", ["image_id", "label"], rows)
    write_rows(root / "sample_submission.csv", ["image_id", "label"], [(f"copy{i}", "0") for i in range(n)])
    return root


def student_cv(p) -> float:
    """The CV of a memorizing student: for each validation image, the argmax of the target it was trained on for
    the same pixels (pseudo-labelled copies included), else class 0."""
    correct = []
    for k in range(int(p.fold_of_row.max()) + 1):
        data = fold_data(p, k)
        learned = {}
        width = len(p.task.names)
        for item in data.train_rows:
            packed = data.train_targets[item]
            target = 0.5 * packed[:width] + 0.5 * packed[width:2 * width]
            learned[key(data.paths[item])] = int(np.argmax(target))
        for r in data.val_rows:
            correct.append(learned.get(key(p.table.paths[r]), 0) == data.targets[r])
    return float(np.mean(correct))


def test_a_teacher_that_memorized_a_fold_cannot_inflate_that_folds_student_cv(tmp_path, monkeypatch):
    from kit.settings.config import load_config
    from kit.train import run as run_mod
    from kit.train.teacher import Teacher
    comp = memorizing_competition(tmp_path / "comp")
    cfg = load_config(None, {"data_dir": str(comp), "run_dir": str(tmp_path / "student"), "num_folds": 3,
                             "folds_csv": str(tmp_path / "folds.csv"), "task": "multiclass", "pseudo_label": True,
                             "teacher": [str(tmp_path / "teacher")], "distill_weight": 0.5, "label_smoothing": 0.0})
    monkeypatch.setattr(run_mod, "load_teacher", lambda *a: None)
    p = run_mod.plan(cfg, "all", False, False)
    label = {key(path): int(y) for path, y in zip(p.table.paths, p.task.encode(p.table.labels))}

    def memorized(run, k, paths):
        """Teacher fold k: the one-hot label of every image it trained on (by its pixels), uniform for the rest."""
        seen = {key(p.table.paths[r]) for r in np.flatnonzero(p.fold_of_row != k)}
        out = np.full((len(paths), 3), 1 / 3)
        for i, path in enumerate(paths):
            if key(path) in seen:
                out[i] = np.eye(3)[label[key(path)]]
        return out

    p.teacher = Teacher([type("Run", (), {"folds": lambda self, having: [0, 1, 2]})()], p.task, memorized)
    honest = student_cv(p)
    # the naive rule: every student fold's targets from the whole teacher ensemble, two of whose three models here
    # trained on that fold's labels
    monkeypatch.setattr(Teacher, "fold", lambda self, k, paths: self.ensemble(paths))
    naive = student_cv(p)
    assert honest < 0.6 and naive > 0.9, (honest, naive)            # chance is about 1/3; leaked labels give ~1


# --- a student run end to end ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def student(trained, tmp_path_factory):
    """A test_resnet student of the session's test_nfnet teacher, with pseudo-labels, every fold."""
    comp, teacher, folds_csv, _ = trained
    tmp = tmp_path_factory.mktemp("student")
    args = ["train.py", "--data-dir", comp, "--teacher", teacher, "--fold", "all", "--run-dir", tmp / "run",
            "--model", "test_resnet", "--no-pretrained", "--img-size", "32", "--epochs", "2", "--batch-size", "8",
            "--num-workers", "0", "--pseudo-label"]
    r = run_cli(*args)
    assert r.returncode == 0, r.stderr
    return comp, teacher, folds_csv, tmp, r


def test_a_student_run_is_a_normal_run(student, capsys):
    comp, teacher, folds_csv, tmp, r = student
    run = tmp / "run"
    assert "pseudo-labelled by the teacher" in r.stdout and "distilled" in r.stdout
    assert (run / "oof.csv").is_file() and (run / "cv.md").is_file()
    cv = (run / "cv.md").read_text()
    assert "Distilled from" in cv and "fold k learned from teacher fold k only" in cv
    import yaml
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["folds_csv"] == str(folds_csv) and saved["teacher"] == [str(teacher)]   # the teacher's folds file
    r = run_entry(capsys, "infer.py", "--run-dir", run, "--out", tmp / "s.csv", "--onnx-out", tmp / "s.onnx")
    assert r.returncode == 0, r.stderr
    assert len((tmp / "s.csv").read_text().splitlines()) == 10


def test_the_full_model_trains_on_everything_and_exports_alone(student, capsys):
    comp, teacher, folds_csv, tmp, _ = student
    run = tmp / "run"
    r = run_entry(capsys, "train.py", "--data-dir", comp, "--teacher", teacher, "--fold", "full", "--run-dir", run,
                  "--model", "test_resnet", "--no-pretrained", "--img-size", "32", "--epochs", "2", "--batch-size", "8",
                  "--num-workers", "0", "--pseudo-label")
    assert r.returncode == 0, r.stderr
    assert re.search(r"fold full: 30 train \+ 9 pseudo-labelled / 0 val images", r.stdout), r.stdout
    assert (run / "full" / "best.pt").is_file() and not (run / "full" / "oof.csv").exists()
    cv = (run / "cv.md").read_text()
    assert "It has **no CV of its own**" in cv and "is its estimate" in cv
    assert "and the pseudo-labelled test images for 2 epochs" in cv and "Its epochs are a fold's" in cv   # and why
    r = run_entry(capsys, "infer.py", "--run-dir", run, "--folds", "full", "--out", tmp / "full.csv", "--onnx-out",
                  tmp / "full.onnx")
    assert r.returncode == 0, r.stderr
    from kit.runtime.predictor import Predictor
    predictor = Predictor(tmp / "full.onnx", "cpu")
    assert predictor.meta.folds == ["full"] and predictor.meta.cv_score is None
    r = run_entry(capsys, "infer.py", "--run-dir", run, "--folds", "0,full", "--export-only", "--onnx-out",
                  tmp / "x.onnx")
    assert r.returncode == 2


def test_a_teacher_on_other_folds_or_without_the_fold_is_refused(trained, tmp_path, capsys):
    comp, teacher, folds_csv, _ = trained
    shutil.copy(folds_csv, tmp_path / "other.csv")
    rows = [line.split(",") for line in (tmp_path / "other.csv").read_text().splitlines()]
    rows[1][2], rows[2][2] = rows[2][2], rows[1][2]
    if rows[1][2] == rows[2][2]:
        rows[1][2] = str((int(rows[1][2]) + 1) % 3)
    (tmp_path / "other.csv").write_text("\n".join(",".join(r) for r in rows) + "\n")
    base = ["train.py", "--data-dir", comp, "--teacher", teacher, "--run-dir", tmp_path / "s", *TINY]
    before = digest(teacher)
    assert_user_error(run_entry(capsys, *base, "--folds-csv", tmp_path / "other.csv"),
                      r"trained on another split .* a student trains on its teacher's folds file")
    assert_user_error(run_entry(capsys, *base, "--run-dir", teacher / "student"), r"inside the teacher run")
    partial = tmp_path / "partial"
    shutil.copytree(teacher, partial)
    shutil.rmtree(partial / "fold2")
    assert_user_error(run_entry(capsys, *base, "--teacher", partial, "--teacher", teacher, "--fold", "2"),
                      r"has no finished fold model for fold\(s\) \[2\]")
    assert_user_error(run_entry(capsys, "train.py", "--data-dir", comp, "--run-dir", tmp_path / "s", *TINY,
                                "--pseudo-label"), r"pseudo_label needs a teacher")
    assert digest(teacher) == before and not (tmp_path / "s").exists()


def test_a_student_can_teach_the_next_round(student, tmp_path, capsys):
    comp, teacher, folds_csv, tmp, _ = student
    r = run_entry(capsys, "train.py", "--data-dir", comp, "--teacher", tmp / "run", "--fold", "0", "--run-dir",
                  tmp_path / "round2", *TINY[:3], "--img-size", "32", "--epochs", "1", "--batch-size", "8",
                  "--num-workers", "0", "--pseudo-label", "--pseudo-threshold", "0.4")
    assert r.returncode == 0, r.stderr
    assert re.search(r"fold 0: \d+ of 9 test images pseudo-labelled", r.stdout)
