"""Helpers the tests share (conftest.py holds the fixtures): competitions made from real scans, the commands run
as a user runs them, the local service, user-error checks."""
from __future__ import annotations

import contextlib
import csv
import http.client
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))           # train.py and infer.py, for in-process runs of the entry points


def write_rows(path: Path, header, rows) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def make_competition(root: Path, per_class: int = 12, classes=("cat", "dog", "fox"), n_test: int = 9,
                     with_ext: bool = False, size: int = 16, seed: int = 0) -> Path:
    """A Kaggle-layout folder: each class is one digit's real scans, labelled with `classes`."""
    from sklearn.datasets import load_digits
    digits = load_digits()
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    (root / "train_images").mkdir()
    (root / "test_images").mkdir()

    def save(folder, name, image):
        img = Image.fromarray(np.round(image * 255 / 16).astype(np.uint8)).resize((size, size), Image.NEAREST)
        img.save(root / folder / f"{name}.png")

    train_rows = []
    for k, label in enumerate(classes):
        idx = rng.choice(np.flatnonzero(digits.target == k), per_class + n_test, replace=False)
        for j, i in enumerate(idx[:per_class]):
            name = f"tr_{k}_{j}"
            save("train_images", name, digits.images[i])
            train_rows.append((name + (".png" if with_ext else ""), label))
    test_ids = []
    for j in range(n_test):
        k = j % len(classes)
        i = rng.choice(np.flatnonzero(digits.target == k))
        save("test_images", f"te_{j}", digits.images[i])
        test_ids.append(f"te_{j}" + (".png" if with_ext else ""))
    order = rng.permutation(len(train_rows))
    write_rows(root / "train.csv", ["image_id", "label"], [train_rows[i] for i in order])
    write_rows(root / "sample_submission.csv", ["image_id", "label"], [(t, classes[0]) for t in test_ids])
    return root


def save_crafted_checkpoint(path: Path, key: str, marker: Path) -> None:
    """A checkpoint whose unpickling would create `marker`: what a malicious download looks like."""
    import torch

    class Exploit:
        def __reduce__(self):
            return (eval, (f"open({str(marker)!r}, 'w').write('x')",))

    torch.save({key: Exploit()}, path)


def csv_rows(path) -> list[list[str]]:
    """Every row of a CSV file, the header first."""
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


def csv_records(path) -> list[dict]:
    """The rows of a CSV file as {column: value}."""
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def run_cli(*args, cwd=ROOT, env=None, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)


def run_entry(capsys, script: str, *args) -> subprocess.CompletedProcess:
    """Run train.py / infer.py in this process, exactly as its __main__ does (same error handling and exit
    code), without paying a fresh interpreter's torch import. Anything but a KitError propagates (a traceback)."""
    import importlib
    return _run_main(capsys, script, importlib.import_module(script.removesuffix(".py")).main, args)


def _run_main(capsys, name: str, main, args) -> subprocess.CompletedProcess:
    from kit.core.entry import main_guard
    argv, sys.argv = sys.argv, [name, *map(str, args)]
    capsys.readouterr()
    try:
        main_guard(main)
        code = 0
    except SystemExit as e:
        code = e.code
    finally:
        sys.argv = argv
    out = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out.out, out.err)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def exchange(port, method, path, body=None, headers=None):
    """(status, response headers with lower-case names, decoded JSON body or None) of one HTTP request to the local
    service."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, json.loads(data) if data else None


def request(port, method, path, body=None, headers=None):
    """(status, decoded JSON body or None) of one HTTP request to the local service."""
    status, _, body = exchange(port, method, path, body, headers)
    return status, body


@contextlib.contextmanager
def service(onnx_file, *flags, cwd=ROOT, env=None):
    """`python -m kit.serve --onnx FILE FLAGS` in its own process on a free port, as a user starts it (from `cwd`,
    with `env`); yields the port once /health answers."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "kit.serve", "--onnx", str(onnx_file), "--port", str(port),
                             *map(str, flags)], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        try:
            if request(port, "GET", "/health")[0] == 200:
                break
        except OSError:
            time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail(f"the service did not come up: {proc.communicate()[0]}")
    SERVICES[port] = proc
    try:
        yield port
    finally:
        SERVICES.pop(port)
        if proc.poll() is None:
            proc.terminate()
            proc.wait(10)


SERVICES: dict = {}


def stop_service(port: int) -> str:
    """Stop the service of `with service(...) as port` early (SIGTERM) and return everything it printed."""
    proc = SERVICES[port]
    proc.terminate()
    return proc.communicate(timeout=20)[0]


def run_module(capsys, module: str, *args) -> subprocess.CompletedProcess:
    """`python -m kit.<command> ARGS` in this process (its main() under main_guard, as its __main__ runs it)."""
    import importlib
    return _run_main(capsys, module, importlib.import_module(module).main, args)


def assert_user_error(result, pattern):
    """Exit code 2, one `error:` line matching `pattern`, no traceback."""
    import re
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    assert re.search(pattern, errors[0]), errors[0]


def digest(folder: Path) -> dict:
    """Every file under `folder` (dotfiles and lock files included) -> its bytes' hash; symlinks -> their target."""
    import hashlib
    out = {}
    for path in sorted(Path(folder).rglob("*")):
        rel = str(path.relative_to(folder))
        if path.is_symlink():
            out[rel] = "-> " + os.readlink(path)
        elif path.is_file():
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            out[rel] = "dir"
    return out


