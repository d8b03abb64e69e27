"""The torch-free predictor, the submission contract and the infer.py CLI."""
import csv
import textwrap
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from helpers import ROOT, csv_records, run_cli, run_entry, write_rows
from kit.core.artifact import check_graph
from kit.core.errors import KitError
from kit.runtime.predictor import Predictor, create_session
from kit.runtime.submission import validate_submission


def test_infer_cli_writes_a_valid_submission(trained, tmp_path):
    comp, run_dir, _, _ = trained
    out, probs = tmp_path / "sub.csv", tmp_path / "probs.csv"
    r = run_cli("infer.py", "--run-dir", run_dir, "--out", out, "--probs", probs, "--provider", "cpu",
                "--batch-size", "4")
    assert r.returncode == 0, r.stderr
    sample, sub = csv_records(comp / "sample_submission.csv"), csv_records(out)
    assert [s["image_id"] for s in sub] == [s["image_id"] for s in sample]
    assert list(sub[0]) == ["image_id", "label"] and {s["label"] for s in sub} <= {"cat", "dog", "fox"}
    p = csv_records(probs)
    assert list(p[0]) == ["image_id", "prob_cat", "prob_dog", "prob_fox"]
    matrix = np.array([[float(row[f"prob_{c}"]) for c in ("cat", "dog", "fox")] for row in p])
    assert np.allclose(matrix.sum(1), 1, atol=1e-4)
    assert [["cat", "dog", "fox"][i] for i in matrix.argmax(1)] == [s["label"] for s in sub]
    assert "predict: 9 images" in r.stdout and "CPUExecutionProvider" in r.stdout and "images/s" in r.stdout


def test_infer_fp16_exports_its_twin_and_predicts_with_it(trained, tmp_path, capsys):
    pytest.importorskip("onnxconverter_common")
    comp, run_dir, _, _ = trained
    graph = tmp_path / "e.onnx"
    args = ["infer.py", "--run-dir", run_dir, "--onnx-out", graph, "--provider", "cpu"]
    r = run_entry(capsys, *args, "--out", tmp_path / "fp32.csv", "--probs", tmp_path / "fp32_probs.csv")
    assert r.returncode == 0, r.stderr
    exported = graph.stat().st_mtime_ns
    r = run_entry(capsys, *args, "--fp16", "--out", tmp_path / "fp16.csv", "--probs", tmp_path / "fp16_probs.csv")
    assert r.returncode == 0, r.stderr
    half = tmp_path / "e.fp16.onnx"
    assert Predictor(half, "cpu").meta.fp16 and f"predict: 9 images with {half}" in r.stdout   # the twin answered
    assert f"{graph} is up to date; making its fp16 twin only" in r.stdout and graph.stat().st_mtime_ns == exported
    assert Predictor(half, "cpu").meta.export_key == Predictor(graph, "cpu").meta.export_key    # kit.web's check
    fp32, fp16 = ([[float(v) for k, v in row.items() if k != "image_id"] for row in csv_records(tmp_path / f)]
                  for f in ("fp32_probs.csv", "fp16_probs.csv"))
    assert 0 < np.abs(np.array(fp32) - np.array(fp16)).max() < 5e-3         # half precision, not the same graph
    assert csv_records(tmp_path / "fp16.csv") == csv_records(tmp_path / "fp32.csv")
    r = run_entry(capsys, *args, "--fp16", "--out", tmp_path / "again.csv")
    assert r.returncode == 0 and f"{half} is up to date" in r.stdout


