"""What the deploy targets cost, measured on this machine against the offline Python predictor on the same graph.

    python bench/deploy.py serve  [--onnx runs/default/ensemble.onnx] [--images data/digits/test_images]
    python bench/deploy.py web    [--onnx ...] [--images ...]
    python bench/deploy.py bundle [--run-dir runs/default] [--data data/digits]
    python bench/deploy.py infer  [--run-dir runs/default] [--data data/digits]

serve   `python -m kit.runtime.serve` in its own process, loaded by wrk (Debian's package) over 127.0.0.1 at concurrency
        1, 8 and 32 for --seconds each: requests/s, p50 and p99 latency; the offline predictor's images/s
        (decode included, batch 32) on the same graph and images. wrk, the service and onnxruntime share the cores.
serve   (the ratio: service requests/s at concurrency 32 over offline images/s)
web     the page of `python -m kit.web` in headless Chromium (Debian's), per backend (WebAssembly with threads, the
        page cross-origin isolated; WebGPU on SwiftShader): megabytes the page downloads, time to ready, the first
        prediction, and steady-state latency per image; against the Python predictor one image at a time.
infer   infer.py twice on an unchanged run: the export, then the reuse of the up-to-date graph.
bundle  `python -m kit.deploy.bundle`, then a fresh venv: install from the bundle only (no network) and predict; wall times.
"""
from __future__ import annotations

import argparse
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def offline_rate(onnx: Path, images: list[Path], batch: int) -> float:
    from kit.runtime.predictor import Predictor
    predictor = Predictor(onnx, "cpu")
    predictor.predict_files(images[:batch], batch)
    times = []
    for _ in range(3):
        t = time.perf_counter()
        predictor.predict_files(images, batch)
        times.append(time.perf_counter() - t)
    return len(images) / statistics.median(times)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


WRK_SCRIPT = """
local bodies = {}
for i, path in ipairs({%(paths)s}) do
  local f = io.open(path, "rb"); bodies[i] = f:read("*all"); f:close()
end
local n = 0
request = function()
  n = n %% #bodies + 1
  return wrk.format("POST", "/predict", {["Content-Type"] = "application/octet-stream"}, bodies[n])
end
"""


def bench_serve(args) -> None:
    if not shutil.which("wrk"):
        sys.exit("wrk is not installed: apt install wrk")
    images = sorted(Path(args.images).iterdir())
    offline = offline_rate(Path(args.onnx), images, 32)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "kit.serve", "--onnx", args.onnx, "--port", str(port)], cwd=ROOT)
    try:
        import http.client
        for _ in range(300):
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("GET", "/health")
                if conn.getresponse().status == 200:
                    break
            except OSError:
                time.sleep(0.1)
        with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
            script.write(WRK_SCRIPT % {"paths": ", ".join(f'"{p}"' for p in images[:64])})
        print(f"graph {args.onnx}; {len(images)} images; offline predictor (decode included, batch 32): "
              f"{offline:.1f} images/s")
        print("| concurrency | requests/s | p50 latency | p99 latency | errors | service / offline |")
        print("|---:|---:|---:|---:|---:|---:|")
        for c in (1, 8, 32):
            # wrk needs at least one connection per thread
            done = subprocess.run(["wrk", f"-t{min(2, c)}", f"-c{c}", f"-d{args.seconds}s", "--latency", "-s",
                                   script.name, f"http://127.0.0.1:{port}/predict"], capture_output=True, text=True)
            out = done.stdout
            if "Requests/sec" not in out:
                sys.exit(f"wrk at concurrency {c} failed:\n{out}\n{done.stderr}")
            rps = float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1))
            p50 = re.search(r"50%\s+([0-9.]+\w+)", out).group(1)
            p99 = re.search(r"99%\s+([0-9.]+\w+)", out).group(1)
            errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
            print(f"| {c} | {rps:.1f} | {p50} | {p99} | {errors.group(1) if errors else 0} | {rps / offline:.2f} |",
                  flush=True)
    finally:
        proc.terminate()
        proc.wait(10)