TINY = ["--model", "test_nfnet", "--no-pretrained", "--img-size", "32", "--epochs", "2", "--batch-size", "8",
        "--num-workers", "0", "--lr", "0.05"]


def make_task_competition(root: Path, kind: str, per_digit: int = 8, n_test: int = 6, size: int = 16) -> Path:
    """A Kaggle-layout folder of digit scans (0-5) labelled for `kind`: the digit's demo tags (multilabel) or its
    value (regression)."""
    from sklearn.datasets import load_digits
    from kit.prepare.demo import label_of
    digits = load_digits()
    rng = np.random.default_rng(1)
    for folder in ("train_images", "test_images"):
        (root / folder).mkdir(parents=True)
    rows, test_ids = [], []
    for d in range(6):
        idx = rng.choice(np.flatnonzero(digits.target == d), per_digit + 1, replace=False)
        for j, i in enumerate(idx):
            image = Image.fromarray(np.round(digits.images[i] * 255 / 16).astype(np.uint8)).resize((size, size))
            if j < per_digit:
                image.save(root / "train_images" / f"tr_{d}_{j}.png")
                rows.append((f"tr_{d}_{j}", label_of(d, kind)))
            elif len(test_ids) < n_test:
                image.save(root / "test_images" / f"te_{d}.png")
                test_ids.append(f"te_{d}")
    write_rows(root / "train.csv", ["image_id", "label"], [rows[i] for i in rng.permutation(len(rows))])
    write_rows(root / "sample_submission.csv", ["image_id", "label"], [(t, "") for t in test_ids])
    return root


def fold_setup(tmp_path: Path, per_class: int = 6, fold: int = 0, keep=None, **settings):
    """(cfg, task, FoldData, RunDir) of fold `fold` of a 2-fold split of a small competition, for driving
    kit.train.fold.Trainer in this process. `keep(rows)`: the train.csv rows (id, label) to keep."""
    from kit.settings.config import load_config
    from kit.core.table import train_table
    from kit.train.fold import FoldData
    from kit.prepare.folds import load_or_create
    from kit.store.rundir import RunDir
    from kit.train.run import resolve_task
    comp = make_competition(tmp_path / "comp", per_class=per_class)
    if keep is not None:
        with open(comp / "train.csv", newline="") as f:
            rows = list(csv.reader(f))[1:]
        write_rows(comp / "train.csv", ["image_id", "label"], keep(rows))
    cfg = load_config(None, {"data_dir": str(comp), "run_dir": str(tmp_path / "run"), "model": "test_nfnet",
                             "pretrained": False, "img_size": 32, "epochs": 2, "batch_size": 8, "num_workers": 0,
                             "folds_csv": str(tmp_path / "folds.csv"), **settings})
    table = train_table(cfg)
    task = resolve_task(cfg, table)
    fold_of_row = load_or_create(cfg.folds_csv, table, table.labels, 2, cfg.seed)
    cfg.num_folds = 2
    run = RunDir(cfg.run_dir)
    run.save_setup(cfg, task)
    return cfg, task, FoldData(table, task.encode(table.labels), fold_of_row, fold), run


# --- a graph built by hand (no training, no torch): uint8 images -> a colour's class ------------------------------

SIZE, CLASSES = 8, ["red", "green", "blue"]


def colour_graph(path: Path, activation: str = "Softmax", input_name: str | None = None, task: str = "multiclass",
                 classes=CLASSES, blend: str = "weights") -> Path:
    """uint8 [N, 8, 8, 3] -> the softmax (or sigmoid) of each channel's mean over the image, scaled: a red image is
    "red". Saved with the kit's metadata."""
    import onnx
    from onnx import TensorProto, helper
    from kit.core.artifact import INPUT as _INPUT, OUTPUT
    input_name = input_name or _INPUT
    nodes = [helper.make_node("Cast", [input_name], ["f"], to=TensorProto.FLOAT),
             helper.make_node("ReduceMean", ["f", "axes"], ["m"], keepdims=0),
             helper.make_node("Mul", ["m", "scale"], ["z"]),
             helper.make_node(activation, ["z", "zero", "one"] if activation == "Clip" else ["z"], [OUTPUT],
                              **({"axis": 1} if activation == "Softmax" else {}))]
    graph = helper.make_graph(
        nodes, "colours", [helper.make_tensor_value_info(input_name, TensorProto.UINT8, ["N", SIZE, SIZE, 3])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor("axes", TensorProto.INT64, [2], [1, 2]),
         helper.make_tensor("scale", TensorProto.FLOAT, [], [0.05]),
         helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]), helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    from kit.core.artifact import Metadata, write_metadata
    from kit.core.task import Multiclass
    task_obj = Multiclass(list(classes))
    write_metadata(path, Metadata(task=task, classes=list(classes), task_params={}, img_size=SIZE,
                                  train_img_size=SIZE, mean=[0, 0, 0], std=[1, 1, 1], model="colours", folds=[0],
                                  fold_scores=[1.0], cv_score=1.0, metric="accuracy", tta=False, int8=False,
                                  int8_agreement=None, fp16=False, fp16_agreement=None, id_col="image_id",
                                  label_col="label", kit_version="test", members=[], answer=task_obj.answer_spec(),
                                  blend={"method": blend, "honest_cv": {}}, export_key=""))
    return path


def solid_image(path: Path, rgb, size: int = 12) -> Path:
    Image.new("RGB", (size, size), rgb).save(path)
    return path
