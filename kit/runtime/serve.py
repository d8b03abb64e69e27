"""An HTTP service for an exported graph (FastAPI on uvicorn):

  POST /predict        one image: the file's bytes as the body, or multipart/form-data with one file
                       -> the JSON answer (kit/core/task/base.py: Task.answer; the same as the page and kit.predict)
  POST /predict/batch  multipart/form-data with several files -> a list of answers, in the order sent
  GET  /health         {"status": "ok", "providers", "batches"} once the model is loaded (never needs the API key)
  GET  /metadata       the graph's kit.* metadata
  GET  /metrics        Prometheus text format (prometheus-client): requests by route and status, latency
                       histogram, onnxruntime batch sizes
  GET  /openapi.json   the API's OpenAPI description; GET /docs: its interactive page

Requests arriving together are decoded in a thread pool and predicted as one batch: a batcher collects what is
waiting (up to --max-batch, waiting at most --max-wait-ms for company) and makes one onnxruntime call. A body over
--max-bytes is refused with 413, an undecodable image with 400 and the reason, a missing or wrong API key with 401;
none of them stops the service. One access-log line per request. `--api-key KEY` (or KIT_API_KEY) makes every route
but /health require `Authorization: Bearer KEY`; `--cors-origin ORIGIN` (repeatable) lets pages on ORIGIN call it.

    python -m kit.serve --onnx ensemble.onnx --host 127.0.0.1 --port 8000
"""
from __future__ import annotations

import asyncio
import contextlib
import hmac
import io
import logging
import os
import time
from pathlib import Path
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Optional, Union

import numpy as np
from fastapi import FastAPI
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from kit.core.entry import PORT, number, option, parse_request
from kit.core.errors import KitError
from kit.core.providers import PROVIDER_CHOICES
from kit.core.images import ImageError, load_rgb
from kit.runtime.predictor import Predictor

log = logging.getLogger(__name__)
OPEN_ROUTES = ("/health",)           # answered without the API key: a load balancer's probe has none
MAX_FILES = 1000                     # files in one /predict/batch form (Starlette's form limit, said in the error)


class HTTPError(Exception):
    """A request the service refuses: the HTTP status and the message the client reads."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


class ClassAnswer(BaseModel):
    """A classification's answer: the submission cell, and each output's probability, most probable first."""
    label: str
    probabilities: dict[str, float]


class ValueAnswer(BaseModel):
    """A regression's answer: the submission cell and the number."""
    label: str
    value: float


class Error(BaseModel):
    error: str


@dataclass
class ServeSettings:
    """The service's flags, as one value (kit.core.entry.add_flags makes the flags from it)."""
    onnx: str = option(None, "a graph exported by the kit", required=True)
    host: str = option("127.0.0.1", "the address to listen on")
    port: int = option(8000, "the port to listen on", parse=PORT)
    provider: str = option("auto", "onnxruntime's execution provider", choices=PROVIDER_CHOICES)
    max_batch: int = option(32, "most images in one onnxruntime call", parse=number(1, 4096, int))
    max_wait_ms: float = option(5.0, "how long a request waits for others to batch with (at most 10 s: never forever)",
                                parse=number(0, 10_000))
    max_bytes: int = option(20 * 2**20, "largest accepted request body", parse=number(1, 2**31, int))
    max_pixels: Optional[int] = option(None, "largest image, in pixels, checked before decoding (default: 1000 x the "
                                             "model's input, at least 4 Mpx)", parse=number(1, 2**40, int))
    max_request_pixels: Optional[int] = option(None, "most pixels of all images in one request (default 4 x "
                                                     "--max-pixels)", parse=number(1, 2**42, int))
    api_key: Optional[str] = option(None, "require Authorization: Bearer KEY on every route but /health (default: "
                                          "$KIT_API_KEY)")
    cors_origins: list[str] = option([], "let pages served from ORIGIN call the API (repeatable), e.g. "
                                         "https://example.com", flag="cors-origin", metavar="ORIGIN")
    decode_threads: int = 4


