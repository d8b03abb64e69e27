"""Deploy targets tested the way they run: the browser page in a real headless Chromium (Debian's chromium and
chromium-driver, driven by Selenium), the offline bundle installed into a fresh venv with no network."""
import csv
import functools
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from conftest import request, run_cli, service
from kit.runtime.predictor import Predictor


def rows_of(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


class StaticHandler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, ".mjs": "text/javascript",
                      ".wasm": "application/wasm", ".onnx": "application/octet-stream"}

    def log_message(self, *args):
        pass


def serve(folder: Path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(StaticHandler, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def chromium_driver(tmp_path):
    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and chromedriver):
        pytest.skip("Debian's chromium and chromium-driver are not installed (apt install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'chrome-profile'}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(chromedriver), options=options)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """(headless Chromium, the folder a local static server serves, its URL)."""
    root = tmp_path_factory.mktemp("site")
    server = serve(root)
    driver = chromium_driver(tmp_path_factory.mktemp("chrome"))
    driver.set_script_timeout(120)
    try:
        yield driver, root, f"http://127.0.0.1:{server.server_port}"
    finally:
        driver.quit()
        server.shutdown()


def page_answers(browser, name: str, onnx_file: Path, images: list[Path]) -> list[dict]:
    """Build the page of `onnx_file` with `python -m kit.web` under the served folder, open it, and ask
    window.kitPredict for each image's answer."""
    driver, root, url = browser
    page = root / name
    r = run_cli("-m", "kit.web", "--onnx", onnx_file, "--out", page)
    assert r.returncode == 0, r.stderr
    (page / "test").mkdir()
    for p in images:
        shutil.copy(p, page / "test" / p.name)
    driver.get(f"{url}/{name}/index.html")
    ready = driver.execute_async_script(
        "const done = arguments[0]; const t0 = Date.now();"
        "(function wait() { if (window.kitReady || Date.now() - t0 > 60000) done(!!window.kitReady);"
        " else setTimeout(wait, 100); })();")
    assert ready, "the page never became ready"
    return [driver.execute_async_script("const done = arguments[1]; window.kitPredict(arguments[0]).then(done)"
                                        ".catch((e) => done({error: String(e)}));", f"test/{p.name}") for p in images]


def test_the_page_in_a_real_browser_matches_the_python_predictor(browser, onnx_file, trained):
    images = sorted((trained[0] / "test_images").iterdir())
    got = page_answers(browser, "page", onnx_file, images)
    page = browser[1] / "page"
    assert {p.name for p in (page / "ort").iterdir()} >= {"ort.wasm.min.js", "ort-wasm-simd-threaded.wasm"}
    assert "cdn" not in (page / "index.html").read_text().lower() and "http" not in (page / "kit.js").read_text()
    want = Predictor(onnx_file, "cpu").predict_files(images)
    for answer, row in zip(got, want):
        assert "error" not in answer, answer
        assert answer["label"] == ["cat", "dog", "fox"][int(row.argmax())]
        np.testing.assert_allclose([answer["probabilities"][c] for c in ("cat", "dog", "fox")], row, atol=1e-3)


def assert_same_answer(got: dict, want: dict, atol: float) -> None:
    assert set(got) == set(want), (got, want)
    assert got["label"] == want["label"], (got, want)
    if "value" in want:
        assert got["value"] == pytest.approx(want["value"], abs=atol)
    if "probabilities" in want:
        # JSON objects are unordered (a JS object even puts integer-like keys first): compared by name
        assert set(got["probabilities"]) == set(want["probabilities"])
        names = list(want["probabilities"])
        np.testing.assert_allclose([got["probabilities"][n] for n in names], [want["probabilities"][n] for n in names],
                                   atol=atol)


@pytest.mark.parametrize("kind", ["multiclass", "multilabel", "regression"])
def test_service_page_and_predictor_give_the_same_json(browser, task_graphs, kind):
    """For every kind of task, the three ways to ask one image give one answer: the Python Predictor, the HTTP
    service and the browser page (whose script reads the answer's shape from the graph's metadata)."""
    comp, graph = task_graphs[kind]
    images = sorted((comp / "test_images").iterdir())
    predictor = Predictor(graph, "cpu")
    want = [predictor.answer(row) for row in predictor.predict_files(images)]
    assert {"multiclass": {"label", "probabilities"}, "multilabel": {"label", "probabilities"},
            "regression": {"label", "value"}}[kind] == set(want[0])
    with service(graph) as port:
        served = [request(port, "POST", "/predict", p.read_bytes()) for p in images]
    assert all(status == 200 for status, _ in served), served
    for (_, got), expected in zip(served, want):
        assert_same_answer(got, expected, atol=1e-6)
    for got, expected in zip(page_answers(browser, kind, graph, images), want):
        assert "error" not in got, got
        assert_same_answer(got, expected, atol=1e-3)


def test_the_web_graph_resizes_like_the_predictor(onnx_file, trained, tmp_path):
    """The resize moved into model.onnx gives load_rgb's pixels: the same outputs from the file's own pixels."""
    import onnxruntime as ort
    from kit.core.images import open_rgb
    from kit.deploy.web import with_resize
    with_resize(onnx_file, tmp_path / "model.onnx")
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == [1, "height", "width", 3]
    images = sorted((trained[0] / "test_images").iterdir())
    want = Predictor(onnx_file, "cpu").predict_files(images)
    for path, row in zip(images, want):
        got = session.run(None, {"image": np.asarray(open_rgb(path))[None]})[0][0]
        np.testing.assert_allclose(got, row, atol=1e-6)


@pytest.mark.slow
def test_offline_bundle_installs_and_predicts_with_no_network(trained, tmp_path):
    comp, run_dir, _, _ = trained
    bundle = tmp_path / "bundle"
    r = run_cli("-m", "kit.bundle", "--run-dir", run_dir, "--out", bundle, "--test-images", "2000000",
                "--time-limit", "1m", timeout=900)
    assert r.returncode == 0, r.stderr
    budget = (bundle / "budget.md").read_text()
    assert "does NOT fit" in budget and "Drop first" in budget and "images/s" in budget
    assert any(p.name.startswith("nfnet_kit_predict-") for p in (bundle / "wheels").iterdir())
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    offline = ["unshare", "-n"] if shutil.which("unshare") and \
        subprocess.run(["unshare", "-n", "true"]).returncode == 0 else []
    r = subprocess.run([*offline, str(venv / "bin" / "pip"), "install", "-q", "--no-index", "--find-links",
                        str(bundle / "wheels"), "-r", str(bundle / "requirements.txt")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    readonly = tmp_path / "input"
    shutil.copytree(comp, readonly)
    for p in [readonly, *readonly.rglob("*")]:
        os.chmod(p, 0o555 if p.is_dir() else 0o444)
    out = tmp_path / "working" / "submission.csv"
    r = subprocess.run([*offline, str(venv / "bin" / "python"), str(bundle / "predict.py"), "--data-dir", str(readonly),
                        "--out", str(out)], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr + r.stdout
    check = subprocess.run([str(venv / "bin" / "python"), "-c", "import torch"], capture_output=True)
    assert check.returncode != 0                                   # the bundle's venv has no PyTorch
    reference = tmp_path / "reference.csv"
    r = run_cli("infer.py", "--onnx", bundle / "model" / "ensemble.onnx", "--data-dir", comp, "--out", reference)
    assert r.returncode == 0, r.stderr
    assert rows_of(out) == rows_of(reference)
    settings = json.loads((bundle / "settings.json").read_text())
    assert settings["sample_submission"] == "sample_submission.csv"
    for p in [readonly, *readonly.rglob("*")]:
        os.chmod(p, 0o755 if p.is_dir() else 0o644)