def test_a_second_infer_reads_no_checkpoint_yet_sees_a_byte_changed_in_place(trained, tmp_path, capsys, monkeypatch):
    """The export key's file digests are remembered by stat (kit.core.digest); a byte changed in an OOF file under a
    restored mtime and size still makes the graph out of date."""
    import os
    import shutil
    from kit.core import digest
    comp, trained_run, _, _ = trained
    run_dir = tmp_path / "run"
    shutil.copytree(trained_run, run_dir)
    monkeypatch.setattr(digest, "RACY_S", 0.0)
    reads = []
    real = digest.sha256_of
    monkeypatch.setattr(digest, "sha256_of", lambda path: reads.append(path) or real(path))
    args = ["infer.py", "--run-dir", run_dir, "--onnx-out", tmp_path / "g.onnx", "--export-only"]
    assert run_entry(capsys, *args).returncode == 0 and len(reads) == 6        # 3 folds' best.pt and oof.csv
    r = run_entry(capsys, *args)
    assert r.returncode == 0 and "is up to date" in r.stdout and len(reads) == 6
    oof = run_dir / "fold1" / "oof.csv"
    st, data = os.stat(oof), bytearray(oof.read_bytes())
    digit = data.index(b",0.", data.index(b"\n")) + 4                      # a probability's first decimal
    assert data[digit] in b"012345678"
    data[digit] += 1
    with open(oof, "r+b") as f:                                  # in place: same inode
        f.write(data)
    os.utime(oof, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(oof).st_size == st.st_size and os.stat(oof).st_mtime_ns == st.st_mtime_ns
    r = run_entry(capsys, *args)
    assert r.returncode == 0 and "is out of date" in r.stdout and reads[6:] == [oof]


def test_predictor_runs_with_torch_unimportable(onnx_file, trained, tmp_path):
    comp = trained[0]
    out = tmp_path / "sub.csv"
    script = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None          # any `import torch` now raises ImportError
        from kit.runtime.submission import make_submission
        result = make_submission({str(onnx_file)!r}, {str(comp)!r}, {str(out)!r}, provider="cpu")
        assert "timm" not in sys.modules and "albumentations" not in sys.modules
        print("rows", result["images"])
    """)
    r = run_cli("-c", script)
    assert r.returncode == 0, r.stderr
    assert "rows 9" in r.stdout and len(csv_records(out)) == 9
    r = run_cli("infer.py", "--onnx", onnx_file, "--data-dir", comp, "--out", tmp_path / "b.csv",
                env=None)
    assert r.returncode == 0, r.stderr
    assert csv_records(tmp_path / "b.csv") == csv_records(out)


def test_cuda_provider_missing_is_a_clear_error(onnx_file):
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("CUDA provider present here")
    with pytest.raises(KitError, match="--provider cuda: onnxruntime here has no CUDAExecutionProvider"):
        create_session(onnx_file, "cuda")
    assert create_session(onnx_file, "auto").get_providers() == ["CPUExecutionProvider"]


@pytest.mark.parametrize("provider, name, install", [
    ("tensorrt", "TensorrtExecutionProvider", "TensorRT libraries"),
    ("openvino", "OpenVINOExecutionProvider", "onnxruntime-openvino in place of onnxruntime")])
def test_tensorrt_and_openvino_missing_or_falling_back_are_clear_errors(onnx_file, monkeypatch, provider, name,
                                                                        install):
    """Asked for by name and missing: what to install; present but the session ran on the CPU: an error too (a
    silent fallback would report the CPU's speed as the provider's). `auto` never picks them."""
    if name in ort.get_available_providers():
        pytest.skip(f"{name} present here")
    with pytest.raises(KitError, match=rf"--provider {provider}: onnxruntime here has no {name} .*{install}"):
        create_session(onnx_file, provider)
    asked = []

    class Session:                      # onnxruntime with the provider listed, whose session falls back to the CPU
        def __init__(self, graph, options, providers):
            asked.append(providers)

        def get_providers(self):
            return ["CPUExecutionProvider"]
    import kit.runtime.predictor as predictor
    monkeypatch.setattr(predictor.ort, "get_available_providers", lambda: [name, "CUDAExecutionProvider",
                                                                          "CPUExecutionProvider"])
    monkeypatch.setattr(predictor.ort, "InferenceSession", Session)
    with pytest.raises(KitError, match=f"onnxruntime fell back to CPUExecutionProvider instead of {name}"):
        create_session(onnx_file, provider)
    assert asked[-1][0] == name and asked[-1][-1] == "CPUExecutionProvider"
    assert ("CUDAExecutionProvider" in asked[-1]) == (provider == "tensorrt")   # TensorRT hands the rest to CUDA
    with pytest.raises(KitError, match="fell back to CPUExecutionProvider instead of CUDAExecutionProvider"):
        create_session(onnx_file, "auto")                         # auto: CUDA when listed, never TensorRT/OpenVINO


def test_an_unknown_or_missing_provider_is_one_error_line(onnx_file, trained, tmp_path):
    comp = trained[0]
    r = run_cli("infer.py", "--onnx", onnx_file, "--data-dir", comp, "--provider", "rocm", "--out", tmp_path / "s.csv")
    assert r.returncode == 2 and "Traceback" not in r.stderr and "rocm" in r.stderr
    assert all(name in r.stderr for name in ("auto", "cpu", "cuda", "tensorrt", "openvino"))
    if "OpenVINOExecutionProvider" not in ort.get_available_providers():
        r = run_cli("infer.py", "--onnx", onnx_file, "--data-dir", comp, "--provider", "openvino", "--out",
                    tmp_path / "s.csv")
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and "pip install onnxruntime-openvino" in r.stderr
    assert not (tmp_path / "s.csv").exists()


def test_foreign_or_mismatched_graph_is_refused(onnx_file, tmp_path):
    plain = onnx.load(str(onnx_file))
    del plain.metadata_props[:]
    onnx.save(plain, str(tmp_path / "plain.onnx"))
    with pytest.raises(KitError, match="not an ensemble exported by this kit"):
        Predictor(tmp_path / "plain.onnx", "cpu")
    p = Predictor(onnx_file, "cpu")
    shapes = p.session.get_inputs()[0].shape, p.session.get_outputs()[0].shape
    with pytest.raises(KitError, match="takes images of shape .* but its metadata says 64px"):
        check_graph(*shapes, meta=type(p.meta)(**{**p.meta.__dict__, "img_size": 64}))
    with pytest.raises(KitError, match="outputs 3 classes but its metadata lists 4"):
        check_graph(*shapes, meta=type(p.meta)(**{**p.meta.__dict__, "classes": ["a", "b", "c", "d"]}))
    with pytest.raises(KitError, match="does not exist"):
        create_session(tmp_path / "none.onnx")


def test_sample_submission_ids_must_match_test_images(onnx_file, trained, tmp_path):
    import shutil
    comp = tmp_path / "comp"
    shutil.copytree(trained[0], comp)
    rows = [[r["image_id"], r["label"]] for r in csv_records(comp / "sample_submission.csv")]
    write_rows(comp / "sample_submission.csv", ["image_id", "label"], rows + [["ghost", "cat"]])
    out = tmp_path / "sub.csv"
    out.write_text("previous good submission\n")
    r = run_cli("infer.py", "--onnx", onnx_file, "--data-dir", comp, "--out", out)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "sample_submission.csv line 11: image 'ghost' not found" in r.stderr
    assert out.read_text() == "previous good submission\n"


def test_a_failure_mid_prediction_keeps_the_previous_submission(onnx_file, trained, tmp_path):
    import shutil
    comp = tmp_path / "comp"
    shutil.copytree(trained[0], comp)
    victim = sorted((comp / "test_images").iterdir())[-1]
    victim.write_bytes(victim.read_bytes()[:40])
    out = tmp_path / "sub.csv"
    out.write_text("previous good submission\n")
    r = run_cli("infer.py", "--onnx", onnx_file, "--data-dir", comp, "--out", out)
    assert r.returncode == 2 and f"cannot read image {victim}" in r.stderr
    assert "Replace the file" in r.stderr and "remove" not in r.stderr      # a test row cannot be dropped
    assert out.read_text() == "previous good submission\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".sub")] == []


@pytest.mark.parametrize("header,rows,needle", [
    (["image_id", "label"], [["a", "x"], ["c", "y"]], r"1 id\(s\) missing \(e.g. 'b'\)"),
    (["image_id", "label"], [["b", "x"], ["a", "y"]], "ids out of order"),
    (["image_id", "label"], [["a", "x"], ["a", "y"]], "duplicate ids"),
    (["image_id", "target"], [["a", "x"], ["b", "y"]], "columns .* differ"),
    (["image_id", "label"], [["a", "x"], ["b", "nan"]], "line 3: empty or NaN"),
])
def test_submission_validation(header, rows, needle):
    with pytest.raises(KitError, match=needle):
        validate_submission(header, rows, ["a", "b"], ["image_id", "label"], "image_id")
    validate_submission(["image_id", "label"], [["a", "x"], ["b", "y"]], ["a", "b"], ["image_id", "label"],
                        "image_id")


def test_demo_end_to_end_on_cpu(tmp_path):
    """The embedded demo competition, from nothing: materialize, train 2 folds briefly, export, predict."""
    r = run_cli(ROOT / "train.py", "--fold", "all", "--num-folds", "2", "--model", "test_nfnet", "--epochs", "1",
                cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "data/digits/train.csv").is_file() and (tmp_path / "folds/folds.csv").is_file()
    r = run_cli(ROOT / "infer.py", "--provider", "cpu", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    sub = csv_records(tmp_path / "submissions/submission.csv")
    sample = csv_records(tmp_path / "data/digits/sample_submission.csv")
    assert [s["image_id"] for s in sub] == [s["image_id"] for s in sample] and len(sub) == 360
    assert {s["label"] for s in sub} <= {str(d) for d in range(10)}
    assert "TTA off" in r.stdout
    solution = {row["image_id"]: row["label"] for row in csv_records(tmp_path / "data/digits/solution.csv")}
    correct = sum(s["label"] == solution[s["image_id"]] for s in sub)
    assert f"demo test accuracy (against data/digits/solution.csv): {correct / 360:.4f} ({correct}/360)" in r.stdout


@pytest.mark.parametrize("kind", ["multiclass", "multilabel", "regression"])
def test_each_submission_row_is_its_own_image(task_graphs, tmp_path, capsys, kind):
    """Each test image predicted alone gives exactly its own row of the submission and of --probs (a submission whose
    rows were shifted by one would pass a check of the submission against its own probabilities file)."""
    from helpers import run_entry
    from kit.runtime.predictor import Predictor
    comp, graph = task_graphs[kind]
    r = run_entry(capsys, "infer.py", "--onnx", graph, "--data-dir", comp, "--out", tmp_path / "s.csv", "--probs",
                  tmp_path / "p.csv", "--batch-size", "4")
    assert r.returncode == 0, r.stderr
    with open(tmp_path / "s.csv", newline="") as f:
        submitted = {row["image_id"]: row["label"] for row in csv.DictReader(f)}
    with open(tmp_path / "p.csv", newline="") as f:
        reader = csv.reader(f)
        next(reader)
        probs = {row[0]: np.array([float(v) for v in row[1:]]) for row in reader}
    predictor = Predictor(graph, "cpu")
    alone = {}
    for path in sorted((comp / "test_images").iterdir()):
        alone[path.stem] = predictor.predict_files([path])[0]
    assert set(alone) == set(submitted) == set(probs)
    for image_id, row in alone.items():
        np.testing.assert_allclose(probs[image_id], row, atol=1e-6)
        assert submitted[image_id] == predictor.answer(row)["label"]
    rows = list(alone.values())                       # the check has teeth: no two images predict alike
    assert min(np.abs(a - b).max() for i, a in enumerate(rows) for b in rows[i + 1:]) > 1e-5


@pytest.mark.parametrize("kind", ["multiclass", "multilabel", "regression"])
@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_kit_predict_gives_each_row_its_own_images_answer(task_graphs, tmp_path, capsys, kind, suffix):
    """`python -m kit.predict` on a folder: every row's path carries the answer of that image predicted alone (rows
    shifted by one against their paths would fail: no two images predict alike)."""
    import json
    from helpers import run_module
    comp, graph = task_graphs[kind]
    out = tmp_path / f"preds{suffix}"
    r = run_module(capsys, "kit.predict", "--onnx", graph, comp / "test_images", "--out", out, "--batch-size", "4",
                   "--top-k", "50")
    assert r.returncode == 0, r.stderr
    predictor = Predictor(graph, "cpu")
    paths = sorted((comp / "test_images").iterdir())
    alone = {str(p): predictor.answer(predictor.predict_files([p])[0], 50) for p in paths}
    if suffix == ".jsonl":
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        got = {row.pop("path"): row for row in rows}
    else:
        got = {}
        for row in csv_records(out):
            path = row.pop("path")
            got[path] = {"label": row["label"], **({"value": float(row["value"])} if "value" in row else
                                                   {"probabilities": {row[f"top{r}"]: float(row[f"p{r}"])
                                                                      for r in range(1, len(row) // 2 + 1)}})}
    assert list(got) == [str(p) for p in paths]                   # every image once, in order
    numbers = []
    for path, answer in alone.items():
        assert got[path]["label"] == answer["label"], path
        if "value" in answer:
            assert got[path]["value"] == pytest.approx(answer["value"], abs=1e-6)
            numbers.append(np.array([answer["value"]]))
        else:
            for name, p in answer["probabilities"].items():
                assert got[path]["probabilities"][name] == pytest.approx(p, abs=1e-6), (path, name)
            numbers.append(np.array([answer["probabilities"][n] for n in sorted(answer["probabilities"])]))
    assert min(np.abs(a - b).max() for i, a in enumerate(numbers) for b in numbers[i + 1:]) > 1e-5


def test_kit_predict_json_answers_are_whole_and_skip_errors_keeps_going(task_graphs, tmp_path, capsys):
    """JSON lines carry the whole answer (every class) unless --top-k cuts it; an unreadable image stops the run, or
    with --skip-errors gets its reason in its own row while the others are predicted."""
    import json
    from helpers import assert_user_error, run_module
    comp, graph = task_graphs["multiclass"]
    images = tmp_path / "imgs"
    images.mkdir()
    for p in sorted((comp / "test_images").iterdir())[:3]:
        (images / p.name).write_bytes(p.read_bytes())
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    assert_user_error(run_module(capsys, "kit.predict", "--onnx", graph, images, "--out", tmp_path / "a.jsonl"),
                      r"1 image\(s\) cannot be decoded: .*broken.png")
    r = run_module(capsys, "kit.predict", "--onnx", graph, images, "--out", tmp_path / "a.jsonl", "--skip-errors")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert [Path(r["path"]).name for r in rows] == sorted(p.name for p in images.iterdir())
    broken = next(r for r in rows if r["path"].endswith("broken.png"))
    assert set(broken) == {"path", "error"} and broken["error"]
    assert all(len(r["probabilities"]) == len(Predictor(graph, "cpu").task.names) for r in rows if r is not broken)
    r = run_module(capsys, "kit.predict", "--onnx", graph, images, "--out", tmp_path / "a.csv", "--skip-errors",
                   "--top-k", "1")
    assert r.returncode == 0, r.stderr
    table = csv_records(tmp_path / "a.csv")
    assert list(table[0]) == ["path", "label", "top1", "p1", "error"]
    assert [bool(row["error"]) for row in table] == [row["path"].endswith("broken.png") for row in table]
