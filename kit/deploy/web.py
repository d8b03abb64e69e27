"""A static web page that classifies images in the browser with onnxruntime-web: nothing leaves the machine.

    python -m kit.web --onnx ensemble.onnx --out DIR [--int8] [--serve --port 8000]

DIR/index.html, kit.js        the page: pick or drop images, each result with its file name (an error stays with its
                              file), the backend it runs on: WebGPU when the browser offers it, else WebAssembly,
                              multi-threaded when the page is cross-origin isolated (`?backend=wasm` forces one)
DIR/model.onnx, resize.onnx   the exported graph, and the resize it starts from (below), run on WebAssembly
DIR/kit-meta.json             the graph's kit.* metadata (classes, task, the answer's shape)
DIR/ort/                      onnxruntime-web, vendored from npm (no CDN, nothing downloaded at run time)
DIR/_headers, vercel.json, .htaccess   the COOP/COEP headers of cross-origin isolation for Netlify / Cloudflare
                              Pages, Vercel and Apache; `--serve` serves DIR with them

`window.kitPredict(url)` returns a Promise of the JSON answer for the image at `url` (kit/core/task/base.py:
Task.answer, the same as the service's and kit.predict's); the picker and the drop zone call the same function.
`--int8` builds the page on the int8 twin of the graph (infer.py --int8 makes it) and prints its agreement with fp32.

Same pixels as the Python predictor: a canvas resize differs from Pillow's, so the page does no resizing. It
decodes the file at its own size (EXIF orientation applied, no colour management, as Pillow does) and feeds
uint8 [1, H, W, 3] to resize.onnx, the resize kit.core.images.load_rgb does: bilinear with antialiasing (ONNX
Resize, antialias=1, half-pixel centres), rounded back to 8-bit; then model.onnx, the exported graph.
tests/test_web.py checks a real headless Chromium against the Python predictor.
"""
from __future__ import annotations

import argparse
import functools
import http.server
import json
import logging
import shutil
import subprocess
from dataclasses import asdict
from pathlib import Path

from kit.core.atomic import atomic_dir, write_text
from kit.core.entry import PORT, Parser, nonempty
from kit.core.artifact import read_metadata
from kit.core.errors import KitError
from kit.core.paths import Outputs
from kit.runtime.predictor import Predictor

log = logging.getLogger(__name__)
ORT_WEB_VERSION = "1.30.0"
# per backend, the onnxruntime-web files the page loads (the page picks one at run time and loads only its files)
BACKENDS = {"wasm": ("ort.wasm.min.js", "ort-wasm-simd-threaded.wasm", "ort-wasm-simd-threaded.mjs"),
            "webgpu": ("ort.webgpu.min.js", "ort-wasm-simd-threaded.asyncify.wasm",
                       "ort-wasm-simd-threaded.asyncify.mjs")}
ORT_FILES = tuple(dict.fromkeys(f for files in BACKENDS.values() for f in files))
# cross-origin isolation (multi-threaded WebAssembly) on common static hosts: Netlify / Cloudflare Pages, Vercel,
# Apache; `python -m kit.web --serve` sends the same two headers
ISOLATION = {"Cross-Origin-Opener-Policy": "same-origin", "Cross-Origin-Embedder-Policy": "require-corp"}
HEADER_FILES = {
    "_headers": "/*\n" + "".join(f"  {k}: {v}\n" for k, v in ISOLATION.items()),
    "vercel.json": json.dumps({"headers": [{"source": "/(.*)", "headers": [{"key": k, "value": v}
                                                                       for k, v in ISOLATION.items()]}]}, indent=1),
    ".htaccess": "".join(f'Header set {k} "{v}"\n' for k, v in ISOLATION.items()),
}
NPM_CACHE = Path.home() / ".cache" / "nfnet-kit" / "npm"