def bench_web(args) -> None:
    """Per backend the page offers here (WebAssembly with threads, the page served cross-origin isolated; WebGPU on
    SwiftShader): the download, time to ready, the first prediction, and steady-state latency one image at a time,
    against the Python predictor one image at a time (decode included on both sides)."""
    from kit.core.images import load_rgb
    from kit.deploy.web import make_page
    from kit.runtime.predictor import Predictor
    sys.path.insert(0, str(ROOT / "tests"))      # the browser test's helpers ("tests" itself may be shadowed by an
    from test_deploy import chromium_driver, serve  # installed package of that name)
    images = sorted(Path(args.images).iterdir())[:args.count]
    predictor = Predictor(args.onnx, "cpu")
    single = []
    for p in images[:50] * 2:
        t = time.perf_counter()
        predictor.predict_images(load_rgb(p, predictor.meta.img_size)[None])
        single.append(time.perf_counter() - t)
    python_rate = 1 / statistics.median(single)
    print(f"graph {args.onnx}; Python predictor one image at a time: {python_rate:.1f} images/s")
    print("| backend | download | ready | first prediction | steady state | images/s | browser / Python |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "page"
        built = make_page(Path(args.onnx), page)
        (page / "test").mkdir()
        for p in images:
            shutil.copy(p, page / "test" / p.name)
        server = serve(page)
        driver = chromium_driver(Path(tmp))
        try:
            driver.set_script_timeout(600)
            for backend in ("wasm", "webgpu"):
                t0 = time.perf_counter()
                driver.get(f"http://127.0.0.1:{server.server_port}/index.html?backend={backend}")
                state = driver.execute_async_script(
                    "const done = arguments[0];"
                    "(function w() { (window.kitReady || window.kitError) ? done(window.kitBackend || window.kitError)"
                    " : setTimeout(w, 20); })();")
                ready = time.perf_counter() - t0
                timings = driver.execute_async_script("""
                    const [urls, done] = arguments; const out = [];
                    (async () => { for (const u of urls) { const t = performance.now(); await window.kitPredict(u);
                                                            out.push(performance.now() - t); } done(out); })();""",
                                                      [f"test/{p.name}" for p in images])
                steady = statistics.median(timings[1:])
                name = f"{backend} ({state['threads']} threads)" if backend == "wasm" else backend
                print(f"| {name} | {built['mb'][backend]:.1f} MB | {ready:.2f} s | {timings[0]:.1f} ms | "
                      f"{steady:.1f} ms | {1000 / steady:.1f} | {(1000 / steady) / python_rate:.2f}x |", flush=True)
        finally:
            driver.quit()
            server.shutdown()


def bench_infer(args) -> None:
    """infer.py twice on an unchanged run: the first exports, the second finds the graph up to date and predicts
    without importing torch."""
    with tempfile.TemporaryDirectory() as tmp:
        times = []
        for _ in range(2):
            t = time.perf_counter()
            subprocess.run([sys.executable, "infer.py", "--run-dir", args.run_dir, "--data-dir", args.data, "--out",
                            str(Path(tmp) / "s.csv"), "--onnx-out", str(Path(tmp) / "graph.onnx")], cwd=ROOT,
                           check=True, stdout=subprocess.DEVNULL)
            times.append(time.perf_counter() - t)
    print(f"infer.py on {args.run_dir}: first call {times[0]:.1f} s (export, parity, predict), second call "
          f"{times[1]:.1f} s (the graph up to date) = {times[0] / times[1]:.1f}x faster")


def bench_bundle(args) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "kit.bundle", "--run-dir", args.run_dir, "--out", str(tmp / "bundle")],
                       cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        built = time.perf_counter() - t
        size = sum(p.stat().st_size for p in (tmp / "bundle").rglob("*") if p.is_file())
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "venv", str(tmp / "venv")], check=True)
        offline = ["unshare", "-n"] if shutil.which("unshare") else []
        subprocess.run([*offline, str(tmp / "venv/bin/pip"), "install", "-q", "--no-index", "--find-links",
                        str(tmp / "bundle/wheels"), "-r", str(tmp / "bundle/requirements.txt")], check=True)
        installed = time.perf_counter() - t
        t = time.perf_counter()
        subprocess.run([*offline, str(tmp / "venv/bin/python"), str(tmp / "bundle/predict.py"), "--data-dir",
                        args.data, "--out", str(tmp / "submission.csv")], check=True, stdout=subprocess.DEVNULL)
        predicted = time.perf_counter() - t
    print(f"bundle of {args.run_dir}: built in {built:.0f} s ({size / 2**20:.0f} MB); fresh venv + offline install "
          f"{installed:.0f} s{' (unshare -n: no network)' if offline else ''}; predict.py {predicted:.1f} s for "
          f"{len(list(Path(args.data, 'test_images').iterdir()))} test images")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("target", choices=["serve", "web", "bundle", "infer"])
    p.add_argument("--onnx", default="runs/default/ensemble.onnx")
    p.add_argument("--images", default="data/digits/test_images")
    p.add_argument("--seconds", type=int, default=10)
    p.add_argument("--count", type=int, default=100)
    p.add_argument("--run-dir", default="runs/default")
    p.add_argument("--data", default="data/digits")
    args = p.parse_args()
    {"serve": bench_serve, "web": bench_web, "bundle": bench_bundle, "infer": bench_infer}[args.target](args)


if __name__ == "__main__":
    main()
