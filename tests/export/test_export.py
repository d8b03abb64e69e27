"""Weight-standardization folding, the ensemble graph, the parity gate and the ONNX metadata."""
import copy
import shutil

import numpy as np
import onnx
import pytest
import torch
from timm.layers import ScaledStdConv2d, ScaledStdConv2dSame, StdConv2d, StdConv2dSame

from kit.store import checkpoint
from kit.export.ensemble import Ensemble, WeightedHead
from kit.train.members import fold_weight_standardization, load_members
from kit.core.errors import KitError
from kit.export.build import export
from kit.train.model import create_model
from kit.export.parity import parity_check
from kit.runtime.predictor import Predictor
from kit.store.rundir import RunDir
from kit.core.task import Multiclass


def ensemble(models, mean, std, tta, size=24):
    """A single-normalization ensemble of equally weighted classifiers."""
    n = len(models)
    views = ["identity", "hflip"] if tta else ["identity"]
    return Ensemble(models, [size] * n, [mean] * n, [std] * n, [views] * n, [0] * n, Multiclass(["a", "b", "c"]),
                    WeightedHead([1.0]))


@pytest.mark.parametrize("conv", [
    lambda: ScaledStdConv2d(6, 8, 3, stride=2, gamma=1.7),
    lambda: ScaledStdConv2dSame(6, 8, 3, stride=2, padding="same"),
    lambda: StdConv2d(6, 8, 3, padding=1),
    lambda: StdConv2dSame(6, 8, 4, stride=2),
])
def test_folded_conv_is_exact(conv):
    torch.manual_seed(0)
    holder = torch.nn.Sequential(conv())
    with torch.no_grad():
        if hasattr(holder[0], "gain"):
            holder[0].gain.uniform_(0.5, 2.0)
    x = torch.randn(3, 6, 11, 13)
    want = holder(x)
    assert fold_weight_standardization(holder) == 1
    assert type(holder[0]).__name__ in ("Conv2d", "Conv2dSame")
    got = holder(x)
    assert got.shape == want.shape and torch.allclose(got, want, atol=1e-6, rtol=1e-5)


def test_folded_nfnet_equals_the_original():
    torch.manual_seed(0)
    model = create_model("test_nfnet", 4).eval()
    folded = copy.deepcopy(model)
    n = fold_weight_standardization(folded)
    assert n > 10 and not any(isinstance(m, (ScaledStdConv2d, ScaledStdConv2dSame)) for m in folded.modules())
    x = torch.randn(5, 3, 40, 40)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("tta", [False, True])