def ort_web(cache: Path = NPM_CACHE) -> Path:
    """onnxruntime-web's dist folder, installed from the npm registry into `cache` on first use."""
    dist = cache / "node_modules" / "onnxruntime-web" / "dist"
    if all((dist / f).is_file() for f in ORT_FILES):
        return dist
    if not shutil.which("npm"):
        raise KitError("kit.deploy.web vendors onnxruntime-web from npm, but npm is not installed (apt install npm, or "
                       "nodejs from nodejs.org)")
    cache.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["npm", "install", "--prefix", str(cache), "--no-audit", "--no-fund",
                             f"onnxruntime-web@{ORT_WEB_VERSION}"], capture_output=True, text=True)
    if result.returncode or not all((dist / f).is_file() for f in ORT_FILES):
        raise KitError(f"npm install onnxruntime-web@{ORT_WEB_VERSION} failed: {result.stderr.strip()[-500:]}")
    return dist


def page_graphs(graph_path: Path, folder: Path) -> dict:
    """The page's two graphs: resize.onnx (uint8 [1, H, W, 3] at any size -> load_rgb's pixels at S, run on
    WebAssembly: onnxruntime-web's WebGPU Resize has no antialiasing) and model.onnx, the exported graph itself.
    Returns the graph's metadata."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    model = onnx.load(str(graph_path))
    props = {p.key: p.value for p in model.metadata_props}
    meta = asdict(read_metadata(props, graph_path))
    size, h = meta["img_size"], helper
    nodes = [
        h.make_node("Cast", ["image"], ["pixels"], to=TensorProto.FLOAT),
        h.make_node("Transpose", ["pixels"], ["nchw"], perm=[0, 3, 1, 2]),
        h.make_node("Resize", ["nchw", "", "", "sizes"], ["resized"], mode="linear", antialias=1,
                    coordinate_transformation_mode="half_pixel"),
        h.make_node("Round", ["resized"], ["rounded"]),
        h.make_node("Clip", ["rounded", "zero", "full"], ["clipped"]),
        h.make_node("Transpose", ["clipped"], ["nhwc"], perm=[0, 2, 3, 1]),
        h.make_node("Cast", ["nhwc"], ["images"], to=TensorProto.UINT8),
    ]
    inits = [numpy_helper.from_array(np.array([1, 3, size, size], dtype=np.int64), "sizes"),
             numpy_helper.from_array(np.array(0, dtype=np.float32), "zero"),
             numpy_helper.from_array(np.array(255, dtype=np.float32), "full")]
    graph = h.make_graph(nodes, "kit_resize", [h.make_tensor_value_info("image", TensorProto.UINT8, [1, "height", "width", 3])],
                         [h.make_tensor_value_info("images", TensorProto.UINT8, [1, size, size, 3])], inits)
    resize = h.make_model(graph, opset_imports=[h.make_opsetid("", 18)], ir_version=model.ir_version)
    onnx.checker.check_model(resize, full_check=True)
    onnx.save(resize, str(folder / "resize.onnx"))
    shutil.copy(graph_path, folder / "model.onnx")
    return meta


PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>
  body {{ font: 15px system-ui, sans-serif; margin: 2rem; max-width: 52rem; }}
  #drop {{ border: 2px dashed #888; border-radius: 8px; padding: 2.5rem; text-align: center; color: #555; }}
  #drop.over {{ background: #eef; }}
  .result {{ display: flex; gap: 1rem; align-items: center; margin: 1rem 0; }}
  .result img {{ width: 96px; height: 96px; object-fit: contain; image-rendering: pixelated; background: #f4f4f4; }}
  .result .name {{ color: #555; font-size: 13px; }}
  .result.error {{ color: #a00; }}
  table {{ border-collapse: collapse; }} td {{ padding: 0 .6rem 0 0; }}
</style>
</head>
<body>
<h1>{title}</h1>
<p id="status">Loading the model...</p>
<div id="drop">Drop images here, or <label><u>choose files</u>
  <input id="picker" type="file" accept="image/*" multiple hidden></label>. They never leave this computer.</div>
<div id="results"></div>
<script src="kit.js"></script>
</body>
</html>
"""

