"""``gclf serve`` on timm's tiny ``test_efficientnet`` at 32 px, in its own process on a free port:
the rows of ``gclf predict``, every bad request docs/serve.md lists (a JSON error, and the service
stays up), the upload, file-count and pixel limits, the body and header deadlines, dynamic batching,
the generated OpenAPI, and a clean stop on SIGTERM. The queue, the request deadline, clients that go
away, a dead batcher and internal errors are tested on servers in this process (:func:`in_process`),
whose insides a test can reach. Skipped without the serve extra (``pip install -e ".[serve]"``)."""

from __future__ import annotations

import asyncio
import http.client
import importlib.util
import io
import json
import logging
import socket
import threading
import time
import tracemalloc
import warnings
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlsplit

import numpy as np
import pytest
import torch
from PIL import Image

from gclf.cli import main
from gclf.errors import EXIT_USER_ERROR
from gclf.export.artifact import deployment_meta
from gclf.train.model import artifact_meta, build_model, save_model

ARCH, HEAD, SIZE = "test_efficientnet", "mlp", 32
MAX_BATCH, MAX_WAIT_MS, MAX_UPLOAD_MB, TIMEOUT_S, HEADER_TIMEOUT_S = 4, 250, 1, 1, 1
MAX_FILES, MAX_MEGAPIXELS = 3, 0.05  # 50,000 pixels: the test faces have 1,920
EXTRA = ("fastapi", "starlette", "uvicorn", "python_multipart", "aiohttp")


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
    from gclf.bench.serve import running_server

    args = ["--model", str(model), "--workers", "1", "--max-batch", str(MAX_BATCH), "--max-wait-ms", str(MAX_WAIT_MS)]
    args += ["--max-upload-mb", str(MAX_UPLOAD_MB), "--timeout-s", str(TIMEOUT_S), "--max-files", str(MAX_FILES)]
    args += ["--max-megapixels", str(MAX_MEGAPIXELS), "--header-timeout-s", str(HEADER_TIMEOUT_S)]
    with running_server(args, str(tmp_path_factory.mktemp("serve") / "serve.log")) as running:
        yield running.url


@contextmanager
def in_process(serve_module, model: Path, **options: Any) -> Iterator[tuple[str, Any]]:
    """A server in a thread of this process: its URL and its :class:`~gclf.deploy.service.Service`."""
    import uvicorn

    from gclf.bench.serve import free_port
    from gclf.deploy.serveconfig import ServeConfig

    config = ServeConfig(str(model), port=free_port(), **options)
    pixels = Image.MAX_IMAGE_PIXELS
    with warnings.catch_warnings():  # create_app's process-wide settings end with the server
        app = serve_module.create_app(config)
        # log_config=None: uvicorn leaves logging alone, so caplog sees the service's log
        server = uvicorn.Server(uvicorn.Config(app, log_config=None, **serve_module.uvicorn_options(config)))
        thread = threading.Thread(target=server.run)
        thread.start()
        try:
            wait_for(lambda: server.started, 60)
            yield f"http://127.0.0.1:{config.port}", app.state.service
        finally:
            server.should_exit = True
            thread.join(60)
            Image.MAX_IMAGE_PIXELS = pixels


