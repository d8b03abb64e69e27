"""The Predictor in-process on a graph built with onnx.helper (helpers.colour_graph; no training, no torch): the
session's provider checks, the graph's names and outputs checked against its metadata, and files predicted in order,
each row its own image's. The same Predictor over exported ensembles is tested in test_predict.py; these tests are
what mutation testing (pyproject's [tool.mutmut]) can see."""
from __future__ import annotations

import re

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from helpers import SIZE, colour_graph, solid_image as image
from kit.core.artifact import INPUT
from kit.core.errors import KitError
from kit.runtime.predictor import Predictor, create_session, image_batches

def test_files_are_predicted_in_order_each_row_its_own_image(tmp_path):
    predictor = Predictor(colour_graph(tmp_path / "g.onnx"), provider="cpu")
    colours = [(250, 0, 0), (0, 250, 0), (0, 0, 250), (0, 240, 10), (230, 0, 20)]
    paths = [image(tmp_path / f"{i}.png", c, size=12 + i) for i, c in enumerate(colours)]   # resized to 8 px each
    for batch_size in (1, 2, 32):
        out = predictor.predict_files(paths, batch_size=batch_size, workers=2)
        assert out.shape == (5, 3) and out.argmax(1).tolist() == [0, 1, 2, 1, 0]
        np.testing.assert_allclose(out.sum(1), 1, rtol=1e-5)
    one = predictor.predict_files(paths[3:4], batch_size=1)
    np.testing.assert_allclose(out[3], one[0], rtol=1e-6)                 # a row is its image's, batched or alone
    empty = predictor.predict_files([], batch_size=4)
    assert empty.shape == (0, 3) and empty.dtype == np.float32
    assert predictor.answer(out[2])["label"] == "blue" and predictor.providers == ["CPUExecutionProvider"]
    assert list(predictor.answer(out[2], top_k=1)["probabilities"]) == ["blue"]
    assert list(predictor.answer(out[2])["probabilities"])[0] == "blue" and len(predictor.answer(out[2])["probabilities"]) == 3
    with pytest.raises(KitError, match=r"^--batch-size must be at least 1, got 0$"):
        predictor.predict_files(paths, batch_size=0)


def test_image_batches_keep_the_order_and_the_size(tmp_path):
    paths = [image(tmp_path / f"{i}.png", (i * 20, 0, 0)) for i in range(7)]
    batches = list(image_batches(paths, SIZE, 3, workers=3))
    assert [b.shape for b in batches] == [(3, SIZE, SIZE, 3), (3, SIZE, SIZE, 3), (1, SIZE, SIZE, 3)]
    assert [int(img[0, 0, 0]) for b in batches for img in b] == [i * 20 for i in range(7)]
    assert all(b.dtype == np.uint8 for b in batches)


def test_a_session_is_the_provider_asked_for_or_one_clear_error(tmp_path):
    graph = colour_graph(tmp_path / "g.onnx")
    assert create_session(graph, "cpu").get_providers() == ["CPUExecutionProvider"]
    assert create_session(graph, "auto").get_providers()[0] in ("CPUExecutionProvider", "CUDAExecutionProvider")
    assert create_session(graph).get_providers()[0] in ("CPUExecutionProvider", "CUDAExecutionProvider")   # auto
    assert Predictor(graph).providers[0] in ("CPUExecutionProvider", "CUDAExecutionProvider")
    held = Predictor(tmp_path / "not_on_disk.onnx", provider="cpu", graph=graph.read_bytes())
    assert held.meta.model == "colours"
    assert create_session(tmp_path / "elsewhere.onnx", "cpu", graph=graph.read_bytes()).get_providers() == \
        ["CPUExecutionProvider"]                                    # the bytes given are the graph, not the path
    with pytest.raises(KitError, match=r"^ONNX file .*missing\.onnx does not exist; export it first with `python "
                                       r"infer\.py --export-only`$"):
        create_session(tmp_path / "missing.onnx")
    from kit.core.providers import INSTALL, PROVIDER_CHOICES
    with pytest.raises(KitError, match=rf"^--provider must be one of {re.escape(', '.join(PROVIDER_CHOICES))}, got "
                                       rf"'tpu'$"):
        create_session(graph, "tpu")
    import onnxruntime as ort
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        available = ", ".join(ort.get_available_providers())
        with pytest.raises(KitError, match=rf"^--provider cuda: onnxruntime here has no CUDAExecutionProvider \("
                                           rf"available: {re.escape(available)}\)\. {re.escape(INSTALL['cuda'][0])}, "
                                           rf"or use --provider cpu$"):
            create_session(graph, "cuda")
    (tmp_path / "bad.onnx").write_bytes(b"not a graph")
    with pytest.raises(KitError, match=r"^onnxruntime cannot load .*bad\.onnx: \[ONNXRuntimeError\]"):
        create_session(tmp_path / "bad.onnx", "cpu")


def test_a_graph_whose_names_or_outputs_disagree_with_its_metadata_is_refused(tmp_path):
    with pytest.raises(KitError, match=r"the graph's input/outputs are \(\['pixels'\], \['probabilities'\]\), not "
                                       r"'images' -> 'probabilities'; it was not exported by this kit"):
        Predictor(colour_graph(tmp_path / "names.onnx", input_name="pixels"), provider="cpu")
    # sigmoid outputs do not sum to 1: a multiclass graph's metadata on them is refused
    with pytest.raises(KitError, match=r"^\S*sigmoid\.onnx: its metadata says multiclass but .*Re-export it with this "
                                       r"kit$"):
        Predictor(colour_graph(tmp_path / "sigmoid.onnx", activation="Sigmoid"), provider="cpu")
    # a rank blend's outputs are ranks in [0, 1], not probabilities: checked as such
    Predictor(colour_graph(tmp_path / "rank.onnx", activation="Sigmoid", blend="rank"), provider="cpu")
    with pytest.raises(KitError, match=r"its metadata says multiclass but its rank outputs lie outside \[0, 1\]"):
        Predictor(colour_graph(tmp_path / "raw.onnx", activation="Identity", blend="rank"), provider="cpu")
    Predictor(colour_graph(tmp_path / "edges.onnx", activation="Clip", blend="rank"), provider="cpu")    # 0 and 1 in
    # metadata that says 8 px on a graph that cannot take them (a 6x6 reshape of 8x8 pixels): one line, with its path
    broken = colour_graph(tmp_path / "broken.onnx")
    model = onnx.load(str(broken))
    model.graph.node.insert(0, helper.make_node("Reshape", [INPUT, "six"], ["shaped"]))
    model.graph.node[1].input[0] = "shaped"
    model.graph.initializer.append(helper.make_tensor("six", TensorProto.INT64, [4], [-1, 6, 6, 3]))
    onnx.save(model, str(broken))
    with pytest.raises(KitError, match=r"^\S*broken\.onnx: onnxruntime cannot run the graph on 8px images \(.*\S.*\); "
                                       r"re-export it with this kit$"):
        Predictor(broken, provider="cpu")