SCRIPT = r"""// The page's predictor: window.kitPredict(url) -> Promise of the JSON answer (the service's and kit.predict's).
(function () {
  const meta = %(meta)s;
  const files = %(files)s;
  const status = document.getElementById("status");

  function load(src) {
    return new Promise((resolve, reject) => {
      const script = document.createElement("script");
      script.src = src; script.onload = resolve; script.onerror = () => reject(new Error("cannot load " + src));
      document.head.appendChild(script);
    });
  }

  async function chooseBackend() {
    const asked = new URLSearchParams(location.search).get("backend");
    if (asked === "wasm" || asked === "webgpu") return asked;
    try {
      if (navigator.gpu && await navigator.gpu.requestAdapter()) return "webgpu";
    } catch (e) { /* no WebGPU here */ }
    return "wasm";
  }

  async function start() {
    let backend = await chooseBackend();
    await load("ort/" + files[backend][0]);
    ort.env.wasm.wasmPaths = new URL("ort/", document.baseURI).href;
    // threads need SharedArrayBuffer, which only a cross-origin isolated page has (the COOP/COEP headers)
    const threads = self.crossOriginIsolated ? Math.max(1, navigator.hardwareConcurrency || 1) : 1;
    ort.env.wasm.numThreads = threads;
    // the resize runs on WebAssembly (onnxruntime-web's WebGPU Resize has no antialiasing), the model where chosen
    const resize = await ort.InferenceSession.create("resize.onnx", { executionProviders: ["wasm"] });
    let model;
    try {
      model = await ort.InferenceSession.create("model.onnx", { executionProviders: [backend],
                                                                graphOptimizationLevel: "all" });
    } catch (e) {
      if (backend !== "webgpu") throw e;
      backend = "wasm";                      // WebGPU offered but failing: fall back, and say so
      model = await ort.InferenceSession.create("model.onnx", { executionProviders: ["wasm"] });
    }
    window.kitBackend = { name: backend, threads: backend === "wasm" ? threads : 0, isolated: !!self.crossOriginIsolated };
    return { resize, model };
  }
  const sessions = start();

  async function pixels(blob) {
    // decode at the file's own size, as Pillow does: EXIF orientation applied, no colour management
    const bitmap = await createImageBitmap(blob, { imageOrientation: "from-image", colorSpaceConversion: "none",
                                                  premultiplyAlpha: "none" });
    const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
    const context = canvas.getContext("2d", { willReadFrequently: true });
    context.drawImage(bitmap, 0, 0);
    const rgba = context.getImageData(0, 0, bitmap.width, bitmap.height).data;
    const rgb = new Uint8Array(bitmap.width * bitmap.height * 3);
    for (let i = 0, j = 0; i < rgba.length; i += 4, j += 3) {
      rgb[j] = rgba[i]; rgb[j + 1] = rgba[i + 1]; rgb[j + 2] = rgba[i + 2];
    }
    return new ort.Tensor("uint8", rgb, [1, bitmap.height, bitmap.width, 3]);
  }

  function formatG(v) {                      // Python's format(v, ".6g"): a regression's submission cell
    if (!isFinite(v)) return String(v);
    if (v === 0) return Object.is(v, -0) ? "-0" : "0";
    const [mantissa, exponent] = v.toExponential(5).split("e");
    const e = parseInt(exponent, 10);
    const strip = (s) => (s.includes(".") ? s.replace(/\.?0+$/, "") : s);
    if (e < -4 || e >= 6) return strip(mantissa) + "e" + (e < 0 ? "-" : "+") + String(Math.abs(e)).padStart(2, "0");
    return strip(v.toFixed(5 - e));
  }

  function decode(values) {                 // the answer's shape comes from the graph's metadata (kit.answer)
    const names = meta.classes, spec = meta.answer;
    if (spec.label === "value") return { label: formatG(values[0]), value: values[0] };
    const probabilities = {};                // most probable first, ties in output order (as Task.answer)
    values.map((v, i) => [v, i]).sort((a, b) => b[0] - a[0] || a[1] - b[1])
      .forEach(([v, i]) => { probabilities[names[i]] = v; });
    if (spec.label === "thresholds") {
      const thresholds = spec.thresholds;
      let tags = names.filter((name, i) => values[i] >= thresholds[i]);
      const least = spec.min_labels;
      if (tags.length < least) {
        tags = names.map((name, i) => [values[i], i, name]).sort((a, b) => b[0] - a[0] || a[1] - b[1])
          .slice(0, least).sort((a, b) => a[1] - b[1]).map((t) => t[2]);
      }
      return { label: tags.join(" "), probabilities };
    }
    let best = 0;
    values.forEach((v, i) => { if (v > values[best]) best = i; });
    return { label: names[best], probabilities };
  }

  async function predictBlob(blob) {
    const input = await pixels(blob);
    const { resize, model } = await sessions;
    const resized = await resize.run({ image: input });
    const output = await model.run({ images: resized.images });
    return decode(Array.from(output.probabilities.data));
  }

  window.kitPredict = async function (url) {
    const response = await fetch(url);
    if (!response.ok) throw new Error("cannot fetch " + url + ": " + response.status);
    return predictBlob(await response.blob());
  };

  function escape(text) {
    const span = document.createElement("span");
    span.textContent = String(text);
    return span.innerHTML;
  }

  function show(file) {
    const url = URL.createObjectURL(file);
    const div = document.createElement("div");
    div.className = "result";
    div.innerHTML = `<img src="${url}"><div><div class="name">${escape(file.name)}</div><i>predicting...</i></div>`;
    document.getElementById("results").prepend(div);
    const t0 = performance.now();
    predictBlob(file).then((result) => {
      const rows = Object.entries(result.probabilities || {}).slice(0, 5)
        .map(([name, p]) => `<tr><td>${escape(name)}</td><td>${p.toFixed(4)}</td></tr>`).join("");
      div.lastChild.innerHTML = `<div class="name">${escape(file.name)}</div><b>${escape(result.label)}</b> ` +
        `<small>(${(performance.now() - t0).toFixed(0)} ms)</small><table>${rows}</table>`;
    }).catch((e) => {                        // the error stays with its file; the next files go on
      div.classList.add("error");
      div.lastChild.innerHTML = `<div class="name">${escape(file.name)}</div>cannot read this image: ${escape(e.message)}`;
    });
  }

  const drop = document.getElementById("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    [...e.dataTransfer.files].forEach(show);
  });
  document.getElementById("picker").addEventListener("change", (e) => { [...e.target.files].forEach(show); });
  sessions.then(() => {
    window.kitReady = true;
    const b = window.kitBackend;
    status.textContent = `Ready: ${meta.model}, ${meta.classes.length} outputs (${meta.task}); runs in this browser on ` +
      (b.name === "webgpu" ? "WebGPU" : `WebAssembly, ${b.threads} thread${b.threads === 1 ? "" : "s"}` +
       (b.isolated ? "" : " (not cross-origin isolated: serve the folder with its COOP/COEP headers for more)")) + ".";
  }).catch((e) => { status.textContent = "Cannot load the model: " + e.message; window.kitError = e.message; });
})();
"""


