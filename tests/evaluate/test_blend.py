"""Blends of runs: one graph over every fold model of every run, each with its own preprocessing and views,
weights fitted on OOF, an honest CV, and refusals where runs cannot be compared."""
import json

import numpy as np
import onnx
import pytest
import torch

from helpers import csv_rows, run_cli, run_entry
from kit.evaluate.blend import candidates, choose_views, fit, fit_hill, fit_weights, methods_for, nested_cv
from kit.export.ensemble import view
from kit.runtime.predictor import Predictor
from kit.core.task import Multiclass


@pytest.fixture(scope="session")
def second_run(trained, tmp_path_factory):
    """Another architecture at another image size, trained on the same folds file as `trained`."""
    comp, _, folds_csv, _ = trained
    run = tmp_path_factory.mktemp("blend") / "resnet"
    r = run_cli("train.py", "--data-dir", comp, "--fold", "all", "--run-dir", run, "--folds-csv", folds_csv,
                "--model", "test_resnet", "--no-pretrained", "--img-size", "24", "--epochs", "2", "--batch-size", "8",
                "--num-workers", "0", "--lr", "0.05")
    assert r.returncode == 0, r.stderr
    return run


def test_views_match_their_names():
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4)
    assert torch.equal(view(x, "rot90"), torch.rot90(x, 1, (2, 3)))
    assert torch.equal(view(x, "rot180"), torch.rot90(x, 2, (2, 3)))
    assert torch.equal(view(x, "rot270"), torch.rot90(x, 3, (2, 3)))
    assert torch.equal(view(x, "transpose"), x.transpose(2, 3)) and torch.equal(view(x, "hflip"), x.flip(3))


def test_a_view_is_kept_only_if_it_improves_the_oof_score():
    task = Multiclass(["a", "b"])
    y = np.array([0, 0, 1, 1])
    by_view = {"identity": np.array([[0.6, 0.4], [0.4, 0.6], [0.4, 0.6], [0.6, 0.4]]),    # 2 of 4 right
               "hflip": np.array([[0.9, 0.1], [0.9, 0.1], [0.1, 0.9], [0.45, 0.55]]),       # fixes all four
               "vflip": np.array([[0.1, 0.9]] * 4)}                                          # only hurts
    assert choose_views(task, "accuracy", y, by_view) == ["identity", "hflip"]
    assert choose_views(task, "accuracy", y, {"identity": by_view["hflip"], "vflip": by_view["vflip"]}) == ["identity"]


@pytest.mark.parametrize("metric", ["accuracy", "log_loss"])
@pytest.mark.parametrize("strong, weak", [("hflip", "rot90"), ("rot90", "hflip")])
def test_the_view_that_helps_most_is_taken_first_in_the_metrics_direction(metric, strong, weak):
    """Two views help: greedy selection takes the stronger (for log loss: the lower score), after which the weaker
    no longer helps; taking the weaker first would end with both. Both namings, so the view's name (first or last
    in order) never decides."""
    task = Multiclass(["a", "b"])
    y = np.array([0, 0, 1, 1])
    by_view = {"identity": np.array([[0.6, 0.4], [0.4, 0.6], [0.4, 0.6], [0.6, 0.4]]),
               weak: np.array([[0.6, 0.4], [0.8, 0.2], [0.4, 0.6], [0.55, 0.45]]),       # helps a little
               strong: np.array([[0.9, 0.1], [0.9, 0.1], [0.1, 0.9], [0.1, 0.9]])}       # helps most
    assert choose_views(task, metric, y, by_view) == ["identity", strong]


def test_weights_are_a_convex_combination_that_drops_useless_members():
    rng = np.random.default_rng(0)
    task = Multiclass(["a", "b", "c"])
    y = rng.integers(0, 3, 300)
    good = np.full((300, 3), 0.1)
    good[np.arange(300), y] = 0.8
    noise = rng.dirichlet(np.ones(3), 300)
    weights = fit_weights(task, "accuracy", y, [noise, good])
    assert weights.sum() == pytest.approx(1) and (weights >= 0).all()
    assert weights[0] == 0 and weights[1] == 1