class Batcher:
    """Gathers concurrent requests' images into one predictor call."""

    def __init__(self, predictor: Predictor, max_batch: int, max_wait: float, sizes=None):
        self.predictor, self.max_batch, self.max_wait = predictor, max_batch, max_wait
        self.queue: asyncio.Queue | None = None
        self.runner = ThreadPoolExecutor(1)              # onnxruntime uses every core itself; one call at a time
        self.batches = 0
        self.sizes = sizes                               # a Prometheus histogram of batch sizes, or None

    async def start(self) -> None:
        self.queue = asyncio.Queue()
        asyncio.get_running_loop().create_task(self._loop())

    async def predict(self, image: np.ndarray) -> np.ndarray:
        done = asyncio.get_running_loop().create_future()
        await self.queue.put((image, done))
        return await done

    async def _gather(self) -> list:
        loop = asyncio.get_running_loop()
        items = [await self.queue.get()]
        deadline = loop.time() + self.max_wait
        while len(items) < self.max_batch:
            timeout = deadline - loop.time()
            if timeout <= 0 and self.queue.empty():
                break
            try:
                items.append(await asyncio.wait_for(self.queue.get(), max(timeout, 0)))
            except asyncio.TimeoutError:
                break
        return items

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            items = await self._gather()
            batch = np.stack([image for image, _ in items])
            try:
                outputs = await loop.run_in_executor(self.runner, self.predictor.predict_images, batch)
            except Exception as e:  # noqa: BLE001 - reported to every waiting request, the service goes on
                for _, done in items:
                    done.set_exception(e)
                continue
            self.batches += 1
            if self.sizes is not None:
                self.sizes.observe(len(items))
            for (_, done), row in zip(items, outputs):
                done.set_result(row)


def metrics():
    """The service's Prometheus metrics, in a registry of its own (several apps in one process stay apart)."""
    from prometheus_client import CollectorRegistry, Counter, Histogram
    registry = CollectorRegistry()
    return registry, {
        "requests": Counter("kit_requests", "HTTP requests by route and status", ["route", "status"], registry=registry),
        "latency": Histogram("kit_request_seconds", "request latency, seconds, by route", ["route"], registry=registry,
                             buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)),
        "batch": Histogram("kit_batch_size", "images per onnxruntime call", registry=registry,
                           buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256)),
    }


def _replay(data: bytes):
    """An ASGI receive callable that hands Starlette's form parser the body already read."""
    sent = False

    async def receive():
        nonlocal sent
        if sent:
            return {"type": "http.request", "body": b"", "more_body": False}
        sent = True
        return {"type": "http.request", "body": data, "more_body": False}
    return receive


async def read_body(request: Request, max_bytes: int) -> bytes:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > max_bytes:
        raise HTTPError(413, f"the body is {int(length)} bytes; this service accepts at most {max_bytes}")
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > max_bytes:
            raise HTTPError(413, f"the body is over {max_bytes} bytes, the most this service accepts")
    return bytes(data)


async def uploaded_files(request: Request, data: bytes) -> list[tuple[str, bytes]]:
    """(file name, bytes) of each file of a multipart/form-data body, in the order sent."""
    form = await Request(request.scope, _replay(data)).form(max_files=MAX_FILES, max_fields=MAX_FILES)
    return [(value.filename or f"file {i + 1}", await value.read())
            for i, (_, value) in enumerate(form.multi_items()) if hasattr(value, "read")]


IMAGE_BODY = {"requestBody": {"required": True, "content": {
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    "image/*": {"schema": {"type": "string", "format": "binary"}},
    "multipart/form-data": {"schema": {"type": "object", "properties": {"file": {"type": "string", "format": "binary"}},
                                       "required": ["file"]}}}}}
BATCH_BODY = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "properties": {"files": {"type": "array", "items": {"type": "string", "format": "binary"}}}}}}}}
ERRORS = {400: {"model": Error}, 401: {"model": Error}, 413: {"model": Error}}


def pixel_limit(img_size: int) -> int:
    """The default largest image: 1,000 times the model's input area (50 Mpx at 224 px), at least 4 Mpx. An image
    this much larger than what the model sees costs decoding memory and time for nothing (a 9000x9000 PNG of 630 KB
    decodes to 243 MB of RGB)."""
    return max(4_000_000, 1000 * img_size * img_size)


def pixels(data: bytes) -> int:
    """An image's pixel count from its header alone (nothing decoded yet)."""
    from PIL import Image
    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.width * im.height
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise HTTPError(400, f"cannot decode the uploaded image ({type(e).__name__})") from None


