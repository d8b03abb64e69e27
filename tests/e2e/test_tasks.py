"""Multi-label and regression competitions: inference of the task, folds, losses, thresholds, submission formats,
the exported graph and the demo variants, end to end."""
import json

import numpy as np
import pytest
import torch

from helpers import ROOT, TINY, csv_rows, make_competition, run_cli, run_entry, write_rows
from kit.core.errors import KitError
from kit.prepare.folds import make_folds
from kit.core.metrics import best_thresholds
from kit.train.objective import Objective
from kit.core.task import Multiclass, Multilabel, Regression, infer_kind, restore


@pytest.mark.parametrize("labels,kind", [
    (["3", "1", "7", "1"], "multiclass"),
    (["cat", "dog"], "multiclass"),
    (["Cassava Mosaic", "Cassava Blight", "Healthy"], "multiclass"),             # names with spaces, never alone
    (["0.5", "17.25", "3"], "regression"),
    (["scab", "scab frog_eye", "healthy", "rust frog_eye", "rust", "frog_eye"], "multilabel"),   # every tag alone too
    (["even large", "", "prime"], "multilabel"),                                  # an image without tags
])
def test_the_task_is_inferred_when_the_labels_say(labels, kind):
    assert infer_kind(labels)[0] == kind


def test_an_ambiguous_task_asks_for_the_flag():
    with pytest.raises(KitError, match=r"integers with 100 distinct values: a score to predict, or 100 classes\? "
                                       r"Pass --task regression or --task multiclass"):
        infer_kind([str(v) for v in range(1, 101)])
    assert infer_kind(["1", "0"], from_columns=True)[0] == "multilabel"
    with pytest.raises(KitError, match=r"the labels read two ways: 'scab frog_eye' is one class, or the tags"):
        infer_kind(["scab", "scab frog_eye", "healthy", "rust frog_eye"])      # 'frog_eye' never alone


def test_multilabel_encoding_thresholds_and_minimum():
    task = Multilabel.from_labels(["b a", "", "c", "a"], min_labels=1)
    assert task.names == ["a", "b", "c"]
    assert task.encode(["b a", ""]).tolist() == [[1, 1, 0], [0, 0, 0]]
    fitted = Multilabel(task.names, [0.3, 0.9, 0.5], min_labels=1)
    probs = np.array([[0.35, 0.8, 0.1], [0.1, 0.2, 0.3], [0.6, 0.95, 0.55]])
    assert fitted.label_cells(probs) == ["a", "c", "a b c"]      # row 2 has none above: its most probable tag
    assert Multilabel(task.names, [0.3, 0.9, 0.5]).label_cells(probs)[1] == ""
    assert restore(fitted.to_dict()).to_dict() == fitted.to_dict()


def test_fitted_thresholds_beat_one_half_where_the_model_is_shy():
    rng = np.random.default_rng(0)
    y = (rng.random((400, 3)) < 0.3).astype(float)
    probs = np.clip(0.25 * y + rng.normal(0.2, 0.08, y.shape), 0, 1)      # positives near 0.45: all below 0.5
    task = Multilabel(["a", "b", "c"])
    thresholds = best_thresholds(y, probs)
    assert all(0.2 < t < 0.5 for t in thresholds)
    from sklearn.metrics import f1_score
    assert f1_score(y, probs >= np.array(thresholds), average="micro") > f1_score(y, probs >= 0.5, average="micro") + 0.3
    assert task.score("f1_micro", y, probs) == pytest.approx(f1_score(y, probs >= np.array(thresholds), average="micro"))


