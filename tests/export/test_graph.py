"""The ONNX rewrites of kit.export.graph keep the values and remove the activation-sized work they target."""
import collections

import numpy as np
import onnx
import onnxruntime as ort
import torch

from kit.export import graph as kit_graph
from kit.export.onnx_export import export_onnx


class EcaLikeBlock(torch.nn.Module):
    """The patterns of a timm NFNet block: a gate broadcast with expand_as, scalar gains after it, and a scalar
    multiply feeding a conv."""

    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(8, 4, 3, padding=1)

    def forward(self, images):
        x = self.conv1(images.permute(0, 3, 1, 2).float() / 255.0)
        gate = torch.sigmoid(x.mean((2, 3))).view(x.shape[0], -1, 1, 1)
        x = x * gate.expand_as(x) * 2.0 * 0.2
        x = torch.nn.functional.silu(x) * 0.9
        return self.conv2(x).mean((2, 3))


def _ops(path):
    return collections.Counter(n.op_type for n in onnx.load(str(path)).graph.node)


def test_export_drops_expands_and_folds_scalar_muls_keeping_values(tmp_path, monkeypatch):
    torch.manual_seed(0)
    block = EcaLikeBlock().eval()
    images = np.random.default_rng(0).integers(0, 256, (3, 10, 10, 3), dtype=np.uint8)
    with torch.no_grad():
        expected = block(torch.from_numpy(images)).numpy()

    export_onnx(block, 10, tmp_path / "simplified.onnx")
    monkeypatch.setattr("kit.export.onnx_export.simplify", lambda graph: None)
    export_onnx(block, 10, tmp_path / "raw.onnx")

    raw, simplified = _ops(tmp_path / "raw.onnx"), _ops(tmp_path / "simplified.onnx")
    assert raw["Expand"] == 1 and simplified["Expand"] == 0
    # x*gate*2*0.2 becomes x*(gate*0.4); silu(x)*0.9 goes into conv2's weight: 3 full-size Muls fewer
    assert raw["Mul"] - simplified["Mul"] == 3 - 1, (raw, simplified)      # one small Mul (gate * 0.4) added
    for name in ("raw", "simplified"):
        session = ort.InferenceSession(str(tmp_path / f"{name}.onnx"), providers=["CPUExecutionProvider"])
        np.testing.assert_allclose(session.run(None, {"images": images})[0], expected, rtol=1e-5, atol=1e-5)


def test_a_scalar_mul_that_feeds_anything_but_convs_stays():
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["n", 4])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["n", 4])
    c = onnx.numpy_helper.from_array(np.array(3.0, np.float32), "c")
    g = onnx.helper.make_graph([onnx.helper.make_node("Mul", ["x", "c"], ["m"]),
                                onnx.helper.make_node("Relu", ["m"], ["y"])], "g", [x], [y], [c])
    assert kit_graph.simplify(g) == {"expands": 0, "scalar_muls": 0}
    assert [n.op_type for n in g.node] == ["Mul", "Relu"]


def test_a_real_eca_nfnet_loses_its_expands_and_keeps_its_values(tmp_path, monkeypatch):
    """The kit's default model: every ECA expand_as gone, the scalar gains folded, the values unchanged."""
    from kit.export.ensemble import Ensemble, WeightedHead
    from kit.train.members import fold_weight_standardization
    from kit.core.task import Multiclass
    from kit.train.model import create_model
    torch.manual_seed(0)
    model = create_model("eca_nfnet_l0", 3).eval()
    fold_weight_standardization(model)
    ensemble = Ensemble([model], [32], [[0.5] * 3], [[0.25] * 3], [["identity"]], [0], Multiclass(["a", "b", "c"]),
                        WeightedHead([1.0])).eval()
    images = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    with torch.no_grad():
        expected = ensemble(torch.from_numpy(images))[0].numpy()
    export_onnx(ensemble, 32, tmp_path / "simplified.onnx")
    monkeypatch.setattr("kit.export.onnx_export.simplify", lambda graph: None)
    export_onnx(ensemble, 32, tmp_path / "raw.onnx")
    raw, simplified = _ops(tmp_path / "raw.onnx"), _ops(tmp_path / "simplified.onnx")
    assert raw["Expand"] >= 9 and simplified["Expand"] == 0
    assert raw["Mul"] - simplified["Mul"] >= 15, (raw["Mul"], simplified["Mul"])      # 100 -> 80 measured
    session = ort.InferenceSession(str(tmp_path / "simplified.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"images": images})[0], expected, atol=1e-5)
