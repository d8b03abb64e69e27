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

from conftest import ROOT, run_cli
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


def test_the_page_in_a_real_browser_matches_the_python_predictor(onnx_file, trained, tmp_path):
    page = tmp_path / "page"
    r = run_cli("-m", "kit.web", "--onnx", onnx_file, "--out", page)
    assert r.returncode == 0, r.stderr
    assert {p.name for p in (page / "ort").iterdir()} >= {"ort.wasm.min.js", "ort-wasm-simd-threaded.wasm"}
    assert "cdn" not in (page / "index.html").read_text().lower() and "http" not in (page / "kit.js").read_text()
    images = sorted((trained[0] / "test_images").iterdir())
    (page / "test").mkdir()
    for p in images:
        shutil.copy(p, page / "test" / p.name)
    want = Predictor(onnx_file, "cpu").predict_files(images)
    server = serve(page)
    driver = chromium_driver(tmp_path)
    try:
        driver.set_script_timeout(120)
        driver.get(f"http://127.0.0.1:{server.server_port}/index.html")
        ready = driver.execute_async_script(
            "const done = arguments[0]; const t0 = Date.now();"
            "(function wait() { if (window.kitReady || Date.now() - t0 > 60000) done(!!window.kitReady);"
            " else setTimeout(wait, 100); })();")
        assert ready, driver.get_log("browser") if hasattr(driver, "get_log") else "page never became ready"
        for path, row in zip(images, want):
            got = driver.execute_async_script(
                "const done = arguments[1]; window.kitPredict(arguments[0]).then(done)"
                ".catch((e) => done({error: String(e)}));", f"test/{path.name}")
            assert "error" not in got, got
            assert got["label"] == ["cat", "dog", "fox"][int(row.argmax())]
            np.testing.assert_allclose([got["probabilities"][c] for c in ("cat", "dog", "fox")], row, atol=1e-3)
    finally:
        driver.quit()
        server.shutdown()


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