def test_regression_targets_bins_and_scale():
    labels = [str(v) for v in np.linspace(1, 100, 500)]
    task = Regression.from_labels(labels, name="Pawpularity")
    assert task.names == ["Pawpularity"] and task.output_columns() == ["pred_Pawpularity"]
    assert task.scale["shift"] == pytest.approx(50.5) and task.encode(["3.5"]).tolist() == [[3.5]]
    bins = task.stratify_key(labels)
    assert len(set(bins)) == 10 and bins[0] == "bin0" and bins[-1] == "bin9"
    unit = Regression.from_labels(labels, loss="bce")
    assert unit.scale == {"kind": "unit", "shift": 1.0, "factor": 99.0}
    with pytest.raises(KitError, match=r"'n/a3' \(row 2\) is not a number"):
        Regression.from_labels(["1", "n/a3"])


def test_multilabel_folds_are_iteratively_stratified_and_refuse_groups():
    rng = np.random.default_rng(0)
    tags = (rng.random((300, 4)) < [0.5, 0.2, 0.1, 0.05]).astype(np.int64)
    fold = make_folds(tags, 5, seed=0, names=["a", "b", "c", "d"])
    for k in range(5):
        share = tags[fold == k].mean(0)
        assert np.all(np.abs(share - tags.mean(0)) < 0.04), (k, share)
    with pytest.raises(KitError, match="grouped folds are not supported for multilabel tasks"):
        make_folds(tags, 5, seed=0, groups=[str(i // 3) for i in range(300)], names=list("abcd"))
    tags[:, 3] = 0
    tags[:3, 3] = 1
    with pytest.raises(KitError, match=r"too few images for 5 folds with tag 'd' \(3 images\)"):
        make_folds(tags, 5, seed=0, names=list("abcd"))


def test_losses_and_activations_per_task():
    logits = torch.tensor([[0.3, -1.2, 2.0], [1.5, 0.1, -0.4]])
    tags = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    multilabel = Objective(Multilabel(["a", "b", "c"]), label_smoothing=0.2)
    smoothed = tags * 0.8 + 0.1
    want = torch.nn.functional.binary_cross_entropy_with_logits(logits, smoothed)
    torch.testing.assert_close(multilabel.train_loss(logits, tags), want)
    mix = torch.tensor([[0.7, 0.3], [0.3, 0.7]])                            # a Mixer's matrix
    torch.testing.assert_close(multilabel.train_loss(logits, tags, mix),
                               torch.nn.functional.binary_cross_entropy_with_logits(logits, mix @ smoothed))
    torch.testing.assert_close(multilabel.activate(logits), logits.sigmoid())
    task = Regression(["y"], {"kind": "standard", "shift": 10.0, "factor": 4.0})
    out, y = torch.tensor([[0.5], [-1.0]]), torch.tensor([[12.0], [6.0]])
    torch.testing.assert_close(Objective(task).train_loss(out, y), torch.mean((out - (y - 10) / 4) ** 2))
    huber = Regression(["y"], task.scale, loss="huber")
    torch.testing.assert_close(Objective(huber).train_loss(out, y), torch.nn.functional.huber_loss(out, (y - 10) / 4))
    torch.testing.assert_close(task.activate(out), torch.tensor([[12.0], [6.0]]))      # back to the target scale
    unit = Regression(["y"], {"kind": "unit", "shift": 1.0, "factor": 99.0})
    assert unit.loss_name == "bce"                                                  # the unit scaling is BCE's
    torch.testing.assert_close(Objective(unit).train_loss(out, torch.tensor([[50.5], [1.0]])),
                               torch.nn.functional.binary_cross_entropy_with_logits(out, torch.tensor([[0.5], [0.0]])))
    torch.testing.assert_close(unit.activate(torch.tensor([[0.0]])), torch.tensor([[50.5]]))



def test_mixed_multiclass_loss_is_timms_soft_target_cross_entropy():
    """Under MixUp/CutMix the multiclass loss is timm's: SoftTargetCrossEntropy on mixup_target (label smoothing
    folded in before mixing), with the batch mixed with its mirror at weight lam."""
    from timm.data.mixup import mixup_target
    from timm.loss import SoftTargetCrossEntropy
    torch.manual_seed(0)
    logits, y, lam = torch.randn(6, 3), torch.tensor([0, 1, 2, 2, 1, 0]), 0.7
    mix = lam * torch.eye(6) + (1 - lam) * torch.eye(6).flip(0)
    got = Objective(Multiclass(["a", "b", "c"]), label_smoothing=0.1).train_loss(logits, y, mix)
    torch.testing.assert_close(got, SoftTargetCrossEntropy()(logits, mixup_target(y, 3, lam, 0.1)))

@pytest.mark.slow      # in CI's second pass (-m slow); the default run stays under ~10 minutes
@pytest.mark.parametrize("variant", ["multilabel", "regression"])
def test_demo_variants_end_to_end(tmp_path, variant):
    """From nothing: `train.py --demo VARIANT`, then infer.py on its run dir; the submission has the task's format
    and the graph carries the task."""
    r = run_cli(ROOT / "train.py", "--demo", variant, "--fold", "all", "--num-folds", "2", "--model", "test_nfnet",
                "--epochs", "1", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    run = tmp_path / "runs" / f"digits-{variant}"
    assert json.loads((run / "task.json").read_text())["kind"] == variant
    r = run_cli(ROOT / "infer.py", "--run-dir", run, "--provider", "cpu", "--probs", tmp_path / "p.csv", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    sub = csv_rows(tmp_path / "submissions" / "submission.csv")
    solution = csv_rows(tmp_path / f"data/digits-{variant}/solution.csv")
    assert [s[0] for s in sub] == [s[0] for s in solution]
    probs = np.array([[float(v) for v in row[1:]] for row in csv_rows(tmp_path / "p.csv")[1:]])
    from kit.runtime.predictor import Predictor
    meta = Predictor(run / "ensemble.onnx", "cpu").meta
    if variant == "multilabel":
        assert csv_rows(tmp_path / "p.csv")[0] == ["image_id", "prob_even", "prob_large", "prob_loop", "prob_prime"]
        assert meta.task == "multilabel" and len(meta.task_params["thresholds"]) == 4
        task = Multilabel(meta.classes, meta.task_params["thresholds"])
        assert [s[1] for s in sub[1:]] == task.label_cells(probs)           # tags above the exported thresholds
        assert ((probs >= 0) & (probs <= 1)).all() and not np.allclose(probs.sum(1), 1)
        assert "demo test F1 (against" in r.stdout
    else:
        assert csv_rows(tmp_path / "p.csv")[0] == ["image_id", "pred_label"]
        assert meta.task == "regression" and meta.task_params["scale"]["kind"] == "standard"
        np.testing.assert_allclose([float(s[1]) for s in sub[1:]], probs[:, 0], rtol=1e-5)
        errors = [float(s[1]) - float(t[1]) for s, t in zip(sub[1:], solution[1:])]
        assert f"demo test RMSE (against data/digits-regression/solution.csv): {np.sqrt(np.mean(np.square(errors))):.4f}" \
            in r.stdout


def test_multilabel_from_0_1_columns_with_probability_columns(tmp_path, capsys):
    """Tags as one 0/1 column per tag (RANZCR's layout), the submission one probability column per tag."""
    comp = make_competition(tmp_path / "comp", per_class=8, classes=("x", "y", "z"))
    rows = csv_rows(comp / "train.csv")[1:]
    tags = {"x": (1, 0, 0), "y": (0, 1, 1), "z": (1, 0, 1)}
    write_rows(comp / "train.csv", ["image_id", "ett", "ngt", "cvc"], [[i, *tags[lab]] for i, lab in rows])
    sample = csv_rows(comp / "sample_submission.csv")[1:]
    write_rows(comp / "sample_submission.csv", ["image_id", "cvc", "ett", "ngt"], [[i, 0, 0, 0] for i, _ in sample])
    args = ["--data-dir", comp, "--run-dir", tmp_path / "run", "--folds-csv", tmp_path / "f.csv", "--num-folds", "2",
            *TINY[:-4], "--epochs", "1", "--num-workers", "0"]
    r = run_entry(capsys, "train.py", *args, "--fold", "all")
    assert r.returncode == 0, r.stderr
    assert "task: multilabel (one 0/1 column per tag" in r.stdout
    assert {row[1] for row in csv_rows(tmp_path / "f.csv")[1:]} == {"ett", "ngt cvc", "ett cvc"}     # column order
    r = run_entry(capsys, "infer.py", "--run-dir", tmp_path / "run", "--out", tmp_path / "s.csv")
    assert r.returncode == 0, r.stderr
    sub = csv_rows(tmp_path / "s.csv")
    assert sub[0] == ["image_id", "cvc", "ett", "ngt"] and len(sub) == 10
    assert all(0 <= float(v) <= 1 for row in sub[1:] for v in row[1:])
    write_rows(comp / "sample_submission.csv", ["image_id", "cvc", "swan"], [[i, 0, 0] for i, _ in sample])
    r = run_entry(capsys, "infer.py", "--run-dir", tmp_path / "run", "--out", tmp_path / "s2.csv")
    assert r.returncode == 2 and "column 'swan' is neither the label column" in r.stderr


def test_an_image_with_no_tag_gets_an_empty_cell(tmp_path, capsys, monkeypatch):
    """Below every threshold is a prediction (no tag), not a missing value: the submission is written with an
    empty tag list (--min-labels 1 is for competitions that score that as wrong)."""
    comp = make_competition(tmp_path / "comp", per_class=8, classes=("x", "y", "z"))
    rows = csv_rows(comp / "train.csv")[1:]
    tags = {"x": "", "y": "ngt cvc", "z": "ett"}                   # class x: no tag at all, as digit 1 in the demo
    write_rows(comp / "train.csv", ["image_id", "label"], [[i, tags[lab]] for i, lab in rows])
    args = ["--data-dir", comp, "--run-dir", tmp_path / "run", "--folds-csv", tmp_path / "f.csv", "--num-folds", "2",
            "--task", "multilabel", *TINY[:-4], "--epochs", "1", "--num-workers", "0"]
    assert run_entry(capsys, "train.py", *args, "--fold", "all").returncode == 0
    import kit.runtime.predictor
    real = kit.runtime.predictor.Predictor.predict_files
    monkeypatch.setattr(kit.runtime.predictor.Predictor, "predict_files",
                        lambda self, *a, **k: np.vstack([np.zeros((1, 3), np.float32), real(self, *a, **k)[1:]]))
    r = run_entry(capsys, "infer.py", "--run-dir", tmp_path / "run", "--out", tmp_path / "s.csv")
    assert r.returncode == 0, r.stderr
    sub = csv_rows(tmp_path / "s.csv")
    assert sub[1][1] == "" and len(sub) == len(csv_rows(comp / "sample_submission.csv"))


def test_task_specific_bad_input(tmp_path, capsys):
    comp = make_competition(tmp_path / "comp", per_class=5)
    base = ["--data-dir", comp, "--run-dir", tmp_path / "run", "--folds-csv", tmp_path / "f.csv", "--num-folds", "2",
            *TINY[:-4], "--epochs", "1", "--num-workers", "0"]
    r = run_entry(capsys, "train.py", *base, "--task", "regression")
    assert r.returncode == 2 and "'cat' (row 1) is not a number; a regression target must be numeric" in r.stderr
    rows = csv_rows(comp / "train.csv")[1:]
    write_rows(comp / "train.csv", ["image_id", "label", "patient"], [[i, lab, i] for i, lab in rows])
    r = run_entry(capsys, "train.py", *base, "--task", "multilabel", "--group-col", "patient")
    assert r.returncode == 2 and "grouped folds are not supported for multilabel tasks" in r.stderr
    r = run_entry(capsys, "train.py", *base, "--task", "multiclass", "--metric", "rmse")
    assert r.returncode == 2 and "metric 'rmse' does not apply to a multiclass task" in r.stderr