def _least_squares_on_the_simplex(y, members):
    """The exact minimum of the squared error over non-negative weights summing to 1: the best equality-constrained
    solution over every support whose weights all come out non-negative (KKT, enumerated; fine for 3 members)."""
    from itertools import combinations
    best, best_w = np.inf, None
    for k in range(1, len(members) + 1):
        for support in combinations(range(len(members)), k):
            a = np.stack([members[i][:, 0] for i in support], 1)
            kkt = np.block([[2 * a.T @ a, np.ones((k, 1))], [np.ones((1, k)), np.zeros((1, 1))]])
            w = np.linalg.solve(kkt, np.concatenate([2 * a.T @ y[:, 0], [1.0]]))[:k]
            if (w >= 0).all() and (sse := np.sum((a @ w - y[:, 0]) ** 2)) < best:
                best, best_w = sse, np.zeros(len(members))
                best_w[list(support)] = w
    return best_w


def test_weights_are_the_exact_optimum_on_the_simplex():
    """rmse is smooth: its weights are the constrained least-squares solution, to 1e-4. Here the unconstrained
    optimum gives one member a negative weight (two members err the same way, one twice as much), so weights found
    without the bounds and clipped afterwards land elsewhere, as do loose tolerances."""
    from kit.core.task import Regression
    rng = np.random.default_rng(5)
    reg = Regression(["v"], {"kind": "standard", "shift": 0.0, "factor": 1.0})
    y = rng.normal(0, 1, (300, 1))
    shared = rng.normal(0, 1, (300, 1))
    members = [y + 0.5 * shared + rng.normal(0, 0.3, (300, 1)), y + shared + rng.normal(0, 0.3, (300, 1)),
               y + rng.normal(0, 0.8, (300, 1))]
    exact = _least_squares_on_the_simplex(y, members)
    assert (exact > 0).sum() == 2, exact                  # the bounds bind: one member is left out exactly
    np.testing.assert_allclose(fit_weights(reg, "rmse", y, members), exact, atol=1e-4)


def test_members_below_the_minimum_share_are_dropped_and_the_rest_renormalized(monkeypatch):
    """A member under MIN_WEIGHT leaves the graph and the others are scaled back to a sum of 1; if every member is
    under it (more than 1/MIN_WEIGHT runs), the blend falls back to equal weights. MIN_WEIGHT raised so that three
    members reach both cases."""
    import kit.evaluate.blend as blend
    from kit.core.task import Regression
    rng = np.random.default_rng(6)
    reg = Regression(["v"], {"kind": "standard", "shift": 0.0, "factor": 1.0})
    y = rng.normal(0, 1, (300, 1))
    members = [y + rng.normal(0, s, (300, 1)) for s in (0.5, 0.7, 1.2)]
    free = fit_weights(reg, "rmse", y, members)
    assert 0.1 < free[2] < 0.3 and free[0] > free[1] > free[2], free
    monkeypatch.setattr(blend, "MIN_WEIGHT", 0.3)
    dropped = fit_weights(reg, "rmse", y, members)
    np.testing.assert_allclose(dropped, [free[0] / (free[0] + free[1]), free[1] / (free[0] + free[1]), 0])
    monkeypatch.setattr(blend, "MIN_WEIGHT", 0.9)
    np.testing.assert_array_equal(fit_weights(reg, "rmse", y, members), np.full(3, 1 / 3))