def create_app(settings: ServeSettings) -> FastAPI:
    predictor = Predictor(settings.onnx, settings.provider)
    registry, counters = metrics()
    batcher = Batcher(predictor, settings.max_batch, settings.max_wait_ms / 1000, counters["batch"])
    decoder = ThreadPoolExecutor(settings.decode_threads)
    size = predictor.meta.img_size
    check_pixels = pixel_check(size, settings.max_pixels or pixel_limit(size), settings.max_request_pixels)

    async def answer(data: bytes) -> dict:
        if not data:
            raise HTTPError(400, "an upload is empty; POST the image file's bytes")
        try:
            image = await asyncio.get_running_loop().run_in_executor(decoder, load_rgb, io.BytesIO(data), size)
        except ImageError as e:
            raise HTTPError(400, f"cannot decode the uploaded image ({e.reason})") from None
        return predictor.answer(await batcher.predict(image))

    @contextlib.asynccontextmanager
    async def lifespan(_):
        await batcher.start()
        yield

    app = FastAPI(title=f"{predictor.meta.model} ({predictor.meta.task})", lifespan=lifespan, docs_url=None,
                  redoc_url=None, description=f"Predictions of {settings.onnx}: {len(predictor.task.names)} outputs, "
                                              f"{predictor.meta.img_size}px. The answer is the same JSON as the kit's "
                                              f"page and its predict command.")
    offline_docs(app)

    @app.post("/predict", response_model=Union[ClassAnswer, ValueAnswer], responses=ERRORS, openapi_extra=IMAGE_BODY)
    async def predict(request: Request):
        """One image: its bytes as the body, or a multipart form with one file."""
        data = await read_body(request, settings.max_bytes)
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            files = await uploaded_files(request, data)
            if len(files) != 1:
                raise HTTPError(400, f"send exactly one file in the multipart form (got {len(files)}); several go to "
                                     f"/predict/batch")
            data = files[0][1]
        if data:
            check_pixels([("", data)])
        return JSONResponse(await answer(data))

    @app.post("/predict/batch", response_model=list[Union[ClassAnswer, ValueAnswer]], responses=ERRORS,
              openapi_extra=BATCH_BODY)
    async def predict_batch(request: Request):
        """Several images in one multipart form: their answers, in the order sent."""
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise HTTPError(400, "send the images as a multipart/form-data form, one file field each")
        files = await uploaded_files(request, await read_body(request, settings.max_bytes))
        if not files:
            raise HTTPError(400, "the form holds no file")
        check_pixels([(name, data) for name, data in files if data])

        async def named(i: int, name: str, data: bytes) -> dict:
            try:
                return await answer(data)
            except HTTPError as e:                  # which of the files it was
                raise HTTPError(e.status, f"file {i + 1} of {len(files)} ({name}): {e.message}") from None
        return JSONResponse(list(await asyncio.gather(*(named(i, n, d) for i, (n, d) in enumerate(files)))))

    @app.get("/health")
    async def health():
        return {"status": "ok", "providers": predictor.providers, "batches": batcher.batches}

    @app.get("/metadata")
    async def metadata():
        return public_metadata(predictor.meta)

    @app.get("/metrics", include_in_schema=False)
    async def prometheus():
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    one_error_shape(app)
    if settings.api_key:
        app.openapi = bearer_openapi(app)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])
    return guarded(app, settings.api_key, counters, settings.cors_origins)


def offline_docs(app: FastAPI) -> None:
    """GET /docs: Swagger UI from the files the swagger-ui-bundle package installs (the serve extra), served under
    /docs-assets/, so the page works on a machine without internet (FastAPI's own /docs loads them from a CDN)."""
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.staticfiles import StaticFiles
    try:
        from swagger_ui_bundle import swagger_ui_path
    except ImportError:                      # without the package: FastAPI's page, its assets from the CDN
        swagger_ui_path = None
    if swagger_ui_path:
        app.mount("/docs-assets", StaticFiles(directory=swagger_ui_path), name="docs-assets")
    assets = {"swagger_js_url": "/docs-assets/swagger-ui-bundle.js", "swagger_css_url": "/docs-assets/swagger-ui.css",
              "swagger_favicon_url": "/docs-assets/favicon-32x32.png"} if swagger_ui_path else {}

    @app.get("/docs", include_in_schema=False)
    async def docs():
        return get_swagger_ui_html(openapi_url=app.openapi_url, title=f"{app.title} - docs", **assets)


def public_metadata(meta) -> dict:
    """The graph's metadata, its members' run dirs by name only: a client learns nothing of the server's disk."""
    out = asdict(meta)
    out["members"] = [{**m, "run": Path(m["run"]).name} if "run" in m else m for m in out.get("members", [])]
    return out


def pixel_check(size: int, max_pixels: int, max_request: Optional[int]):
    """The check run before any decoding: each image within max_pixels, the request's images together within
    max_request (default 4 images' worth)."""
    max_request = max_request or 4 * max_pixels

    def check(files: list[tuple[str, bytes]]) -> None:
        """files: (name, bytes); a batch's refusal names the file, as its decode errors do."""
        counts = []
        for i, (name, data) in enumerate(files):
            where = f"file {i + 1} of {len(files)} ({name}): " if len(files) > 1 else ""
            try:
                counts.append(pixels(data))
            except HTTPError as e:
                raise HTTPError(e.status, where + e.message) from None
            if counts[-1] > max_pixels:
                raise HTTPError(413, f"{where}image {i + 1} has {counts[-1]:,} pixels; this service decodes at most "
                                     f"{max_pixels:,} (--max-pixels): resize it first (the model sees {size}x{size})")
        if sum(counts) > max_request:
            raise HTTPError(413, f"the request's images have {sum(counts):,} pixels together; at most {max_request:,} "
                                 f"(--max-request-pixels): send fewer per request")
    return check


