"""Deploy targets tested the way they run: the browser page in a real headless Chromium (Debian's chromium and
chromium-driver, driven by Selenium), the offline bundle installed into a fresh venv with no network."""
import functools
import http.server
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from helpers import ROOT, csv_rows, request, run_cli, service
from kit.runtime.predictor import Predictor


def serve(folder: Path):
    """`folder` over http with the cross-origin isolation headers, as `python -m kit.web --serve` serves a page."""
    from kit.deploy.web import IsolatedHandler

    class Quiet(IsolatedHandler):
        def log_message(self, *args):
            pass
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
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
                 "--disable-dev-shm-usage", "--enable-unsafe-webgpu",       # WebGPU on SwiftShader, no GPU here
                 f"--user-data-dir={tmp_path / 'chrome-profile'}"):
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


def build_page(browser, name: str, onnx_file: Path, images: list[Path], *flags) -> Path:
    """The page of `onnx_file`, built with `python -m kit.web` under the served folder, with `images` beside it."""
    page = browser[1] / name
    if not page.exists():
        r = run_cli("-m", "kit.web", "--onnx", onnx_file, "--out", page, *flags)
        assert r.returncode == 0, r.stderr
        assert "web: " in r.stdout and "MB on WebAssembly" in r.stdout              # it says what it built
        (page / "test").mkdir()
        for p in images:
            shutil.copy(p, page / "test" / p.name)
    return page


def open_page(browser, name: str, backend: str | None = None) -> dict:
    """Open the page and wait for its model; returns the backend it runs on."""
    driver, root, url = browser
    driver.get(f"{url}/{name}/index.html" + (f"?backend={backend}" if backend else ""))
    state = driver.execute_async_script(
        "const done = arguments[0]; const t0 = Date.now();"
        "(function wait() { if (window.kitReady || window.kitError || Date.now() - t0 > 90000)"
        " done({ready: !!window.kitReady, error: window.kitError || null, backend: window.kitBackend || null});"
        " else setTimeout(wait, 100); })();")
    assert state["ready"], state
    return state["backend"]