def test_honest_cv_refits_without_each_scored_fold():
    """Fold 1's rows are where member A is right and B wrong; fitted on all rows A wins, but the weights fitted
    without fold 1 favour B, so the honest CV of fold 1 is worse than the in-sample one."""
    task = Multiclass(["a", "b"])
    y = np.array([0, 1] * 10)
    folds = np.repeat([0, 1], 10)
    right = np.where(y[:, None] == np.arange(2), 0.9, 0.1)
    wrong = 1 - right
    a = np.where((folds == 1)[:, None], right, np.where(np.arange(20)[:, None] % 4 == 0, right, wrong))
    b = np.where((folds == 1)[:, None], wrong, right)
    honest = nested_cv(task, "accuracy", y, folds, [{"identity": a}, {"identity": b}], ["weights"], choose=False)
    cv, per_fold, blended = honest["weights"].cv, honest["weights"].per_fold, honest["weights"].blended
    in_sample = fit_weights(task, "accuracy", y, [a, b])
    assert per_fold[1] < task.score("accuracy", y[folds == 1], np.tensordot(in_sample, np.stack([a, b])[:, folds == 1], 1))
    weights0 = fit_weights(task, "accuracy", y[folds == 1], [a[folds == 1], b[folds == 1]])     # fitted without fold 0
    np.testing.assert_allclose(blended[folds == 0], np.tensordot(weights0, np.stack([a, b])[:, folds == 0], 1))
    assert cv == pytest.approx(task.score("accuracy", y, blended))


def test_the_view_choice_is_nested_too():
    """A view that helps only on fold 0's rows is chosen when fitting on fold 0, never when fold 0 is scored."""
    task = Multiclass(["a", "b"])
    y = np.array([0, 1] * 10)
    folds = np.repeat([0, 1], 10)
    right = np.where(y[:, None] == np.arange(2), 0.8, 0.2)
    identity = np.where(np.arange(20)[:, None] % 5 == 0, 1 - right, right)           # 4 of 20 wrong
    flipped = np.where((folds == 0)[:, None], np.where(y[:, None] == np.arange(2), 0.99, 0.01), 1 - right)
    views = {"identity": identity, "hflip": flipped}
    assert choose_views(task, "accuracy", y[folds == 0], {v: o[folds == 0] for v, o in views.items()}) == \
        ["identity", "hflip"]
    honest = nested_cv(task, "accuracy", y, folds, [views], ["weights"], choose=True)
    np.testing.assert_allclose(honest["weights"].blended[folds == 0], identity[folds == 0])    # chosen without fold 0
    np.testing.assert_allclose(honest["weights"].blended[folds == 1], np.mean([identity, flipped], 0)[folds == 1])
    given = nested_cv(task, "accuracy", y, folds, [views], ["weights"], choose=False)     # --tta: the views as given
    np.testing.assert_allclose(given["weights"].blended, np.mean([identity, flipped], 0))


def test_hill_climbing_optimizes_the_metric_itself():
    """Log loss prefers the confident member, accuracy the hesitant one that is right more often: hill climbs on
    accuracy (the metric) and picks the latter; SLSQP's log-loss weights do not."""
    task = Multiclass(["a", "b"])
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 400)
    onehot = np.eye(2)[y]
    # each row's probabilities jittered: on exact levels (0.45/0.55 against 0.25/0.75) some mixtures tie at 0.5, and
    # which class a tie goes to then depends on the float summation order (an AVX2 CPU broke ties the other way)
    hesitant = np.where(rng.random(400)[:, None] < 0.8, 0.45 + 0.1 * onehot, 0.55 - 0.1 * onehot)      # 80 % right
    confident = np.where(rng.random(400)[:, None] < 0.75, 0.25 + 0.5 * onehot, 0.75 - 0.5 * onehot)  # 75 % right
    hesitant = hesitant + rng.uniform(-0.01, 0.01, (400, 1)) * np.array([1, -1])
    weights = fit_hill(task, "accuracy", y, [hesitant, confident])
    blended = np.tensordot(weights, np.stack([hesitant, confident]), 1)
    assert task.score("accuracy", y, blended) >= 0.79 and weights[0] > weights[1]
    assert fit_weights(task, "accuracy", y, [hesitant, confident])[1] > 0.5


def _members(rng, y, classes, right, count):
    """`count` members, each right on an independent `right` share of the rows (else for a random wrong class), each
    row with its own confidence in [0.25, 0.95], as real members are more and less sure."""
    out = []
    for _ in range(count):
        ok = rng.random(len(y)) < right
        wrong = (y + rng.integers(1, classes, len(y))) % classes
        picked = np.where(ok, y, wrong)
        confidence = rng.uniform(0.25, 0.95, len(y))
        p = rng.dirichlet(np.ones(classes), len(y)) * (1 - confidence)[:, None]
        p[np.arange(len(y)), picked] += confidence
        out.append(p)
    return out