def test_ensemble_is_the_mean_of_fold_softmaxes(tta):
    torch.manual_seed(0)
    models = [create_model("test_nfnet", 3).eval() for _ in range(3)]
    mean, std = [0.4, 0.5, 0.6], [0.2, 0.25, 0.3]
    images = torch.randint(0, 256, (4, 24, 24, 3), dtype=torch.uint8)
    x = (images.permute(0, 3, 1, 2).float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    views = [x, x.flip(3)] if tta else [x]
    with torch.no_grad():
        want = torch.stack([m(v).softmax(1) for m in models for v in views]).mean(0)
        got, each = ensemble(models, mean, std, tta)(images)
        want_each = torch.stack([torch.stack([m(v).softmax(1) for v in views]).mean(0) for m in models], 1)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(each, want_each, atol=1e-6, rtol=1e-5)       # every member's own output
    assert torch.allclose(got.sum(1), torch.ones(4))


@pytest.fixture(scope="session")
def exported(trained, tmp_path_factory):
    comp, run_dir, _, _ = trained
    out = tmp_path_factory.mktemp("export") / "ensemble.onnx"
    summary = export(run_dir, out=out, twin="int8")
    return run_dir, out, summary


def test_export_metadata_round_trips(exported, trained):
    run_dir, out, summary = exported
    onnx.checker.check_model(onnx.load(str(out)), full_check=True)
    meta = Predictor(out, "cpu").meta
    ckpts = [checkpoint.load(run_dir / f"fold{k}" / "best.pt") for k in range(3)]
    assert meta.classes == ["cat", "dog", "fox"] and meta.img_size == 32 and meta.task == "multiclass"
    assert meta.folds == [0, 1, 2] and meta.model == "test_nfnet"
    assert meta.fold_scores == [c["score"] for c in ckpts]
    assert meta.mean == ckpts[0]["mean"] and meta.int8 is False
    (member,) = meta.members
    assert member["run"] == str(run_dir) and member["folds"] == [0, 1, 2] and member["weight"] == 1.0
    assert member["img_size"] == 32 and member["model"] == "test_nfnet" and member["views"][0] == "identity"
    assert meta.tta == (len(member["views"]) > 1) and meta.cv_score == pytest.approx(member["cv"])
    # the OOF predictions recomputed through the graph's pixels reproduce training's CV exactly
    cv_line = [ln for ln in trained[3].stdout.splitlines() if ln.startswith("CV accuracy:")][0]
    assert f"CV accuracy: {summary['identity_cv'][0]:.4f} over 30" in cv_line
    assert summary["folded_convs"] > 0 and summary["parity_max_abs_diff"] <= 1e-4
    graph_ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    assert "BatchNormalization" not in graph_ops


def test_int8_graph_and_its_agreement_report(exported, trained):
    _, out, summary = exported
    int8 = summary["int8"]
    meta = Predictor(int8["path"], "cpu").meta
    assert meta.int8 is True and meta.classes == ["cat", "dog", "fox"]
    ops = {n.op_type for n in onnx.load(int8["path"]).graph.node}
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    # the reported agreement is what the two graphs do on the run's 30 OOF images
    from kit.core.images import load_rgb
    from kit.store.oof import read_oof
    oof = read_oof([trained[1] / "oof.csv"])
    images = np.stack([load_rgb(next((trained[0] / "train_images").glob(i + ".*")), 32) for i in oof.ids])
    fp32_out = Predictor(out, "cpu").predict_images(images)
    int8_out = Predictor(int8["path"], "cpu").predict_images(images)
    assert int8["images"] == 30
    assert int8["agreement"] == pytest.approx(np.mean(fp32_out.argmax(1) == int8_out.argmax(1)))
    assert int8["mean_abs_diff"] == pytest.approx(np.abs(fp32_out - int8_out).mean(), rel=1e-4)
    assert 0 < int8["max_abs_diff"] < 0.2 and int8["agreement"] >= 0.8
    assert "accuracy" not in " ".join(int8)          # no leaky accuracy figure is reported


def test_fp16_twin_keeps_the_contract_and_agrees_with_fp32(exported, trained, tmp_path):
    pytest.importorskip("onnxconverter_common")
    from kit.core.artifact import Metadata, write_metadata
    from kit.core.images import load_rgb
    from kit.store.oof import read_oof
    from kit.export import twin
    _, out, _ = exported
    oof = read_oof([trained[1] / "oof.csv"])
    images = np.stack([load_rgb(next((trained[0] / "train_images").glob(i + ".*")), 32) for i in oof.ids])
    fp32 = Predictor(out, "cpu")
    half_path = tmp_path / "ensemble.fp16.onnx"
    result = twin.make("fp16", out, images, lambda path, agreement: write_metadata(path, Metadata(**{
        **fp32.meta.__dict__, "fp16": True, "fp16_agreement": agreement})), fp32.meta.task_(), out=half_path)
    model = onnx.load(str(half_path))
    weights = {str(onnx.helper.tensor_dtype_to_np_dtype(t.data_type)) for t in model.graph.initializer if t.dims}
    assert "float16" in weights and "float32" not in weights           # every weight tensor is half
    kinds = {v.name: v.type.tensor_type.elem_type for v in [*model.graph.input, *model.graph.output]}
    assert kinds == {"images": onnx.TensorProto.UINT8, "probabilities": onnx.TensorProto.FLOAT,
                     "members": onnx.TensorProto.FLOAT}             # callers of the fp32 graph call it unchanged
    half = Predictor(half_path, "cpu")            # its own outputs pass the predictor's checks (sums, ranges)
    assert half.meta.fp16 is True and half.meta.int8 is False and half.meta.fp16_agreement == result["agreement"]
    want, got = fp32.predict_images(images), half.predict_images(images)
    assert result["agreement"] == pytest.approx(np.mean(want.argmax(1) == got.argmax(1)))
    assert 0 < result["max_abs_diff"] == pytest.approx(np.abs(want - got).max(), rel=1e-3)
    assert result["max_abs_diff"] < 5e-3 and result["agreement"] >= 0.95


def test_parity_gate_refuses_a_tampered_graph(exported, tmp_path):
    run_dir, out, _ = exported
    members = load_members(RunDir(run_dir))
    for m in members:
        m.views = tuple(Predictor(out, "cpu").meta.members[0]["views"])       # as exported
    reference = Ensemble.of(members).eval()
    images = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    assert parity_check(out, reference, images) <= 1e-4
    graph = onnx.load(str(out))
    conv_weights = [i for i in graph.graph.initializer if len(i.dims) == 4]
    array = onnx.numpy_helper.to_array(conv_weights[0]) * 1.5
    conv_weights[0].CopyFrom(onnx.numpy_helper.from_array(array, conv_weights[0].name))
    tampered = tmp_path / "tampered.onnx"
    onnx.save(graph, str(tampered))
    with pytest.raises(KitError, match=r"parity check failed: max \|Δprob\| = .* missed by"):
        parity_check(tampered, reference, images)


def test_failed_parity_writes_nothing(trained, tmp_path, monkeypatch):
    _, run_dir, _, _ = trained
    import kit.export.build as ex
    real = ex.fold_weight_standardization

    def broken(model):
        n = real(model)
        with torch.no_grad():
            next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d)).weight.mul_(3.0)
        return n

    monkeypatch.setattr(ex, "fold_weight_standardization", broken)
    out = tmp_path / "e.onnx"
    with pytest.raises(KitError, match="parity check failed"):
        export(run_dir, out=out)
    assert list(tmp_path.iterdir()) == []


