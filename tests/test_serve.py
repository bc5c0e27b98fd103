"""``gclf serve`` on timm's tiny ``test_efficientnet`` at 32 px, in its own process on a free port:
the rows of ``gclf predict``, every bad request docs/serve.md lists (a JSON error, and the service
stays up), the upload limit enforced while the body arrives, the read timeout, dynamic batching,
and a clean stop on SIGTERM. Skipped without the serve extra (``pip install -e ".[serve]"``)."""

from __future__ import annotations

import asyncio
import http.client
import importlib.util
import io
import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pytest
import torch
from PIL import Image

from gclf.artifact import deployment_meta
from gclf.cli import main
from gclf.errors import EXIT_USER_ERROR
from gclf.model import artifact_meta, build_model, save_model

ARCH, HEAD, SIZE = "test_efficientnet", "mlp", 32
MAX_BATCH, MAX_WAIT_MS, MAX_UPLOAD_MB, TIMEOUT_S = 4, 250, 1, 1
EXTRA = ("starlette", "uvicorn", "python_multipart", "aiohttp")


def test_without_the_serve_extra_serve_says_how_to_install_it_in_one_line(monkeypatch, capsys):
    found = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "uvicorn" else found(name, *a))
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--model", "model.pt"])
    error = capsys.readouterr().err
    assert exit_info.value.code == EXIT_USER_ERROR
    assert error.count("\n") == 1 and "uvicorn" in error and 'pip install -e ".[serve]"' in error


@pytest.fixture(scope="module")
def serve_module():
    for module in EXTRA:
        pytest.importorskip(module)
    from gclf.deploy import serve

    return serve


def noise_image(seed: int, size: tuple[int, int] = (40, 48), kind: str = "PNG") -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, kind)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    network = build_model(ARCH, HEAD, 0.3).eval()
    path = tmp_path_factory.mktemp("model") / "model.pt"
    save_model(path, network, deployment_meta(artifact_meta(ARCH, HEAD, 0.3, SIZE, network), 0.5, 0.5, ["identity"]))
    return path


@pytest.fixture(scope="module")
def server(serve_module, model, tmp_path_factory) -> str:
    """The URL of a running ``gclf serve``; stopped after the module's tests, and it must stop cleanly."""
    from gclf.deploy.benchserve import running_server

    args = ["--model", str(model), "--workers", "1", "--max-batch", str(MAX_BATCH), "--max-wait-ms", str(MAX_WAIT_MS)]
    args += ["--max-upload-mb", str(MAX_UPLOAD_MB), "--timeout-s", str(TIMEOUT_S)]
    with running_server(args, str(tmp_path_factory.mktemp("serve") / "serve.log")) as url:
        yield url


# --- a small HTTP client ----------------------------------------------------------------------


