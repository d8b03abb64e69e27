"""The HTTP service, run the way it runs: `python -m kit.serve` in its own process, requests over loopback."""
import re
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from helpers import request, service, stop_service
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
    (b"", 400, "an upload is empty"),
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


def multipart(files: list[tuple[str, bytes]], boundary: str = "kitboundary") -> tuple[bytes, dict]:
    body = b"".join(f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{name}\"\r\n"
                    f"Content-Type: image/png\r\n\r\n".encode() + data + b"\r\n" for name, data in files)
    return body + f"--{boundary}--\r\n".encode(), {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def test_a_batch_answers_in_the_order_sent(server, onnx_file, trained):
    images = sorted((trained[0] / "test_images").iterdir())
    order = [images[i] for i in (4, 0, 7, 2, 0)]
    body, headers = multipart([(p.name, p.read_bytes()) for p in order])
    status, answers = request(server, "POST", "/predict/batch", body, headers)
    assert status == 200 and len(answers) == len(order)
    predictor = Predictor(onnx_file, "cpu")
    for path, got in zip(order, answers):
        want = predictor.answer(predictor.predict_files([path])[0])
        assert got["label"] == want["label"]
        assert got["probabilities"] == pytest.approx(want["probabilities"], abs=1e-6)
    assert request(server, "POST", "/predict/batch", b"raw bytes")[0] == 400


def test_openapi_docs_and_prometheus_metrics(server):
    status, spec = request(server, "GET", "/openapi.json")
    assert status == 200 and {"/predict", "/predict/batch", "/health", "/metadata"} <= set(spec["paths"])
    content = spec["paths"]["/predict"]["post"]["requestBody"]["content"]
    assert "multipart/form-data" in content and "image/*" in content
    assert {"ClassAnswer", "ValueAnswer"} <= set(spec["components"]["schemas"])
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", server, timeout=30)
    conn.request("GET", "/docs")
    docs = conn.getresponse()
    page = docs.read().decode()
    assert docs.status == 200 and "swagger" in page.lower()
    # offline: every script and style the page loads comes from this service, and it answers
    assets = re.findall(r'(?:src|href)="([^"]+\.(?:js|css))"', page)
    assert assets and all(a.startswith("/docs-assets/") for a in assets), assets
    for asset in assets:
        conn.request("GET", asset)
        answer = conn.getresponse()
        assert answer.status == 200 and len(answer.read()) > 1000, asset
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    assert 'kit_requests_total{route="/predict",status="200"}' in text
    assert "kit_request_seconds_bucket" in text and "kit_batch_size_count" in text


def test_the_api_key_cors_and_the_access_log(onnx_file, trained):
    image = sorted((trained[0] / "test_images").iterdir())[0].read_bytes()
    with service(onnx_file, "--api-key", "s3cret", "--cors-origin", "https://example.com") as port:
        assert request(port, "POST", "/predict", image)[0] == 401
        assert request(port, "POST", "/predict", image, {"Authorization": "Bearer nope"})[0] == 401
        assert request(port, "GET", "/openapi.json")[0] == 401 and request(port, "GET", "/metadata")[0] == 401
        assert request(port, "GET", "/health")[0] == 200                              # probes need no key
        status, answer = request(port, "POST", "/predict", image, {"Authorization": "Bearer s3cret",
                                                                   "Origin": "https://example.com"})
        assert status == 200 and "label" in answer
        import http.client
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("OPTIONS", "/predict", headers={"Origin": "https://example.com",
                                                     "Access-Control-Request-Method": "POST",
                                                     "Access-Control-Request-Headers": "Authorization"})
        preflight = conn.getresponse()
        preflight.read()
        assert preflight.status == 200
        assert preflight.getheader("access-control-allow-origin") == "https://example.com"
        conn.request("OPTIONS", "/predict", headers={"Origin": "https://evil.example",
                                                     "Access-Control-Request-Method": "POST"})
        other = conn.getresponse()
        other.read()
        conn.close()
        assert other.getheader("access-control-allow-origin") is None
        log = stop_service(port)
    lines = [line for line in log.splitlines() if '"POST /predict"' in line]
    assert len(lines) == 3 and lines[0].endswith("ms") and " 401 " in lines[0] and " 200 " in lines[2]
