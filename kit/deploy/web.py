"""A static web page that classifies images in the browser with onnxruntime-web: nothing leaves the machine.

    python -m kit.deploy.web --onnx ensemble.onnx --out DIR        # then serve DIR over http and open DIR/index.html

DIR/index.html, kit.js        the page: drop images on it, see the top classes and probabilities
DIR/model.onnx                the graph with the resize moved inside it (below)
DIR/kit-meta.json             the graph's kit.* metadata (classes, task, thresholds)
DIR/ort/                      onnxruntime-web, vendored from npm (no CDN, nothing downloaded at run time)

`window.kitPredict(url)` returns a Promise of {"label": ..., "probabilities": {class: probability}} for the image
at `url`; the drop handler calls the same function.

Same pixels as the Python predictor: a canvas resize differs from Pillow's, so the page does no resizing. It
decodes the file at its own size (EXIF orientation applied, no colour management, as Pillow does) and feeds
uint8 [1, H, W, 3] to model.onnx, which starts with the resize kit.core.images.load_rgb does: bilinear with
antialiasing (ONNX Resize, antialias=1, half-pixel centres), rounded back to 8-bit, then the exported graph.
tests/test_web.py checks a real headless Chromium against the Python predictor.
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
from dataclasses import asdict
from pathlib import Path

from kit.core.atomic import atomic_dir, write_text
from kit.core.entry import Parser, nonempty
from kit.core.artifact import read_metadata
from kit.core.errors import KitError
from kit.core.paths import Outputs
from kit.runtime.predictor import Predictor

log = logging.getLogger(__name__)
ORT_WEB_VERSION = "1.30.0"
ORT_FILES = ("ort.wasm.min.js", "ort-wasm-simd-threaded.wasm", "ort-wasm-simd-threaded.mjs")
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


def with_resize(graph_path: Path, out: Path) -> dict:
    """The exported graph behind a resize stage: uint8 [1, H, W, 3] at any size -> load_rgb's pixels at S."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    import numpy as np
    model = onnx.load(str(graph_path))
    props = {p.key: p.value for p in model.metadata_props}
    size = json.loads(props["kit.img_size"])
    h = helper
    nodes = [
        h.make_node("Cast", ["image"], ["kitweb_pixels"], to=TensorProto.FLOAT),
        h.make_node("Transpose", ["kitweb_pixels"], ["kitweb_nchw"], perm=[0, 3, 1, 2]),
        h.make_node("Resize", ["kitweb_nchw", "", "", "kitweb_resize_sizes"], ["kitweb_resized"], mode="linear", antialias=1,
                    coordinate_transformation_mode="half_pixel"),
        h.make_node("Round", ["kitweb_resized"], ["kitweb_rounded"]),
        h.make_node("Clip", ["kitweb_rounded", "kitweb_zero", "kitweb_full"], ["kitweb_clipped"]),
        h.make_node("Transpose", ["kitweb_clipped"], ["kitweb_nhwc"], perm=[0, 2, 3, 1]),
        h.make_node("Cast", ["kitweb_nhwc"], ["kitweb_pre_images"], to=TensorProto.UINT8),
    ]
    inits = [numpy_helper.from_array(np.array([1, 3, size, size], dtype=np.int64), "kitweb_resize_sizes"),
             numpy_helper.from_array(np.array(0, dtype=np.float32), "kitweb_zero"),
             numpy_helper.from_array(np.array(255, dtype=np.float32), "kitweb_full")]
    pre = h.make_graph(nodes, "resize", [h.make_tensor_value_info("image", TensorProto.UINT8, [1, "height", "width", 3])],
                       [h.make_tensor_value_info("kitweb_pre_images", TensorProto.UINT8, [1, size, size, 3])], inits)
    pre_model = h.make_model(pre, opset_imports=list(model.opset_import), ir_version=model.ir_version)
    merged = onnx.compose.merge_models(pre_model, model, io_map=[("kitweb_pre_images", "images")])
    del merged.metadata_props[:]
    for key, value in props.items():
        merged.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(merged, full_check=True)
    onnx.save(merged, str(out))
    return asdict(read_metadata(props, graph_path))


PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>
  body {{ font: 15px system-ui, sans-serif; margin: 2rem; max-width: 48rem; }}
  #drop {{ border: 2px dashed #888; border-radius: 8px; padding: 3rem; text-align: center; color: #555; }}
  #drop.over {{ background: #eef; }}
  .result {{ display: flex; gap: 1rem; align-items: center; margin: 1rem 0; }}
  .result img {{ width: 96px; height: 96px; object-fit: contain; image-rendering: pixelated; background: #f4f4f4; }}
  table {{ border-collapse: collapse; }} td {{ padding: 0 .6rem 0 0; }}
</style>
</head>
<body>
<h1>{title}</h1>
<p id="status">Loading the model...</p>
<div id="drop">Drop images here (they never leave this computer)</div>
<div id="results"></div>
<script src="ort/ort.wasm.min.js"></script>
<script src="kit.js"></script>
</body>
</html>
"""

SCRIPT = r"""// The page's predictor: window.kitPredict(url) -> Promise<{label, probabilities}>.
(function () {
  const meta = %(meta)s;
  ort.env.wasm.wasmPaths = new URL("ort/", document.baseURI).href;
  ort.env.wasm.numThreads = 1;               // no cross-origin isolation on a plain static server
  const session = ort.InferenceSession.create("model.onnx", { executionProviders: ["wasm"] });

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

  window.kitPredict = async function (url) {
    const response = await fetch(url);
    if (!response.ok) throw new Error("cannot fetch " + url + ": " + response.status);
    const input = await pixels(await response.blob());
    const output = await (await session).run({ image: input });
    return decode(Array.from(output.probabilities.data));
  };

  function show(file) {
    const url = URL.createObjectURL(file);
    const t0 = performance.now();
    window.kitPredict(url).then((result) => {
      const rows = Object.entries(result.probabilities || {}).sort((a, b) => b[1] - a[1]).slice(0, 5)
        .map(([name, p]) => `<tr><td>${name}</td><td>${p.toFixed(4)}</td></tr>`).join("");
      const div = document.createElement("div");
      div.className = "result";
      div.innerHTML = `<img src="${url}"><div><b>${result.label}</b> <small>(${(performance.now() - t0).toFixed(0)} ms)</small>` +
        `<table>${rows}</table></div>`;
      document.getElementById("results").prepend(div);
    }).catch((e) => { document.getElementById("status").textContent = "Error: " + e.message; });
  }

  const drop = document.getElementById("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    [...e.dataTransfer.files].forEach(show);
  });
  session.then(() => {
    window.kitReady = true;
    document.getElementById("status").textContent =
      `Ready: ${meta.model}, ${meta.classes.length} outputs (${meta.task}); runs in this browser.`;
  }).catch((e) => { document.getElementById("status").textContent = "Cannot load the model: " + e.message; });
})();
"""


def make_page(onnx: Path, out: Path, title: str | None = None) -> dict:
    """Build the page under a temporary name and rename it to `out` at the end: a failure leaves nothing."""
    Outputs().reads(onnx).check("--out", out, "folder")
    Predictor(onnx, "cpu")                      # a file that is no kit graph is refused before anything is built
    dist = ort_web()
    with atomic_dir(out) as tmp:
        (tmp / "ort").mkdir()
        for name in ORT_FILES:
            shutil.copy(dist / name, tmp / "ort" / name)
        meta = with_resize(Path(onnx), tmp / "model.onnx")
        write_text(tmp / "kit-meta.json", json.dumps(meta, indent=1) + "\n")
        write_text(tmp / "kit.js", SCRIPT % {"meta": json.dumps(meta)})
        write_text(tmp / "index.html", PAGE.format(title=title or f"{meta.get('model', 'model')} in your browser"))
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    log.info(f"web: {out}/index.html ({size / 2**20:.1f} MB to download: model "
             f"{(out / 'model.onnx').stat().st_size / 2**20:.1f} MB, onnxruntime-web "
             f"{sum((out / 'ort' / f).stat().st_size for f in ORT_FILES) / 2**20:.1f} MB). Serve the folder over http, "
             f"e.g. python -m http.server --directory {out}")
    return {"bytes": size, "meta": meta}


def main() -> None:
    p = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--onnx", type=nonempty, required=True, help="an ensemble exported by the kit")
    p.add_argument("--out", type=nonempty, required=True, help="a new folder for the page")
    p.add_argument("--title")
    args = p.parse_args()
    make_page(Path(args.onnx), Path(args.out), args.title)