def multipart(fields: list[tuple[str, str | None, bytes]]) -> tuple[bytes, str]:
    """A multipart/form-data body of (field name, file name or None for a text field, content)."""
    boundary = "gclf-test-boundary"
    parts = []
    for name, filename, content in fields:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        parts.append(f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + content + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def request(url: str, method: str, path: str, body: bytes = b"", content_type: str = "") -> tuple[int, Any]:
    """(status, JSON body) of one request on a new connection."""
    connection = http.client.HTTPConnection(urlsplit(url).netloc, timeout=30)
    try:
        connection.request(method, path, body, {"Content-Type": content_type} if content_type else {})
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def post_files(url: str, files: list[tuple[str, bytes]]) -> tuple[int, Any]:
    return request(url, "POST", "/predict", *multipart([("file", name, data) for name, data in files]))


def raw_exchange(url: str, head: bytes, body_chunks: list[bytes], wait_s: float = 10) -> tuple[int, float]:
    """Send ``head`` and ``body_chunks`` on a bare socket, never finishing the body; the response's
    status and the seconds it took to come."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=wait_s) as connection:
        start = time.monotonic()
        connection.sendall(head)
        for chunk in body_chunks:
            connection.sendall(chunk)
        response = connection.recv(4096)
    return int(response.split(b" ", 2)[1]), time.monotonic() - start


def healthy(url: str) -> bool:
    return request(url, "GET", "/health") == (200, {"status": "ok"})


# --- tests ------------------------------------------------------------------------------------


def test_predict_gives_the_rows_of_gclf_predict(server, model, tmp_path):
    from gclf.deploy.predict import COLUMNS, Predictor

    files = [
        (f"face{i}.{'png' if i % 2 else 'jpg'}", noise_image(i, kind="PNG" if i % 2 else "JPEG")) for i in range(3)
    ]
    for name, data in files:
        (tmp_path / name).write_bytes(data)
    status, body = post_files(server, files)
    expected = Predictor(model, threads=1).predict([str(tmp_path / name) for name, _ in files])
    assert status == 200 and [list(row) for row in body["rows"]] == [list(COLUMNS)] * 3
    for row, want in zip(body["rows"], expected):
        assert row["path"] == Path(want["path"]).name and row["error"] == "" and row["label"] == want["label"]
        assert row["probability"] == pytest.approx(want["probability"], abs=1e-5)


def truncated_jpeg() -> bytes:
    whole = noise_image(1, kind="JPEG")
    return whole[: len(whole) // 2]


def bomb() -> bytes:
    """A 10,000 x 10,000 PNG: 12 KB on the wire, 300 MB once decoded to RGB."""
    buffer = io.BytesIO()
    Image.new("1", (10_000, 10_000)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    "files, status, message",
    [
        ([("notes.jpg", b"not a picture")], 415, "notes.jpg: not an image"),
        ([("cut.jpg", truncated_jpeg())], 400, "cut.jpg: truncated image"),
        ([("huge.png", bomb())], 413, "huge.png: too large"),
        ([("empty.png", b"")], 400, "empty.png: empty file"),
        ([("tiny.png", noise_image(2, (10, 10)))], 400, "tiny.png: too small for a face"),
        ([("good.png", noise_image(3)), ("notes.jpg", b"text")], 415, "notes.jpg: not an image"),
    ],
    ids=["not an image", "truncated", "10k x 10k image", "empty", "10x10 image", "one bad file of two"],
)
def test_a_bad_image_is_a_json_error_naming_the_file(server, files, status, message):
    got, body = post_files(server, files)
    assert got == status and body["error"].startswith(message)
    assert body["files"] == [{"path": message.split(":")[0], "error": body["error"].split(": ", 1)[1]}]
    assert healthy(server)


@pytest.mark.parametrize(
    "body, content_type, status, message",
    [
        (b'{"file": "a.jpg"}', "application/json", 415, "send the images as multipart/form-data"),
        (b"", "", 415, "send the images as multipart/form-data"),
        (multipart([("image", "a.png", b"x")]), None, 400, "no images"),
        (multipart([("file", None, b"a.png")]), None, 400, "the 'file' fields must be files"),
        (b"--nothing", "multipart/form-data", 400, "Missing boundary"),
    ],
    ids=["JSON body", "no content type", "no file field", "text field", "no boundary"],
)
def test_a_bad_request_is_a_json_error(server, body, content_type, status, message):
    if content_type is None:
        body, content_type = body
    got, answer = request(server, "POST", "/predict", body, content_type)
    assert got == status and message in answer["error"]
    assert healthy(server)


def test_unknown_paths_and_methods_are_json_errors(server):
    assert request(server, "GET", "/nothing") == (404, {"error": "Not Found"})
    assert request(server, "GET", "/predict") == (405, {"error": "Method Not Allowed"})


def test_an_upload_over_the_limit_is_refused_while_it_arrives(server):
    """Chunked, with no length given: the 413 comes after the first MB, although the body never ends
    (a limit checked on the whole body would wait for the end, and end in the read timeout, 408)."""
    head = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
    part = b'--b\r\nContent-Disposition: form-data; name="file"; filename="big.jpg"\r\n\r\n'
    chunks = [b"%x\r\n%s\r\n" % (len(data), data) for data in [part] + [b"x" * 2**16] * 24]
    status, _ = raw_exchange(server, head + b"Transfer-Encoding: chunked\r\n\r\n", chunks)
    assert status == 413
    assert healthy(server)


def test_an_upload_declared_over_the_limit_is_refused_before_its_body(server):
    head = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
    status, _ = raw_exchange(server, head + b"Content-Length: %d\r\n\r\n" % (2 * 2**20), [])
    assert status == 413  # not 408: it did not wait for the body
    assert healthy(server)


def test_a_body_that_stops_arriving_ends_with_408(server):
    head = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
    status, seconds = raw_exchange(server, head + b"Content-Length: 1000\r\n\r\n", [b"--b\r\n"])
    assert status == 408 and TIMEOUT_S <= seconds < TIMEOUT_S + 5
    assert healthy(server)


def test_concurrent_requests_share_model_calls(server):
    before = request(server, "GET", "/meta")[1]["batching"]
    files = [[(f"face{i}.png", noise_image(10 + i))] for i in range(2 * MAX_BATCH)]
    with ThreadPoolExecutor(len(files)) as pool:
        answers = list(pool.map(lambda f: post_files(server, f), files))
    after = request(server, "GET", "/meta")[1]["batching"]
    assert all(status == 200 and body["rows"][0]["error"] == "" for status, body in answers)
    assert after["images"] - before["images"] == len(files)
    assert after["batches"] - before["batches"] < len(files)  # some model calls took several requests' images
    assert 1 < after["largest"] <= MAX_BATCH


def test_meta_and_openapi_describe_the_service(server, model):
    status, meta = request(server, "GET", "/meta")
    assert status == 200 and meta["model"] == str(model) and meta["arch"] == ARCH and meta["image_size"] == SIZE
    assert meta["threshold"] == 0.5 and meta["threshold_source"] == "artifact"
    assert {"gclf", "torch", "starlette", "uvicorn"} <= set(meta["versions"])
    status, spec = request(server, "GET", "/openapi.json")
    assert status == 200 and spec["openapi"].startswith("3.") and set(spec["paths"]) == {"/predict", "/health", "/meta"}


# --- the batcher alone ------------------------------------------------------------------------


def test_the_batcher_bounds_batches_and_waits(serve_module):
    """Ten items at once, batches of at most 4; one lone item is handled after the wait, not never."""
    calls: list[list[int]] = []

    async def scenario() -> float:
        batcher = serve_module.Batcher(calls.append, max_batch=4, max_wait_s=0.05)
        task = asyncio.create_task(batcher.run())
        await asyncio.gather(*(batcher.submit(i) for i in range(10)))
        start = time.monotonic()
        await batcher.submit(10)
        waited = time.monotonic() - start
        task.cancel()
        batcher.close()
        return waited

    waited = asyncio.run(scenario())
    assert calls == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9], [10]]
    assert 0.04 <= waited < 1


def test_a_failing_model_call_fails_its_requests_only(serve_module):
    def handle(items: list[int]) -> None:
        if 13 in items:
            raise RuntimeError("model failed")

    async def scenario() -> None:
        batcher = serve_module.Batcher(handle, max_batch=4, max_wait_s=0.01)
        task = asyncio.create_task(batcher.run())
        with pytest.raises(RuntimeError, match="model failed"):
            await batcher.submit(13)
        await batcher.submit(1)  # the batcher goes on
        task.cancel()
        batcher.close()

    asyncio.run(scenario())