def wait_for(condition, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


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
    status, _, answer = exchange(url, method, path, body, content_type)
    return status, answer


def exchange(url: str, method: str, path: str, body: bytes = b"", content_type: str = "") -> tuple[int, dict, Any]:
    """(status, headers, JSON body) of one request on a new connection."""
    connection = http.client.HTTPConnection(urlsplit(url).netloc, timeout=30)
    try:
        connection.request(method, path, body, {"Content-Type": content_type} if content_type else {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), json.loads(response.read())
    finally:
        connection.close()


def post_files(url: str, files: list[tuple[str, bytes]]) -> tuple[int, Any]:
    return request(url, "POST", "/predict", *multipart([("file", name, data) for name, data in files]))


def connect(url: str, wait_s: float = 10) -> socket.socket:
    parts = urlsplit(url)
    return socket.create_connection((parts.hostname, parts.port), timeout=wait_s)


def raw_exchange(url: str, head: bytes, body_chunks: list[bytes], wait_s: float = 10) -> tuple[int, float]:
    """Send ``head`` and ``body_chunks`` on a bare socket, never finishing the body; the response's
    status and the seconds it took to come."""
    with connect(url, wait_s) as connection:
        start = time.monotonic()
        connection.sendall(head)
        for chunk in body_chunks:
            connection.sendall(chunk)
        response = connection.recv(4096)
    return int(response.split(b" ", 2)[1]), time.monotonic() - start


def until_closed(connection: socket.socket, start: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and the seconds from ``start``."""
    received = b""
    while chunk := connection.recv(4096):
        received += chunk
    return received, time.monotonic() - start


def read_response(connection: socket.socket) -> tuple[bytes, bytes]:
    """(head, body) of one response: TCP may hand them over in several pieces, the body after the head."""
    received = b""
    while b"\r\n\r\n" not in received and (chunk := connection.recv(4096)):
        received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    length = next(
        (int(line.split(b":")[1]) for line in head.lower().split(b"\r\n") if line.startswith(b"content-length:")), 0
    )
    while len(body) < length and (chunk := connection.recv(4096)):
        body += chunk
    return head, body


def healthy(url: str) -> bool:
    return request(url, "GET", "/health") == (200, {"status": "ok"})


PREDICT_HEAD = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"


# --- the rows, and bad requests ---------------------------------------------------------------


def test_predict_gives_the_rows_of_gclf_predict(server, model, tmp_path):
    from gclf.deploy.predict import COLUMNS, Predictor

    files = [
        (f"face{i}.{'png' if i % 2 else 'jpg'}", noise_image(i, kind="PNG" if i % 2 else "JPEG")) for i in range(2)
    ]
    sixteen_bit = io.BytesIO()  # a 16-bit grayscale PNG: PIL's mode I;16, rescaled to 8 bits
    Image.fromarray(np.random.default_rng(5).integers(0, 2**16, (48, 40), dtype=np.uint16)).save(sixteen_bit, "PNG")
    files.append(("deep.png", sixteen_bit.getvalue()))
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
        ([("big.png", noise_image(4, (300, 300)))], 413, "big.png: too large"),
        ([("empty.png", b"")], 400, "empty.png: empty file"),
        ([("tiny.png", noise_image(2, (10, 10)))], 400, "tiny.png: too small for a face"),
        ([("good.png", noise_image(3)), ("notes.jpg", b"text")], 415, "notes.jpg: not an image"),
    ],
    ids=["not an image", "truncated", "10k x 10k image", "over --max-megapixels", "empty", "10x10", "one bad of two"],
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
        (multipart([("image", "a.png", b"x")]), None, 422, "no images"),
        (multipart([("file", None, b"a.png")]), None, 422, "the 'file' fields must be files"),
        (b"--nothing", "multipart/form-data", 400, "Missing boundary"),
        (multipart([("file", f"{i}.png", noise_image(i)) for i in range(MAX_FILES + 1)]), None, 400, "Too many files"),
    ],
    ids=["JSON body", "no content type", "no file field", "text field", "no boundary", "over --max-files"],
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
    part = b'--b\r\nContent-Disposition: form-data; name="file"; filename="big.jpg"\r\n\r\n'
    chunks = [b"%x\r\n%s\r\n" % (len(data), data) for data in [part] + [b"x" * 2**16] * 24]
    status, _ = raw_exchange(server, PREDICT_HEAD + b"Transfer-Encoding: chunked\r\n\r\n", chunks)
    assert status == 413
    assert healthy(server)


def test_an_upload_declared_over_the_limit_is_refused_before_its_body(server):
    status, _ = raw_exchange(server, PREDICT_HEAD + b"Content-Length: %d\r\n\r\n" % (2 * 2**20), [])
    assert status == 413  # not 408: it did not wait for the body
    assert healthy(server)


def test_a_body_that_stops_arriving_ends_with_408(server):
    status, seconds = raw_exchange(server, PREDICT_HEAD + b"Content-Length: 1000\r\n\r\n", [b"--b\r\n"])
    assert status == 408 and TIMEOUT_S <= seconds < TIMEOUT_S + 5
    assert healthy(server)


# --- the header deadline ----------------------------------------------------------------------


@pytest.mark.parametrize("sent", [b"POST /pred", b""], ids=["half a request line", "nothing"])
def test_a_connection_whose_headers_stall_is_closed_at_the_header_deadline(server, sent):
    start = time.monotonic()  # before the server accepts the connection: its clock starts then
    with connect(server) as connection:
        connection.sendall(sent)
        answer, seconds = until_closed(connection, start)
    assert HEADER_TIMEOUT_S <= seconds < HEADER_TIMEOUT_S + 3
    assert answer.startswith(b"HTTP/1.1 408 ") if sent else answer == b""


def test_the_header_deadline_restarts_with_each_request_on_a_kept_alive_connection(server):
    connection = http.client.HTTPConnection(urlsplit(server).netloc, timeout=30)  # keeps the connection alive
    try:
        for _ in range(2):  # the second request comes after the first's deadline: it has a deadline of its own
            time.sleep(HEADER_TIMEOUT_S * 0.7)
            connection.request("GET", "/health")
            assert connection.getresponse().read() == b'{"status":"ok"}'
        start = time.monotonic()
        connection.sock.sendall(b"GET /hea")
        answer, seconds = until_closed(connection.sock, start)
    finally:
        connection.close()
    assert answer.startswith(b"HTTP/1.1 408 ") and seconds < HEADER_TIMEOUT_S + 3


def test_health_stays_quick_while_many_connections_stall(server):
    connections = [connect(server) for _ in range(100)]
    try:
        for connection in connections:
            connection.sendall(b"GET /hea")
        latencies = []
        for _ in range(10):
            start = time.monotonic()
            assert healthy(server)
            latencies.append(time.monotonic() - start)
        assert max(latencies) < 1  # a lenient bound: the machine may be busy; gclf bench-serve measures
    finally:
        for connection in connections:
            connection.close()


# --- batching, description --------------------------------------------------------------------


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


def test_meta_describes_the_model_and_the_limits(server, model):
    status, meta = request(server, "GET", "/meta")
    assert status == 200 and meta["model"] == str(model) and meta["arch"] == ARCH and meta["image_size"] == SIZE
    assert meta["threshold"] == 0.5 and meta["threshold_source"] == "artifact"
    assert meta["limits"]["max_files"] == MAX_FILES and meta["limits"]["max_pixels"] == 50_000
    assert {"gclf", "torch", "fastapi", "uvicorn"} <= set(meta["versions"])


def test_openapi_is_3_1_and_describes_the_request_the_rows_and_the_refusals(server):
    from gclf.deploy.predict import COLUMNS

    status, spec = request(server, "GET", "/openapi.json")
    assert status == 200 and spec["openapi"].startswith("3.1.")
    assert '"format": "binary"' not in json.dumps(spec)  # OpenAPI 3.0's way; 3.1 says contentMediaType

    def resolve(schema: dict) -> dict:
        return spec["components"]["schemas"][schema["$ref"].split("/")[-1]] if "$ref" in schema else schema

    predict = spec["paths"]["/predict"]["post"]
    form = resolve(predict["requestBody"]["content"]["multipart/form-data"]["schema"])
    assert predict["requestBody"]["required"] and form["required"] == ["file"]
    assert form["properties"]["file"]["type"] == "array"
    assert form["properties"]["file"]["items"] == {"type": "string", "contentMediaType": "application/octet-stream"}
    answer = resolve(predict["responses"]["200"]["content"]["application/json"]["schema"])
    row = resolve(answer["properties"]["rows"]["items"])
    nullable = ("probability", "aligned")  # anyOf with null: no single type
    assert list(row["properties"]) == list(COLUMNS) and sorted(row["required"]) == sorted(COLUMNS)
    assert {name: field.get("type") for name, field in row["properties"].items() if name not in nullable} == {
        "path": "string",
        "label": "string",
        "error": "string",
    }
    assert row["properties"]["probability"]["anyOf"] == [{"type": "number"}, {"type": "null"}]
    for code in ("413", "415", "422", "503"):
        error = resolve(predict["responses"][code]["content"]["application/json"]["schema"])
        assert error["properties"]["error"]["type"] == "string" and error["required"] == ["error"]
    assert "Retry-After" in predict["responses"]["503"]["headers"]
    assert "503" in spec["paths"]["/health"]["get"]["responses"]
    limits = resolve(
        resolve(spec["paths"]["/meta"]["get"]["responses"]["200"]["content"]["application/json"]["schema"])[
            "properties"
        ]["limits"]
    )
    assert {"max_files", "max_pixels", "header_timeout_s", "deadline_s", "max_queue"} <= set(limits["properties"])


# --- queues, deadlines, clients that go away, failures (servers in this process) --------------


def test_a_full_queue_is_refused_at_once_with_retry_after_before_the_body_is_read(serve_module, model):
    """One request holds the only place (it waits 2 s for others to share its model call); the next
    declares a 500 KB body and sends none of it: it gets its 503 at once, not a 408 for the body."""
    with in_process(serve_module, model, max_queue=1, max_wait_ms=2000) as (url, service):
        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(post_files, url, [("face.png", noise_image(0))])
            wait_for(lambda: service.requests.in_flight == 1, 10)
            with connect(url) as connection:
                start = time.monotonic()
                connection.sendall(PREDICT_HEAD + b"Content-Length: 500000\r\n\r\n")
                head, body = read_response(connection)
                seconds = time.monotonic() - start
            assert first.result()[0] == 200
    assert head.startswith(b"HTTP/1.1 503 ") and b"\r\nretry-after: 1\r\n" in head.lower() and seconds < 1
    assert json.loads(body)["error"].startswith("busy") and service.requests.refused == 1


def test_a_refused_client_still_sending_its_body_reads_its_503_not_a_reset(serve_module, model):
    """It asked for the connection to close, so it closes after the answer; closed at once, with the
    client's body unread, the socket would reset, and the client would lose the answer."""
    with in_process(serve_module, model, max_queue=1, max_wait_ms=2000) as (url, service):
        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(post_files, url, [("face.png", noise_image(0))])
            wait_for(lambda: service.requests.in_flight == 1, 10)
            body, content_type = multipart([("file", "big.png", bytes(4 * 2**20))])
            with connect(url) as connection:
                connection.sendall(
                    b"POST /predict HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: %s\r\n"
                    b"Content-Length: %d\r\n\r\n" % (content_type.encode(), len(body))
                )
                time.sleep(0.2)  # the answer is sent, and the connection closed, before the body comes
                connection.sendall(body)
                answer, _ = until_closed(connection, time.monotonic())
            assert first.result()[0] == 200
    assert answer.startswith(b"HTTP/1.1 503 ")


def test_a_request_past_its_deadline_gets_503_and_its_images_are_not_predicted(serve_module, model):
    with in_process(serve_module, model, deadline_s=0.3, max_wait_ms=1000) as (url, service):
        start = time.monotonic()
        status, headers, body = exchange(url, "POST", "/predict", *multipart([("file", "a.png", noise_image(0))]))
        seconds = time.monotonic() - start
        wait_for(lambda: service.batcher.stats.dropped == 1, 5)  # when its batch would have been called
    assert status == 503 and headers["retry-after"] == "1" and "--deadline-s" in body["error"] and seconds < 0.9
    assert service.requests.expired == 1 and service.batcher.stats.images == 0


def test_the_images_of_a_client_that_went_away_are_not_predicted(serve_module, model):
    with in_process(serve_module, model, max_wait_ms=1000) as (url, service):
        body, content_type = multipart([("file", "a.png", noise_image(0))])
        with connect(url) as connection:
            connection.sendall(
                b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n%s"
                % (content_type.encode(), len(body), body)
            )
            wait_for(lambda: service.batcher._waiting, 5)  # decoded, waiting for its model call
        wait_for(lambda: service.requests.gone == 1, 5)
        wait_for(lambda: service.batcher.stats.dropped == 1, 5)
    assert service.batcher.stats.images == 0


def test_health_fails_once_the_batcher_has_died(serve_module, model, monkeypatch):
    with in_process(serve_module, model, max_wait_ms=10) as (url, service):
        assert healthy(url)

        async def broken(batch):
            raise RuntimeError("a bug in the batcher")

        monkeypatch.setattr(service.batcher, "_call", broken)
        status, body = post_files(url, [("face.png", noise_image(0))])
        assert status == 503 and "batching task has stopped" in body["error"]
        assert request(url, "GET", "/health") == (
            503,
            {"status": "failing", "error": "the batching task has stopped: RuntimeError: a bug in the batcher"},
        )
        assert post_files(url, [("face.png", noise_image(0))])[0] == 503  # nothing waits for a dead batcher


def test_an_internal_error_is_a_500_without_internals_and_its_traceback_is_logged(serve_module, model, caplog):
    with in_process(serve_module, model, max_wait_ms=10) as (url, service):

        def broken(rows, batch):
            raise RuntimeError("secret detail at /srv/models")

        service.predictor.predicted = broken
        with caplog.at_level(logging.ERROR, logger="uvicorn.error"):
            status, body = post_files(url, [("face.png", noise_image(0))])
        assert healthy(url)  # the next batches go on
    incident = body["error"].split()[2].rstrip(";")
    assert status == 500 and body == {"error": f"internal error {incident}; the server log has the details"}
    logged = [r for r in caplog.records if incident in r.getMessage()]
    assert logged and "secret detail" in caplog.text and "Traceback" in caplog.text


# --- the batcher alone ------------------------------------------------------------------------


def run_batcher(serve_module, handle, scenario, capacity: int = 100, max_wait_s: float = 0.05) -> Any:
    from gclf.deploy.batcher import Batcher

    async def main() -> Any:
        batcher = Batcher(handle, max_batch=4, max_wait_s=max_wait_s, capacity=capacity)
        batcher.start()
        try:
            return await scenario(batcher)
        finally:
            batcher.close()

    return asyncio.run(main())


def test_the_batcher_bounds_batches_and_waits(serve_module):
    """Ten items at once, batches of at most 4; one lone item is handled after the wait, not never."""
    calls: list[list[int]] = []

    async def scenario(batcher) -> float:
        await asyncio.gather(*(batcher.submit([i]) for i in range(10)))
        start = time.monotonic()
        await batcher.submit([10])
        return time.monotonic() - start

    waited = run_batcher(serve_module, calls.append, scenario)
    assert calls == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9], [10]]
    assert 0.04 <= waited < 1


def test_the_batcher_refuses_what_does_not_fit_but_an_empty_queue_takes_anything(serve_module):
    from gclf.deploy.batcher import QueueFull

    async def scenario(batcher) -> None:
        waiting = asyncio.ensure_future(batcher.submit([1, 2, 3]))
        await asyncio.sleep(0)
        with pytest.raises(QueueFull):
            await batcher.submit([4, 5])
        await batcher.submit([6])  # fits: 4 of 4
        await waiting
        await batcher.submit(list(range(10)))  # alone, more than the capacity

    run_batcher(serve_module, lambda items: None, scenario, capacity=4)


def test_a_failing_model_call_fails_its_requests_only(serve_module):
    def handle(items: list[int]) -> None:
        if 13 in items:
            raise RuntimeError("model failed")

    async def scenario(batcher) -> None:
        with pytest.raises(RuntimeError, match="model failed"):
            await batcher.submit([13])
        await batcher.submit([1])  # the batcher goes on

    run_batcher(serve_module, handle, scenario, max_wait_s=0.01)


# --- 16-bit images ----------------------------------------------------------------------------


def test_16_bit_levels_become_8_bit_as_round_of_a_257th():
    from gclf.data.images import to_rgb

    levels = np.arange(2**16, dtype=np.uint16).reshape(256, 256)
    wide = np.linspace(-(2**17), 2**18, 2**16).astype(np.int32).reshape(256, 256)  # 32-bit: saturates
    for image in (Image.fromarray(levels), Image.fromarray(wide)):
        expected = np.clip(np.round(np.asarray(image, dtype=np.float64) / 257), 0, 255)
        assert np.array_equal(np.asarray(to_rgb(image)), np.repeat(expected[..., None], 3, axis=2))


def test_a_16_bit_image_is_converted_without_a_float64_copy():
    from gclf.data.images import to_rgb

    side = 1000
    image = Image.fromarray(np.random.default_rng(0).integers(0, 2**16, (side, side), dtype=np.uint16))
    tracemalloc.start()
    to_rgb(image)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 8 * side * side  # a float64 copy alone is 8 bytes a pixel


def test_read_response_waits_for_a_body_sent_after_its_head():
    ours, theirs = socket.socketpair()
    with ours, theirs:
        theirs.sendall(b"HTTP/1.1 503 Busy\r\nContent-Length: 11\r\n\r\n")
        threading.Timer(0.1, theirs.sendall, [b'{"e": "x"}\n']).start()
        assert read_response(ours) == (b"HTTP/1.1 503 Busy\r\nContent-Length: 11", b'{"e": "x"}\n')