def int8_twin(onnx: Path) -> Path:
    """The int8 graph of `onnx` (infer.py --int8 writes it beside the fp32 one), or `onnx` itself when it is one."""
    meta = Predictor(onnx, "cpu").meta
    if meta.int8:
        return onnx
    twin = onnx.with_name(onnx.stem + ".int8.onnx")
    if not twin.is_file():
        raise KitError(f"--int8: there is no {twin}; export it with python infer.py ... --int8 (it is calibrated on "
                       f"training images, which the page builder has not), or pass an int8 graph as --onnx")
    return twin


def make_page(onnx: Path, out: Path, title: str | None = None, int8: bool = False) -> dict:
    """Build the page under a temporary name and rename it to `out` at the end: a failure leaves nothing."""
    Outputs().reads(onnx).check("--out", out, "folder")
    Predictor(onnx, "cpu")                      # a file that is no kit graph is refused before anything is built
    graph = int8_twin(onnx) if int8 else onnx
    dist = ort_web()
    with atomic_dir(out) as tmp:
        (tmp / "ort").mkdir()
        for name in ORT_FILES:
            shutil.copy(dist / name, tmp / "ort" / name)
        meta = page_graphs(Path(graph), tmp)
        write_text(tmp / "kit-meta.json", json.dumps(meta, indent=1) + "\n")
        write_text(tmp / "kit.js", SCRIPT % {"meta": json.dumps(meta), "files": json.dumps(BACKENDS)})
        write_text(tmp / "index.html", PAGE.format(title=title or f"{meta.get('model', 'model')} in your browser"))
        for name, text in HEADER_FILES.items():
            write_text(tmp / name, text)
    model_mb = (out / "model.onnx").stat().st_size / 2**20
    per_backend = {b: model_mb + sum((out / "ort" / f).stat().st_size for f in files) / 2**20 + sum(
        (out / f).stat().st_size for f in ("index.html", "kit.js")) / 2**20 for b, files in BACKENDS.items()}
    log.info(f"web: {out}/index.html: the page downloads {per_backend['wasm']:.1f} MB on WebAssembly, "
             f"{per_backend['webgpu']:.1f} MB on WebGPU (model {model_mb:.1f} MB{', int8' if meta['int8'] else ''}). "
             f"Serve the folder over http with its COOP/COEP headers: python -m kit.web ... --serve (or a static "
             f"host: _headers, vercel.json, .htaccess are in it)")
    if meta["int8"]:
        agreement = meta.get("int8_agreement")
        log.info(f"web: the int8 graph agrees with fp32 on "
                 f"{'an unmeasured share' if agreement is None else f'{100 * agreement:.1f} %'} of the OOF images its "
                 f"export checked (the same submission cell)")
    return {"bytes": sum(p.stat().st_size for p in out.rglob("*") if p.is_file()), "mb": per_backend, "meta": meta}