def one_error_shape(app: FastAPI) -> None:
    """Every refusal as {"error": ...}: the service's own, Starlette's (a malformed multipart body, more than
    MAX_FILES files, an unknown route) and a client gone mid-upload."""
    @app.exception_handler(HTTPError)
    async def refused(_: Request, e: HTTPError):
        return JSONResponse({"error": e.message}, status_code=e.status)

    @app.exception_handler(StarletteHTTPException)
    async def framework_refused(_: Request, e: StarletteHTTPException):
        return JSONResponse({"error": str(e.detail)}, status_code=e.status_code, headers=getattr(e, "headers", None))

    @app.exception_handler(ClientDisconnect)
    async def disconnected(request: Request, _):
        log.info(f"serve: a client disconnected during its upload ({request.client.host if request.client else '?'})")
        return JSONResponse({"error": "the client disconnected"}, status_code=400)


def bearer_openapi(app: FastAPI):
    """The OpenAPI document with the API key as an HTTP bearer scheme on every route but /health: /docs then has an
    Authorize button."""
    def schema() -> dict:
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi
            doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            doc.setdefault("components", {})["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
            for path, ops in doc.get("paths", {}).items():
                for op in ops.values():
                    op["security"] = [] if path in OPEN_ROUTES else [{"bearer": []}]
            app.openapi_schema = doc
        return app.openapi_schema
    return schema


def guarded(app, api_key: Optional[str], counters: dict, cors_origins=()):
    """The app behind the API key check, the access log, the request metrics, and a quiet shutdown: a request
    still running when the graceful shutdown times out (a client that never finishes its upload) is cancelled and
    said in one line, not uvicorn's traceback."""
    expected = f"Bearer {api_key}".encode() if api_key else None

    async def wrapped(scope, receive, send):
        if scope["type"] != "http":
            return await app(scope, receive, send)
        t0, status = time.perf_counter(), [0]
        route = scope["path"] if scope["path"] in ("/predict", "/predict/batch", "/health", "/metadata", "/metrics",
                                                   "/docs", "/openapi.json") else "other"

        async def recorded(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)
        try:
            headers = dict(scope["headers"])
            if expected and scope["path"] not in OPEN_ROUTES and scope["method"] != "OPTIONS" and \
                    not hmac.compare_digest(headers.get(b"authorization", b""), expected):
                # a page on an allowed origin must be able to read the refusal: the CORS headers the app would add
                origin = headers.get(b"origin", b"").decode("latin-1")
                cors = {"Access-Control-Allow-Origin": origin, "Vary": "Origin"} if origin in cors_origins else {}
                await JSONResponse({"error": "missing or wrong API key: send Authorization: Bearer KEY"},
                                   status_code=401, headers={"WWW-Authenticate": "Bearer", **cors})(
                    scope, receive, recorded)
            else:
                await app(scope, receive, recorded)
        except asyncio.CancelledError:
            log.info(f"serve: a {scope['method']} {scope['path']} request was cut off by the shutdown")
            return
        seconds = time.perf_counter() - t0
        counters["requests"].labels(route, str(status[0])).inc()
        counters["latency"].labels(route).observe(seconds)
        client = scope.get("client") or ("?", 0)
        log.info(f'{client[0]} "{scope["method"]} {scope["path"]}" {status[0]} {1000 * seconds:.1f}ms')
    return wrapped


def main() -> None:
    settings = parse_request(ServeSettings, description=__doc__)
    if settings.api_key is None:
        settings.api_key = os.environ.get("KIT_API_KEY") or None
    serve(settings)


def serve(settings: ServeSettings) -> None:
    host, port = settings.host, settings.port
    import uvicorn
    app = create_app(settings)
    log.info(f"serve: {settings.onnx} on http://{host}:{port} (POST /predict, POST /predict/batch, GET /health, "
             f"/metadata, /metrics, /docs){'; API key required' if settings.api_key else ''}"
             f"{'; CORS for ' + ', '.join(settings.cors_origins) if settings.cors_origins else ''}")
    try:
        # a client that never finishes its upload cannot hold the process: SIGTERM stops it within 5 s
        uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=5)
    except OSError as e:
        raise KitError(f"cannot serve on {host}:{port}: {e.strerror}; choose another --port or --host") from None