@pytest.mark.parametrize("metric", ["accuracy", "log_loss"])
def test_hill_climbing_beats_its_best_member_when_the_members_err_apart(metric):
    """Three members each right on an independent 80 % of the rows: their average is right far more often, so
    Caruana's selection (in the metric's own direction) must end above its best member with several members."""
    rng = np.random.default_rng(3)
    task = Multiclass(list("abcde"))
    y = rng.integers(0, 5, 600)
    members = _members(rng, y, 5, 0.8, 3)
    weights = fit_hill(task, metric, y, members)
    blended = task.score(metric, y, np.tensordot(weights, np.stack(members), 1))
    singles = [task.score(metric, y, m) for m in members]
    best = max(singles) if task.higher_is_better(metric) else min(singles)
    gain = blended - best if task.higher_is_better(metric) else best - blended
    assert gain > (0.05 if metric == "accuracy" else 0.1), (blended, singles)
    assert (weights > 0).sum() >= 2


@pytest.mark.parametrize("metric, expected", [("accuracy", [0.2, 0.6, 0.2]), ("log_loss", [0.0, 0.625, 0.375])])
def test_hill_climbing_starts_from_the_best_member_and_keeps_the_best_ensemble_met(metric, expected):
    """Caruana's selection: no step leaves the best member alone (index 1 here, not the first), and the weights are
    those of the best ensemble met along the way (counted once per pick), whatever the steps after it did. The
    expected weights are this fixture's greedy path, worked out once; a start from another member, a pick counted
    twice or the last ensemble instead of the best one all end elsewhere."""
    rng = np.random.default_rng(0)
    task = Multiclass(["a", "b", "c"])
    y = rng.integers(0, 3, 60)

    def member(share):
        right = rng.random(60) < share
        label = np.where(right, y, (y + rng.integers(1, 3, 60)) % 3)
        out = rng.dirichlet(np.ones(3), 60) * 0.4
        out[np.arange(60), label] += 0.6
        return out
    members = [member(0.55), member(0.75), member(0.7)]
    singles = [task.score(metric, y, m) for m in members]
    assert int(np.argmax(singles) if metric == "accuracy" else np.argmin(singles)) == 1
    np.testing.assert_array_equal(fit_hill(task, metric, y, members, steps=0), [0, 1, 0])
    np.testing.assert_allclose(fit_hill(task, metric, y, members, steps=8), expected)


def test_blend_weights_follow_a_regression_metric_in_its_direction():
    """r2 is smooth and higher-is-better: the weights maximize it on the raw values (no probability clipping)."""
    from kit.core.task import Regression
    rng = np.random.default_rng(3)
    reg = Regression(["v"], {"kind": "standard", "shift": 10.0, "factor": 2.0})
    y = rng.normal(10, 2, (200, 1))                          # values a probability clip would flatten to 1
    good, bad = y + rng.normal(0, 0.3, (200, 1)), y + rng.normal(0, 3.0, (200, 1))
    weights = fit_weights(reg, "r2", y, [bad, good])
    assert weights[1] > 0.9, weights
    with pytest.raises(ValueError, match="bogus"):
        fit("bogus", reg, "r2", y, [bad, good])