class IsolatedHandler(http.server.SimpleHTTPRequestHandler):
    """Static files with the cross-origin isolation headers and the types onnxruntime-web needs."""
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, ".mjs": "text/javascript",
                      ".wasm": "application/wasm", ".onnx": "application/octet-stream"}

    def end_headers(self):
        for key, value in ISOLATION.items():
            self.send_header(key, value)
        super().end_headers()

    def log_message(self, format, *args):
        log.info(f"web: {self.address_string()} {format % args}")


def serve_page(folder: Path, host: str, port: int) -> None:
    try:
        server = http.server.ThreadingHTTPServer((host, port), functools.partial(IsolatedHandler, directory=str(folder)))
    except OSError as e:
        raise KitError(f"cannot serve on {host}:{port}: {e.strerror}; choose another --port") from None
    log.info(f"web: serving {folder} on http://{host}:{server.server_port}/ (cross-origin isolated; Ctrl-C stops)")
    try:
        server.serve_forever()
    finally:
        server.server_close()


def main() -> None:
    p = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--onnx", type=nonempty, required=True, help="a graph exported by the kit")
    p.add_argument("--out", type=nonempty, required=True, help="a new folder for the page")
    p.add_argument("--title")
    p.add_argument("--int8", action="store_true", help="build the page on the graph's int8 twin (infer.py --int8)")
    p.add_argument("--serve", action="store_true", help="then serve the folder with the COOP/COEP headers")
    p.add_argument("--host", type=nonempty, default="127.0.0.1")
    p.add_argument("--port", type=PORT, default=8000)
    args = p.parse_args()
    make_page(Path(args.onnx), Path(args.out), args.title, args.int8)
    if args.serve:
        serve_page(Path(args.out), args.host, args.port)
