"""The HTTP service, run the way it runs: `python -m kit.serve` in its own process, requests over loopback."""
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from conftest import request, service
from kit.runtime.predictor import Predictor


@pytest.fixture(scope="module")
def server(onnx_file):
    with service(onnx_file, "--max-wait-ms", "50", "--max-bytes", "200000") as port:
        yield port


def test_health_and_metadata(server):
    status, body = request(server, "GET", "/health")
    assert status == 200 and body["status"] == "ok" and body["providers"][0] == "CPUExecutionProvider"
    status, meta = request(server, "GET", "/metadata")
    assert status == 200 and meta["classes"] == ["cat", "dog", "fox"] and meta["img_size"] == 32


def test_predictions_equal_the_offline_predictor(server, onnx_file, trained):
    images = sorted((trained[0] / "test_images").iterdir())
    want = Predictor(onnx_file, "cpu").predict_files(images)
    for path, row in zip(images, want):
        status, body = request(server, "POST", "/predict", path.read_bytes(), {"Content-Type": "image/png"})
        assert status == 200, body
        assert body["label"] == ["cat", "dog", "fox"][int(row.argmax())]
        np.testing.assert_allclose([body["probabilities"][c] for c in ("cat", "dog", "fox")], row, atol=1e-6)
    boundary = "kitboundary"
    form = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.png\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + images[0].read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    status, body = request(server, "POST", "/predict", form, {"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert status == 200 and body["probabilities"]["cat"] == pytest.approx(float(want[0][0]), abs=1e-6)


def test_concurrent_requests_share_batches(server, trained):
    images = sorted((trained[0] / "test_images").iterdir())
    before = request(server, "GET", "/health")[1]["batches"]
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda p: request(server, "POST", "/predict", p.read_bytes()), images * 4))
    assert all(status == 200 for status, _ in results)
    batches = request(server, "GET", "/health")[1]["batches"] - before
    assert batches < len(results) / 2, batches                  # 36 requests, far fewer onnxruntime calls
    by_image = {}
    for path, (_, body) in zip(images * 4, results):            # the same image gets the same answer in any batch
        by_image.setdefault(path, []).append(body["probabilities"]["dog"])
    assert all(max(v) - min(v) < 1e-6 for v in by_image.values())


@pytest.mark.parametrize("body,status,needle", [
    (b"not an image at all", 400, "cannot decode the uploaded image (UnidentifiedImageError"),
    (b"", 400, "the request has no body"),
    (b"\x89PNG" + b"\x00" * 300_000, 413, "accepts at most 200000"),
])
def test_bad_requests_get_a_clear_4xx_and_the_service_goes_on(server, trained, body, status, needle):
    got, answer = request(server, "POST", "/predict", body)
    assert got == status and needle in answer["error"]
    image = sorted((trained[0] / "test_images").iterdir())[0].read_bytes()
    assert request(server, "POST", "/predict", image)[0] == 200


def test_truncated_png_is_a_400(server, trained):
    data = sorted((trained[0] / "test_images").iterdir())[0].read_bytes()
    status, answer = request(server, "POST", "/predict", data[: len(data) // 2])
    assert status == 400 and "cannot decode the uploaded image" in answer["error"]
