"""kit.triton: the model repository's config parses with Triton's own schema and says what the graph is."""
from __future__ import annotations

import json

import numpy as np
import pytest

from helpers import run_entry

model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="tritonclient[grpc] (dev extra)")


def parsed(path):
    from google.protobuf import text_format
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def test_the_repository_holds_the_graph_its_labels_and_a_config_triton_parses(onnx_file, tmp_path, capsys):
    from kit.runtime.predictor import Predictor
    meta = Predictor(onnx_file, "cpu").meta
    r = run_entry(capsys, "kit.triton", "--onnx", onnx_file, "--out", tmp_path / "repo", "--name", "cats",
                  "--max-batch", "16", "--preferred-batch", "8", "4", "--instances", "2")
    assert r.returncode == 0, r.stderr
    model = tmp_path / "repo" / "cats"
    config = parsed(model / "config.pbtxt")
    types = model_config_pb2.DataType
    assert config.name == "cats" and config.platform == "onnxruntime_onnx" and config.max_batch_size == 16
    (image,) = config.input
    assert (image.name, image.data_type, list(image.dims)) == ("images", types.Value("TYPE_UINT8"),
                                                               [meta.img_size, meta.img_size, 3])
    probs, members = config.output
    assert (probs.name, probs.data_type, list(probs.dims)) == ("probabilities", types.Value("TYPE_FP32"),
                                                               [len(meta.classes)])
    assert probs.label_filename == "labels.txt" and members.name == "members"
    assert list(members.dims) == [len(meta.folds), len(meta.classes)]
    assert list(config.dynamic_batching.preferred_batch_size) == [4, 8]
    assert config.instance_group[0].count == 2
    assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.Kind.Value("KIND_CPU")
    assert (model / "labels.txt").read_text().splitlines() == [str(c) for c in meta.classes]
    assert (model / "1" / "model.onnx").read_bytes() == onnx_file.read_bytes()
    assert json.loads((model / "kit-meta.json").read_text())["classes"] == meta.classes
    # the graph as Triton's ONNX backend would run it: a batch of uint8 images in, one row of outputs per image
    out = Predictor(model / "1" / "model.onnx", "cpu").predict_images(
        np.zeros((3, meta.img_size, meta.img_size, 3), np.uint8))
    assert out.shape == (3, len(meta.classes))


def test_a_regression_graph_has_no_labels_and_gpu_instances(task_graphs, tmp_path, capsys):
    _, graph = task_graphs["regression"]
    r = run_entry(capsys, "kit.triton", "--onnx", graph, "--out", tmp_path / "repo", "--gpu")
    assert r.returncode == 0, r.stderr
    model = tmp_path / "repo" / graph.stem
    config = parsed(model / "config.pbtxt")
    assert not config.output[0].label_filename and not (model / "labels.txt").exists()
    assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.Kind.Value("KIND_GPU")
    assert config.max_batch_size == 32 and not config.dynamic_batching.preferred_batch_size


@pytest.mark.parametrize("args, message", [
    (["--preferred-batch", "64"], r"--preferred-batch 64 is above --max-batch 32"),
    (["--name", "../up"], r"--name '../up': a Triton model name"),
    (["--name", "taken"], r"repo/taken exists: the repository already has a model 'taken'"),
])
def test_refusals_are_one_line_and_leave_the_repository_as_it_was(onnx_file, tmp_path, capsys, args, message):
    import re
    (tmp_path / "repo" / "taken").mkdir(parents=True)
    (tmp_path / "repo" / "taken" / "config.pbtxt").write_text("kept")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    r = run_entry(capsys, "kit.triton", "--onnx", onnx_file, "--out", tmp_path / "repo", *args)
    assert r.returncode == 2 and re.search(message, r.stderr) and len(r.stderr.strip().splitlines()) == 1
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    assert (tmp_path / "repo" / "taken" / "config.pbtxt").read_text() == "kept"


def test_a_file_that_is_no_kit_graph_is_refused(tmp_path, capsys):
    (tmp_path / "g.onnx").write_bytes(b"not a graph")
    r = run_entry(capsys, "kit.triton", "--onnx", tmp_path / "g.onnx", "--out", tmp_path / "repo")
    assert r.returncode == 2 and r.stderr.startswith("error: ") and not (tmp_path / "repo").exists()