def test_auto_keeps_a_run_alone_unless_a_blend_beats_it():
    """One good run and two runs of noise: no blend's honest CV beats the good run alone, and `auto` keeps it alone;
    three runs that err apart: a blend wins."""
    from kit.evaluate.blend import best_method
    rng = np.random.default_rng(4)
    task = Multiclass(list("abcd"))
    y = rng.integers(0, 4, 400)
    folds = np.arange(400) % 4
    good = _members(rng, y, 4, 0.85, 1)[0]
    noise = [rng.dirichlet(np.ones(4), 400) for _ in range(2)]
    methods = candidates("accuracy", 3)
    assert methods[:3] == ["alone:0", "alone:1", "alone:2"] and "hill" in methods
    honest = nested_cv(task, "accuracy", y, folds, [{"identity": o} for o in (noise[0], good, noise[1])], methods,
                       choose=False)
    assert best_method(task, "accuracy", honest) == "alone:1"
    np.testing.assert_array_equal(fit("alone:1", task, "accuracy", y, [noise[0], good, noise[1]]).weights, [0, 1, 0])
    apart = _members(rng, y, 4, 0.7, 3)
    honest = nested_cv(task, "accuracy", y, folds, [{"identity": o} for o in apart], methods, choose=False)
    chosen = best_method(task, "accuracy", honest)
    assert not chosen.startswith("alone:") and honest[chosen].cv > max(honest[f"alone:{i}"].cv for i in range(3))


def test_a_blend_that_cannot_beat_a_run_exports_that_run_alone(trained, second_run, tmp_path, capsys, monkeypatch):
    """The contract: `--blend auto` may answer "best: run A alone" (which it does is unit-tested above); the graph then
    holds A's fold models only, as A's own graph does, blend.md and the metadata say so, and the submission is A's."""
    import kit.export.build
    comp, first, _, _ = trained
    monkeypatch.setattr(kit.export.build, "best_method", lambda task, metric, honest: "alone:0")
    out, graph = tmp_path / "sub.csv", tmp_path / "g.onnx"
    r = run_entry(capsys, "infer.py", "--data-dir", comp, "--run-dir", first, "--run-dir", second_run, "--out", out,
                  "--onnx-out", graph, "--provider", "cpu", "--no-tta")
    assert r.returncode == 0, r.stderr
    assert f"best: {first} alone (no blend beat it)" in r.stdout
    meta = Predictor(graph, "cpu").meta
    assert [m["run"] for m in meta.members] == [str(first)] and meta.members[0]["weight"] == 1.0
    assert meta.blend["method"] == "alone:0" and {"alone:0", "alone:1", "hill"} <= set(meta.blend["honest_cv"])
    assert meta.model == "test_nfnet" and meta.folds == [0, 1, 2] and meta.img_size == 32
    report = (tmp_path / "blend.md").read_text()
    assert f"| {first} alone (chosen) |" in report and f"| {second_run} alone |" in report
    r = run_entry(capsys, "infer.py", "--data-dir", comp, "--run-dir", first, "--out", tmp_path / "own.csv",
                  "--onnx-out", tmp_path / "own.onnx", "--provider", "cpu", "--no-tta")
    assert r.returncode == 0, r.stderr
    assert csv_rows(out) == csv_rows(tmp_path / "own.csv")                    # the submission is the run's own