def page_answers(browser, name: str, onnx_file: Path, images: list[Path], backend: str | None = None) -> list[dict]:
    """Build and open the page, and ask window.kitPredict for each image's answer."""
    build_page(browser, name, onnx_file, images)
    open_page(browser, name, backend)
    return [browser[0].execute_async_script("const done = arguments[1]; window.kitPredict(arguments[0]).then(done)"
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


@pytest.mark.parametrize("kind,backend", [("multiclass", "wasm"), ("multiclass", "webgpu"), ("multilabel", None),
                                          ("regression", None)])
def test_service_page_and_predictor_give_the_same_json(browser, task_graphs, kind, backend):
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
    for got, expected in zip(page_answers(browser, kind, graph, images, backend), want):
        assert "error" not in got, got
        assert_same_answer(got, expected, atol=1e-3)


def test_the_page_picks_its_backend_and_says_it(browser, onnx_file, trained):
    """WebGPU where the browser offers it (headless Chromium does, on SwiftShader), else WebAssembly with every core
    as threads, since the page is served cross-origin isolated; the page says which."""
    images = sorted((trained[0] / "test_images").iterdir())[:2]
    page = build_page(browser, "backends", onnx_file, images)
    assert {"_headers", "vercel.json", ".htaccess"} <= {p.name for p in page.iterdir()}
    assert "Cross-Origin-Embedder-Policy: require-corp" in (page / "_headers").read_text()
    assert open_page(browser, "backends") == {"name": "webgpu", "threads": 0, "isolated": True}
    assert "on WebGPU" in browser[0].find_element("id", "status").text
    wasm = open_page(browser, "backends", "wasm")
    assert wasm == {"name": "wasm", "threads": 2, "isolated": True}
    assert "WebAssembly, 2 threads" in browser[0].find_element("id", "status").text


def test_picked_files_show_their_names_and_an_error_stays_with_its_file(browser, onnx_file, trained, tmp_path):
    images = sorted((trained[0] / "test_images").iterdir())[:2]
    build_page(browser, "picker", onnx_file, images)
    open_page(browser, "picker", "wasm")
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    driver = browser[0]
    picker = driver.find_element("id", "picker")
    driver.execute_script("arguments[0].hidden = false;", picker)
    picker.send_keys("\n".join(str(p) for p in [images[0], broken, images[1]]))
    results = driver.execute_async_script(
        "const done = arguments[0]; const t0 = Date.now();"
        "(function wait() { const divs = [...document.querySelectorAll('.result')];"
        " if ((divs.length === 3 && !divs.some((d) => d.textContent.includes('predicting'))) || Date.now() - t0 > 60000)"
        " done(divs.map((d) => ({text: d.textContent, error: d.classList.contains('error')})));"
        " else setTimeout(wait, 100); })();")
    by_name = {next(n for n in (images[0].name, broken.name, images[1].name) if n in r["text"]): r for r in results}
    assert set(by_name) == {images[0].name, broken.name, images[1].name}
    assert by_name[broken.name]["error"] and "cannot read this image" in by_name[broken.name]["text"]
    predictor = Predictor(onnx_file, "cpu")
    for path in (images[0], images[1]):            # the images after the broken one still get their answer
        assert not by_name[path.name]["error"]
        assert predictor.answer(predictor.predict_files([path])[0])["label"] in by_name[path.name]["text"]


def test_kit_web_serve_sends_the_isolation_headers(onnx_file, tmp_path):
    from helpers import free_port
    import time
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "kit.web", "--onnx", str(onnx_file), "--out", str(tmp_path / "p"),
                             "--serve", "--port", str(port)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        import http.client
        deadline = time.time() + 120
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", "/index.html")
                response = conn.getresponse()
                break
            except OSError:
                assert time.time() < deadline and proc.poll() is None, proc.communicate()[0]
                time.sleep(0.3)
        assert response.status == 200
        assert response.getheader("Cross-Origin-Opener-Policy") == "same-origin"
        assert response.getheader("Cross-Origin-Embedder-Policy") == "require-corp"
    finally:
        proc.terminate()
        out = proc.communicate(timeout=20)[0]
    assert f"serving {tmp_path / 'p'} on http://127.0.0.1:{port}/" in out


def test_the_web_graph_resizes_like_the_predictor(onnx_file, trained, tmp_path):
    """resize.onnx then model.onnx give load_rgb's pixels and so the predictor's outputs, from the file's own pixels
    (images of other sizes than the graph's: the resize is really exercised)."""
    import onnxruntime as ort
    from kit.core.images import open_rgb
    from kit.deploy.web import page_graphs
    page_graphs(onnx_file, tmp_path)
    resize = ort.InferenceSession(str(tmp_path / "resize.onnx"), providers=["CPUExecutionProvider"])
    model = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    assert resize.get_inputs()[0].shape == [1, "height", "width", 3]
    images = sorted((trained[0] / "test_images").iterdir())
    want = Predictor(onnx_file, "cpu").predict_files(images)
    for path, row in zip(images, want):
        pixels = np.asarray(open_rgb(path))[None]
        assert pixels.shape[1] != 32                                  # 16px files into a 32px graph
        got = model.run(None, {"images": resize.run(None, {"image": pixels})[0]})[0][0]
        np.testing.assert_allclose(got, row, atol=1e-6)


def pyenv_python(version: str) -> str | None:
    """The interpreter of a pyenv-installed Python version (this machine has 3.10 to 3.13), or None."""
    found = sorted(Path.home().glob(f".pyenv/versions/{version}.*/bin/python{version}"))
    return str(found[-1]) if found else shutil.which(f"python{version}")


@pytest.mark.slow
def test_offline_bundle_installs_and_predicts_with_no_network_on_two_pythons(trained, tmp_path):
    comp, run_dir, _, _ = trained
    pythons = [v for v in ("3.11", "3.12") if pyenv_python(v)]
    if len(pythons) < 2:
        pytest.skip("needs Python 3.11 and 3.12 installed")
    bundle = tmp_path / "bundle"
    r = run_cli("-m", "kit.bundle", "--run-dir", run_dir, "--out", bundle, "--test-images", "2000000",
                "--time-limit", "1m", "--python-version", *pythons, timeout=1200)
    assert r.returncode == 0, r.stderr
    assert "bundle: " in r.stdout and "MB" in r.stdout                   # it says what it built
    budget = (bundle / "budget.md").read_text()
    assert "does NOT fit" in budget and "Drop first" in budget and "images/s" in budget
    assert any(p.name.startswith("nfnet_kit_predict-") for p in (bundle / "wheels").iterdir())
    requirements = (bundle / "requirements.txt").read_text()
    for v in pythons:
        assert 'onnxruntime==' in requirements and f'python_version == "{v}"' in requirements
        assert v in (bundle / "README.md").read_text()
    offline = ["unshare", "-n"] if shutil.which("unshare") and \
        subprocess.run(["unshare", "-n", "true"]).returncode == 0 else []
    readonly = tmp_path / "input"
    shutil.copytree(comp, readonly)
    for p in [readonly, *readonly.rglob("*")]:
        os.chmod(p, 0o555 if p.is_dir() else 0o444)
    reference = tmp_path / "reference.csv"
    r = run_cli("infer.py", "--onnx", bundle / "model" / "ensemble.onnx", "--data-dir", comp, "--out", reference)
    assert r.returncode == 0, r.stderr
    try:
        for v in pythons:
            venv = tmp_path / f"venv{v}"
            subprocess.run([pyenv_python(v), "-m", "venv", str(venv)], check=True)
            r = subprocess.run([*offline, str(venv / "bin" / "pip"), "install", "-q", "--no-index", "--find-links",
                                str(bundle / "wheels"), "-r", str(bundle / "requirements.txt")], capture_output=True,
                               text=True)
            assert r.returncode == 0, r.stderr
            out = tmp_path / f"working{v}" / "submission.csv"
            r = subprocess.run([*offline, str(venv / "bin" / "python"), str(bundle / "predict.py"), "--data-dir",
                                str(readonly), "--out", str(out)], capture_output=True, text=True, cwd=tmp_path)
            assert r.returncode == 0, r.stderr + r.stdout
            assert "CPUExecutionProvider" in r.stdout                        # it says which provider ran
            assert csv_rows(out) == csv_rows(reference)
            check = subprocess.run([str(venv / "bin" / "python"), "-c", "import torch"], capture_output=True)
            assert check.returncode != 0                                   # the bundle's venv has no PyTorch
            assert subprocess.run([str(venv / "bin" / "kit-predict"), "--onnx", str(bundle / "model" / "ensemble.onnx"),
                                   str(readonly / "test_images"), "--out", str(tmp_path / f"p{v}.csv")]).returncode == 0
        other = next((v for v in ("3.13", "3.10") if v not in pythons and pyenv_python(v)), None)
        if other:                                           # a Python the bundle lacks: one line naming its Pythons
            r = subprocess.run([pyenv_python(other), str(bundle / "predict.py"), "--data-dir", str(readonly), "--out",
                                str(tmp_path / "x.csv")], capture_output=True, text=True)
            assert r.returncode == 2 and f"wheels for Python {', '.join(pythons)}; this notebook runs Python {other}" \
                in r.stderr, r.stderr
    finally:
        for p in [readonly, *readonly.rglob("*")]:
            os.chmod(p, 0o755 if p.is_dir() else 0o644)


def test_a_bundle_ships_the_twin_asked_for_and_refuses_a_missing_one(trained, tmp_path, monkeypatch, capsys):
    """kit.bundle --fp16 / --int8: the twin is the bundle's model (the fp32 graph stays out); --onnx G takes G's own
    twin, checked as kit.web checks it. Wheels are not downloaded here (the slow test above does that)."""
    pytest.importorskip("onnxconverter_common")
    from helpers import assert_user_error, run_module
    from kit.deploy import bundle
    monkeypatch.setattr(bundle, "download_wheels", lambda *a, **k: {})
    monkeypatch.setattr(bundle, "build_predictor_wheel", lambda out: (out / "w.whl").write_bytes(b"") or out / "w.whl")
    comp, run_dir, _, _ = trained
    r = run_module(capsys, "kit.bundle", "--run-dir", run_dir, "--out", tmp_path / "b16", "--fp16")
    assert r.returncode == 0, r.stderr
    shipped = tmp_path / "b16" / "model" / "ensemble.onnx"
    assert [p.name for p in shipped.parent.iterdir()] == ["ensemble.onnx"] and Predictor(shipped, "cpu").meta.fp16
    fp32 = tmp_path / "g.onnx"
    assert run_cli("infer.py", "--run-dir", run_dir, "--onnx-out", fp32, "--export-only").returncode == 0
    assert_user_error(run_module(capsys, "kit.bundle", "--onnx", fp32, "--out", tmp_path / "b8", "--int8"),
                      r"--int8: there is no .*g\.int8\.onnx; export it with python infer\.py \.\.\. --int8")
    assert not (tmp_path / "b8").exists()
    r = run_module(capsys, "kit.bundle", "--onnx", shipped, "--out", tmp_path / "again", "--fp16")  # a twin itself
    assert r.returncode == 0 and (tmp_path / "again" / "model" / "ensemble.onnx").read_bytes() == shipped.read_bytes()
    r = run_module(capsys, "kit.bundle", "--onnx", fp32, "--out", tmp_path / "both", "--int8", "--fp16")
    assert r.returncode == 2 and "two different twins" in r.stderr and not (tmp_path / "both").exists()


# --- the service's container (docker/Dockerfile; no Docker daemon runs here: what the image copies and installs) --

BLOCKER = '''import importlib.abc, sys
class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"torch", "timm", "albumentations", "sklearn", "onnx", "torchvision"}:
            raise ImportError(f"{name} is not in the service image")
sys.meta_path.insert(0, Refuse())
'''


def dockerfile_copies() -> list[str]:
    """The repository paths docker/Dockerfile COPYs into the image."""
    sources = []
    for line in (ROOT / "docker" / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY "):
            sources += line.split()[1:-1]
    return sources


def test_the_service_image_installs_the_wheel_requirements_and_runs_as_a_user():
    import re
    import tomllib
    from kit.deploy.bundle import DEPENDENCIES, RUNTIMES
    text = (ROOT / "docker" / "Dockerfile").read_text()
    wanted = {*DEPENDENCIES, RUNTIMES["cpu"]} | {
        re.split(r"[<>=\[]", d)[0] for d in tomllib.loads((ROOT / "pyproject.toml").read_text())
        ["project"]["optional-dependencies"]["serve"]}
    listed = {re.split(r"[<>=\[]", line)[0] for line in (ROOT / "docker" / "requirements.txt").read_text().splitlines()
              if line.strip() and not line.startswith("#")}
    assert listed == wanted
    assert re.search(r"^USER kit$", text, re.M) and "HEALTHCHECK" in text and "/health" in text
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    for source in dockerfile_copies():                  # each copied path is let through the .dockerignore
        assert f"!{source}" in ignored or f"!{source}/" in ignored, source


def test_the_files_the_image_copies_serve_a_graph_without_torch(onnx_file, trained, tmp_path):
    app = tmp_path / "app"
    for source in dockerfile_copies():
        if source.startswith("kit"):
            target = app / source
            target.parent.mkdir(parents=True, exist_ok=True)
            (shutil.copytree if (ROOT / source).is_dir() else shutil.copy)(ROOT / source, target)
    (tmp_path / "block").mkdir()
    (tmp_path / "block" / "sitecustomize.py").write_text(BLOCKER)
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "block")}
    with service(onnx_file, cwd=app, env=env) as port:
        image = sorted((trained[0] / "test_images").iterdir())[0]
        status, answer = request(port, "POST", "/predict", image.read_bytes())
        assert status == 200 and answer == Predictor(onnx_file, "cpu").answer(
            Predictor(onnx_file, "cpu").predict_files([image])[0])
    probe = subprocess.run([sys.executable, "-c", "import kit; print(kit.__file__)"], cwd=app, env=env,
                           capture_output=True, text=True)
    assert probe.stdout.strip() == str(app / "kit" / "__init__.py")          # the copy ran, not the repository
    blocked = subprocess.run([sys.executable, "-c", "import torch"], cwd=app, env=env, capture_output=True, text=True)
    assert blocked.returncode and "not in the service image" in blocked.stderr     # the blocker does block
