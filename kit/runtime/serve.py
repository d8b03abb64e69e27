"""An HTTP service for an exported ensemble (Starlette on uvicorn):

  POST /predict    the image file's bytes as the body (or multipart/form-data with one file field)
                   -> {"label": ..., "probabilities": {output name: value}}   (regression: {"label": value})
  GET  /health     200 {"status": "ok"} once the model is loaded
  GET  /metadata   the graph's kit.* metadata

Requests arriving together are decoded in a thread pool and predicted as one batch: a batcher collects what
is waiting (up to --max-batch, waiting at most --max-wait-ms for company) and makes one onnxruntime call. A body
over --max-bytes is refused with 413, an undecodable image with 400 and the reason; neither stops the service.

    python -m kit.runtime.serve --onnx ensemble.onnx --host 127.0.0.1 --port 8000
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict

import numpy as np
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from kit.core.entry import PORT, Parser, nonempty, number
from kit.core.images import ImageError, load_rgb
from kit.runtime.predictor import Predictor

log = logging.getLogger(__name__)


class HTTPError(Exception):
    """A request the service refuses: the HTTP status and the message the client reads."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


class Batcher:
    """Gathers concurrent requests' images into one predictor call."""

    def __init__(self, predictor: Predictor, max_batch: int, max_wait: float):
        self.predictor, self.max_batch, self.max_wait = predictor, max_batch, max_wait
        self.queue: asyncio.Queue | None = None
        self.runner = ThreadPoolExecutor(1)              # onnxruntime uses every core itself; one call at a time
        self.batches = 0

    async def start(self) -> None:
        self.queue = asyncio.Queue()
        asyncio.get_running_loop().create_task(self._loop())

    async def predict(self, image: np.ndarray) -> np.ndarray:
        done = asyncio.get_running_loop().create_future()
        await self.queue.put((image, done))
        return await done

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
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
            batch = np.stack([image for image, _ in items])
            try:
                outputs = await loop.run_in_executor(self.runner, self.predictor.predict_images, batch)
            except Exception as e:  # noqa: BLE001 - reported to every waiting request, the service goes on
                for _, done in items:
                    done.set_exception(e)
                continue
            self.batches += 1
            for (_, done), row in zip(items, outputs):
                done.set_result(row)


def create_app(onnx_path: str, provider: str = "auto", max_batch: int = 32, max_wait_ms: float = 5.0,
               max_bytes: int = 20 * 2**20, decode_threads: int = 4) -> Starlette:
    predictor = Predictor(onnx_path, provider)
    batcher = Batcher(predictor, max_batch, max_wait_ms / 1000)
    decoder = ThreadPoolExecutor(decode_threads)
    task, size = predictor.task, predictor.meta.img_size

    async def body_of(request: Request) -> bytes:
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > max_bytes:
            raise HTTPError(413, f"the image is {int(length)} bytes; this service accepts at most {max_bytes}")
        data = bytearray()
        async for chunk in request.stream():
            data += chunk
            if len(data) > max_bytes:
                raise HTTPError(413, f"the body is over {max_bytes} bytes, the most this service accepts")
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            form = await Request(request.scope, _replay(bytes(data))).form()
            files = [v for v in form.values() if hasattr(v, "read")]
            if len(files) != 1:
                raise HTTPError(400, f"send exactly one file in the multipart form (got {len(files)})")
            return await files[0].read()
        return bytes(data)

    async def predict(request: Request) -> JSONResponse:
        try:
            data = await body_of(request)
            if not data:
                raise HTTPError(400, "the request has no body; POST the image file's bytes")
            image = await asyncio.get_running_loop().run_in_executor(decoder, load_rgb, io.BytesIO(data), size)
        except HTTPError as e:
            return JSONResponse({"error": e.message}, status_code=e.status)
        except ImageError as e:
            return JSONResponse({"error": f"cannot decode the uploaded image ({e.reason})"}, status_code=400)
        except ClientDisconnect:
            log.info(f"serve: a client disconnected during its upload ({request.client.host if request.client else '?'})")
            return JSONResponse({"error": "the client disconnected"}, status_code=400)
        return JSONResponse(task.answer(await batcher.predict(image)))

    async def health(_: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "providers": predictor.providers, "batches": batcher.batches})

    async def metadata(_: Request) -> JSONResponse:
        return JSONResponse(asdict(predictor.meta))

    @contextlib.asynccontextmanager
    async def lifespan(_):
        await batcher.start()
        yield

    app = Starlette(routes=[Route("/predict", predict, methods=["POST"]), Route("/health", health),
                            Route("/metadata", metadata)], lifespan=lifespan)
    return quiet_shutdown(app)


def quiet_shutdown(app):
    """A request still running when the graceful shutdown times out (a client that never finishes its upload) is
    cancelled; say so in one line instead of uvicorn's traceback."""
    async def wrapped(scope, receive, send):
        try:
            await app(scope, receive, send)
        except asyncio.CancelledError:
            if scope["type"] == "http":
                log.info(f"serve: a {scope['method']} {scope['path']} request was cut off by the shutdown")
    return wrapped


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


def main() -> None:
    p = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--onnx", type=nonempty, required=True, help="an ensemble exported by the kit")
    p.add_argument("--host", type=nonempty, default="127.0.0.1")
    p.add_argument("--port", type=PORT, default=8000)
    p.add_argument("--provider", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--max-batch", type=number(1, 4096, int), default=32, help="most images in one onnxruntime call")
    p.add_argument("--max-wait-ms", type=number(0, 10_000), default=5.0,
                   help="how long a request waits for others to batch with (at most 10 s: never forever)")
    p.add_argument("--max-bytes", type=number(1, 2**31, int), default=20 * 2**20, help="largest accepted request body")
    args = p.parse_args()
    import uvicorn
    app = create_app(args.onnx, args.provider, args.max_batch, args.max_wait_ms, args.max_bytes)
    log.info(f"serve: {args.onnx} on http://{args.host}:{args.port} (POST /predict, GET /health, GET /metadata)")
    # a client that never finishes its upload cannot hold the process: SIGTERM stops it within 5 s
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", timeout_graceful_shutdown=5)