def test_rank_and_stack_methods_on_oof():
    from kit.core.task import Multilabel, Regression
    rng = np.random.default_rng(2)
    task = Multiclass(["a", "b", "c"])
    y = rng.integers(0, 3, 300)
    a = rng.dirichlet(np.ones(3), 300) * 0.5 + np.eye(3)[y] * 0.5
    b = rng.dirichlet(np.ones(3), 300)
    stack = fit("stack", task, "accuracy", y, [a, b])
    assert stack.method == "stack" and stack.weights.tolist() == [0.5, 0.5]      # 1/R each, for the metadata
    assert stack.coef.dtype == stack.bias.dtype == np.float32                    # the graph's constants are float32
    for method in ("weights", "hill", "alone:1"):
        assert fit(method, task, "accuracy", y, [a, b]).method == method
    out = stack.apply(task, [a, b])
    np.testing.assert_allclose(out.sum(1), 1, atol=1e-6)
    assert task.score("accuracy", y, out) >= task.score("accuracy", y, a) - 0.01
    assert methods_for("accuracy", 2) == ["weights", "hill", "stack"]          # rank: rank metrics only
    assert methods_for("roc_auc", 2) == ["weights", "hill", "rank", "stack"] and methods_for("roc_auc", 1) == ["weights"]
    assert candidates("accuracy", 1) == ["weights"]                              # one run: nothing to choose
    assert candidates("roc_auc", 2) == ["alone:0", "alone:1", "weights", "hill", "rank", "stack"]
    rank = fit("rank", task, "roc_auc", y, [a, b])
    assert rank.method == "rank" and rank.quantiles.dtype == np.float32
    ranked = rank.apply(task, [a, b])
    assert ranked.min() >= 0 and ranked.max() <= 1
    a32 = a.astype(np.float32)                           # exactly the values the stored quantiles are made of
    same = fit("rank", task, "roc_auc", y, [a32, a32]).apply(task, [a32, a32])    # each output's place in its OOF
    assert same.max() == 1.0 and same.min() == 1 / 256            # its largest: at or above all 256 points; least: one
    assert (np.diff(same[np.argsort(a32[:, 0]), 0]) >= 0).all()   # a larger output never ranks lower
    assert task.score("roc_auc", y, ranked) >= task.score("roc_auc", y, b)
    tags = Multilabel(["x", "y"])
    yt = (rng.random((200, 2)) < 0.4).astype(np.float32)
    pa = np.clip(yt * 0.6 + rng.random((200, 2)) * 0.4, 0, 1)
    out = fit("stack", tags, "f1_micro", yt, [pa, rng.random((200, 2))]).apply(tags, [pa, rng.random((200, 2))])
    assert out.shape == (200, 2) and 0 <= out.min() and out.max() <= 1
    reg = Regression(["v"], {"kind": "standard", "shift": 3.0, "factor": 2.0})
    yv = rng.normal(3, 2, (200, 1))
    pv = yv + rng.normal(0, 0.5, (200, 1))
    out = fit("stack", reg, "rmse", yv, [pv, pv + 1.0]).apply(reg, [pv, pv + 1.0])
    assert reg.score("rmse", yv, out) <= reg.score("rmse", yv, pv) + 1e-6          # it learns the offset away


def test_two_architectures_blend_into_one_graph(trained, second_run, tmp_path, capsys):
    comp, first, _, _ = trained
    out, probs = tmp_path / "sub.csv", tmp_path / "probs.csv"
    graph = tmp_path / "blend.onnx"
    r = run_entry(capsys, "infer.py", "--data-dir", comp, "--run-dir", first, "--run-dir", second_run, "--out", out,
                  "--probs", probs, "--provider", "cpu", "--onnx-out", graph, "--int8", "--blend", "weights")
    assert r.returncode == 0, r.stderr
    props = {p.key: p.value for p in onnx.load(str(graph)).metadata_props}
    members = json.loads(props["kit.members"])
    assert [m["run"] for m in members if m["weight"] > 0] == [m["run"] for m in members]         # zeros are dropped
    kept = {m["model"]: m for m in members}
    assert set(kept) <= {"test_nfnet", "test_resnet"} and sum(m["weight"] for m in members) == pytest.approx(1, abs=1e-5)
    for m in members:
        assert m["folds"] == [0, 1, 2] and m["img_size"] == (32 if m["model"] == "test_nfnet" else 24)
        assert m["views"][0] == "identity" and {"run", "model", "folds", "img_size", "weight"} <= set(m)
    predictor = Predictor(graph, "cpu")
    assert predictor.meta.img_size == 32 and predictor.session.get_outputs()[1].name == "members"
    assert predictor.session.get_outputs()[1].shape[1:] == [3 * len(members), 3]
    report = (graph.parent / "blend.md").read_text()
    assert "| weights (chosen) |" in report and "honest CV (accuracy)" in report and "test_resnet" in report
    assert "Correlation" in report and predictor.meta.blend["method"] == "weights"
    sub = csv_rows(out)
    assert [row[0] for row in sub[1:]] == [row[0] for row in csv_rows(comp / "sample_submission.csv")[1:]]
    p = np.array([[float(v) for v in row[1:]] for row in csv_rows(probs)[1:]])      # from the int8 graph
    assert np.allclose(p.sum(1), 1, atol=2e-2)
    int8 = Predictor(graph.with_name("blend.int8.onnx"), "cpu")
    assert int8.meta.int8 and json.loads(json.dumps(int8.meta.members)) == members
    from kit.core.images import load_rgb
    images = np.stack([load_rgb(f, 32) for f in sorted((comp / "test_images").iterdir())])
    blended, each = predictor.session.run(None, {"images": images})
    weights = np.repeat([m["weight"] / 3 for m in members], 3)
    np.testing.assert_allclose(blended, np.tensordot(each, weights, axes=([1], [0])), atol=1e-5)   # the weighted sum
    np.testing.assert_allclose(blended.sum(1), 1, atol=1e-5)