def test_export_refuses_missing_folds(trained, tmp_path):
    _, run_dir, _, _ = trained
    with pytest.raises(KitError, match=r"fold\(s\) \[5\] have no best.pt"):
        export(run_dir, out=tmp_path / "e.onnx", folds=[0, 5])
    empty = tmp_path / "empty_run"
    empty.mkdir()
    with pytest.raises(KitError, match="no trained folds"):
        export(empty, out=tmp_path / "e.onnx")


def test_checkpoint_of_another_architecture_is_refused(trained, tmp_path):
    _, run_dir, _, _ = trained
    copy_dir = tmp_path / "run"
    shutil.copytree(run_dir, copy_dir)
    ckpt = checkpoint.load(copy_dir / "fold0" / "best.pt")
    ckpt["config"]["model"] = "test_resnet"
    checkpoint.save(ckpt, copy_dir / "fold0" / "best.pt")
    with pytest.raises(KitError, match="does not match model 'test_resnet'"):
        load_members(RunDir(copy_dir), [0])


def test_an_unfinished_fold_is_refused_unless_the_folds_are_named(trained, tmp_path):
    """A fold still training (or stopped) would silently leave the ensemble partial: refused, naming --folds."""
    _, run_dir, _, _ = trained
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    metrics = (run / "fold2" / "metrics.csv").read_text().splitlines()
    (run / "fold2" / "metrics.csv").write_text("\n".join(metrics[:2]) + "\n")      # 1 of 2 epochs done
    with pytest.raises(KitError, match=r"fold\(s\) \[2\] of .* have not finished training .* pass --folds 0,1 to "
                                       r"export the finished folds alone"):
        load_members(RunDir(run))
    assert [m.fold for m in load_members(RunDir(run), [0, 1])] == [0, 1]     # named: allowed
    assert [m.fold for m in load_members(RunDir(run), [2])] == [2]
