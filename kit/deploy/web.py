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

The page's template is two real files shipped as package data, kit/deploy/page/index.html and kit.js; the build
fills in the title (escaped), the graph's metadata and the backends' file lists.

`window.kitPredict(url)` returns a Promise of the JSON answer for the image at `url` (kit/core/task/base.py:
Task.answer, the same as the service's and kit.predict's); the picker and the drop zone call the same function.
`--int8` builds the page on the int8 twin of the graph (infer.py --int8 makes it) and prints its agreement with fp32.

Same pixels as the Python predictor: a canvas resize differs from Pillow's, so the page does no resizing. It
decodes the file at its own size (EXIF orientation applied, no colour management, as Pillow does) and feeds
uint8 [1, H, W, 3] to resize.onnx, the resize kit.core.images.load_rgb does: bilinear with antialiasing (ONNX
Resize, antialias=1, half-pixel centres), rounded back to 8-bit; then model.onnx, the exported graph.
tests/deploy/test_deploy.py checks a real headless Chromium against the Python predictor.
"""
from __future__ import annotations

import functools
import http.server
import html
import json
from importlib import resources
import logging
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

from kit.core.atomic import atomic_dir, write_text
from kit.core.entry import PORT, option, parse_request
from kit.core.artifact import model_metadata
from kit.core.errors import KitError
from kit.core.paths import Outputs
from kit.deploy.twins import twin_of
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
    meta = asdict(model_metadata(model, graph_path))
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







def page_file(name: str) -> str:
    """A file of the page's template (kit/deploy/page/: index.html, kit.js), shipped as package data."""
    return (resources.files("kit.deploy") / "page" / name).read_text(encoding="utf-8")


def make_page(onnx: Path, out: Path, title: str | None = None, int8: bool = False) -> dict:
    """Build the page under a temporary name and rename it to `out` at the end: a failure leaves nothing."""
    Outputs().reads(onnx).check("--out", out, "folder")
    given = Predictor(onnx, "cpu").meta         # a file that is no kit graph is refused before anything is built
    graph = twin_of(onnx, "int8", given) if int8 else onnx
    dist = ort_web()
    with atomic_dir(out) as tmp:
        (tmp / "ort").mkdir()
        for name in ORT_FILES:
            shutil.copy(dist / name, tmp / "ort" / name)
        meta = page_graphs(Path(graph), tmp)
        write_text(tmp / "kit-meta.json", json.dumps(meta, indent=1) + "\n")
        write_text(tmp / "kit.js", page_file("kit.js").replace("/*kit:meta*/null", json.dumps(meta))
                   .replace("/*kit:files*/null", json.dumps(BACKENDS)))
        # everything from a file or the command line is escaped: a graph's metadata is not trusted markup
        write_text(tmp / "index.html", page_file("index.html").replace(
            "<!--kit:title-->", html.escape(title or f"{meta.get('model', 'model')} in your browser")))
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


@dataclass
class PageRequest:
    """kit.web's flags, as one value (kit.core.entry.add_flags makes the flags from it)."""
    onnx: str = option(None, "a graph exported by the kit", required=True)
    out: str = option(None, "a new folder for the page", required=True)
    title: Optional[str] = option(None, "the page's title (default: 'MODEL in your browser')")
    int8: bool = option(False, "build the page on the graph's int8 twin (infer.py --int8)")
    serve: bool = option(False, "then serve the folder with the COOP/COEP headers")
    host: str = option("127.0.0.1", "the address to serve on")
    port: int = option(8000, "the port to serve on", parse=PORT)


def main() -> None:
    r = parse_request(PageRequest, description=__doc__)
    make_page(Path(r.onnx), Path(r.out), r.title, r.int8)
    if r.serve:
        serve_page(Path(r.out), r.host, r.port)