def test_runs_on_other_folds_are_refused(trained, tmp_path, capsys):
    comp, first, _, _ = trained
    other = tmp_path / "other"
    r = run_entry(capsys, "train.py", "--data-dir", comp, "--fold", "all", "--run-dir", other, "--folds-csv",
                  tmp_path / "folds.csv", "--num-folds", "3", "--seed", "7", "--model", "test_nfnet", "--no-pretrained",
                  "--img-size", "32", "--epochs", "1", "--batch-size", "8", "--num-workers", "0")
    assert r.returncode == 0, r.stderr
    r = run_entry(capsys, "infer.py", "--run-dir", first, "--run-dir", other, "--out", tmp_path / "s.csv",
                  "--onnx-out", tmp_path / "b.onnx")
    assert r.returncode == 2 and "do not share the folds file" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "b.onnx").exists() and not (tmp_path / "s.csv").exists()
    r = run_entry(capsys, "infer.py", "--run-dir", first, "--run-dir", first, "--out", tmp_path / "s.csv")
    assert r.returncode == 2 and "a --run-dir is given twice" in r.stderr


def test_a_zero_weight_run_is_left_out_of_the_graph(trained, second_run, tmp_path, monkeypatch):
    import kit.export.build
    import kit.evaluate.blend
    monkeypatch.setattr(kit.evaluate.blend, "fit_weights", lambda task, metric, y, preds: np.array([1.0, 0.0]))
    summary = kit.export.build.export([trained[1], second_run], out=tmp_path / "b.onnx", method="weights")
    assert [m["model"] for m in summary["members"]] == ["test_nfnet"]
    graph = Predictor(tmp_path / "b.onnx", "cpu")
    assert graph.session.get_outputs()[1].shape[1:] == [3, 3] and graph.meta.img_size == 32


@pytest.mark.parametrize("method", ["hill", "stack", pytest.param("auto", marks=pytest.mark.slow)])  # auto: 29 s, in CI's slow run
def test_every_blend_method_becomes_the_graph(trained, second_run, tmp_path, method):
    """The graph computes the fitted method exactly: its output is Blend.apply of the runs' own outputs (each run the
    mean of its members), and blend.md lists every method's honest CV, the chosen one first."""
    import kit.export.build
    summary = kit.export.build.export([trained[1], second_run], out=tmp_path / "b.onnx", method=method)
    plan = summary["plan"]
    predictor = Predictor(tmp_path / "b.onnx", "cpu")
    from kit.core.images import load_rgb
    images = np.stack([load_rgb(f, 32) for f in sorted((trained[0] / "test_images").iterdir())])
    blended, each = predictor.session.run(None, {"images": images})
    runs = [each[:, 3 * i:3 * i + 3].mean(1) for i in range(each.shape[1] // 3)]
    np.testing.assert_allclose(blended, plan.blend.apply(plan.task, runs), atol=1e-5)
    report = (tmp_path / "blend.md").read_text()
    chosen = plan.method if method == "auto" else method
    label = kit.export.build.method_label(chosen, plan.blends)
    assert f"| {label} (chosen) |" in report and report.index("(chosen)") < report.index("| stack" if chosen != "stack" else "| weights")
    assert predictor.meta.blend["method"] == chosen and set(predictor.meta.blend["honest_cv"]) >= {chosen}
    if method == "auto":
        honest = predictor.meta.blend["honest_cv"]
        assert set(honest) == {"alone:0", "alone:1", "weights", "hill", "stack"} and honest[chosen] == max(honest.values())
