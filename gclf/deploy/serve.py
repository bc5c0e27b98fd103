"""``gclf serve``: any gclf artifact as an HTTP inference service, Starlette on uvicorn (docs/serve.md).

``POST /predict`` takes one or several images as multipart fields named ``file`` and answers
``{"rows": [...]}``, the rows ``gclf predict`` writes (one per face with ``--detect-faces``); ``GET
/health``, ``GET /meta`` (the model, the limits, batching counters, versions) and ``GET
/openapi.json`` (hand-written: Starlette makes none). Images are decoded and predicted by a
:class:`~gclf.deploy.predict.Predictor`, so a file gets the same row over HTTP as from the command.

Requests that arrive close together share one model call (:class:`Batcher`). A bad request gets a
JSON ``{"error": ...}`` and the service goes on: a body over the upload limit is refused while it
is read (413), a body that stops arriving ends at the read timeout (408), a file that is no image
is 415, one over :data:`MAX_PIXELS` (a decompression bomb) 413, a truncated or tiny one 400.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import tempfile
import time
import warnings
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from importlib import metadata
from typing import Any, AsyncIterator, Callable, Generic, TypeVar

import numpy as np
import uvicorn
from PIL import Image
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Message, Receive

from gclf.data import WORKERS
from gclf.deploy import available_cores
from gclf.deploy.predict import NO_FACE, Decoded, Predictor, Row, json_row
from gclf.detect import DEFAULT_MAX_FACES, DEFAULT_MIN_FACE_SIZE

CONFIG_ENV = "GCLF_SERVE_CONFIG"  # how the config reaches uvicorn's worker processes, which import the app anew
MAX_PIXELS = 50_000_000  # a 48 MP phone photo passes; a 10,000 x 10,000 image (300 MB decoded) does not
FIELD = "file"
STOPPED = "stopped cleanly"  # logged by each worker at the end of its shutdown (gclf bench-serve checks)
VERSIONED = ("gclf", "torch", "timm", "numpy", "pillow", "onnxruntime", "openvino", "starlette", "uvicorn")
log = logging.getLogger("uvicorn.error")  # uvicorn's own log, so gclf's lines keep its format and level

Item = TypeVar("Item")


@dataclass(frozen=True)
class ServeConfig:
    """Everything ``gclf serve`` takes; plain values, so it travels to the workers as JSON."""

    model: str
    detect_faces: bool = False
    min_face_size: int = DEFAULT_MIN_FACE_SIZE
    max_faces: int = DEFAULT_MAX_FACES
    tta: bool = False
    threshold: float | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    max_batch: int = 32
    max_wait_ms: float = 5.0
    max_upload_mb: float = 10.0
    timeout_s: float = 10.0

    @property
    def threads(self) -> int:
        """Inference threads per worker: the workers share the cores, never oversubscribe them."""
        return max(1, available_cores() // self.workers)


class ServeError(Exception):
    """A request the service refuses: an HTTP status, a message, and the files at fault (if any)."""

    def __init__(self, status: int, message: str, files: list[dict[str, Any]] | None = None):
        super().__init__(message)
        self.status, self.message, self.files = status, message, files


# --- dynamic batching -------------------------------------------------------------------------


@dataclass
class BatchStats:
    """What the batcher has done in this worker: shown by ``GET /meta``."""

    batches: int = 0
    images: int = 0
    largest: int = 0


@dataclass
class Waiting(Generic[Item]):
    item: Item
    since: float  # loop time it arrived: its wait is bounded, however long the model was busy
    done: asyncio.Future


class Batcher(Generic[Item]):
    """Items from concurrent requests gathered into one call of ``handle(items)``.

    A call starts once ``max_batch`` items wait or the oldest has waited ``max_wait_s``. Calls run
    one at a time in a thread of their own, so the event loop goes on reading requests while the
    model runs, and the next batch gathers meanwhile. :meth:`run` is the one task that makes calls.
    """

    def __init__(self, handle: Callable[[list[Item]], None], max_batch: int, max_wait_s: float):
        self.handle, self.max_batch, self.max_wait_s = handle, max_batch, max_wait_s
        self.stats = BatchStats()
        self._waiting: deque[Waiting[Item]] = deque()
        self._arrived = asyncio.Event()
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="gclf-model")

    async def submit(self, item: Item) -> None:
        """Wait until ``item`` has been handled; the handler's exception, if it raised."""
        loop = asyncio.get_running_loop()
        waiting = Waiting(item, loop.time(), loop.create_future())
        self._waiting.append(waiting)
        self._arrived.set()
        await waiting.done

    async def run(self) -> None:
        while True:
            await self._call(await self._gather())

    def close(self) -> None:
        self._thread.shutdown(wait=True, cancel_futures=True)

    async def _gather(self) -> list[Waiting[Item]]:
        """The next batch: up to ``max_batch`` items, once it is full or its oldest item's wait is over."""
        loop = asyncio.get_running_loop()
        while not self._waiting:
            self._arrived.clear()
            await self._arrived.wait()
        deadline = self._waiting[0].since + self.max_wait_s
        while len(self._waiting) < self.max_batch and (remaining := deadline - loop.time()) > 0:
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except asyncio.TimeoutError:
                break
        return [self._waiting.popleft() for _ in range(min(self.max_batch, len(self._waiting)))]

    async def _call(self, batch: list[Waiting[Item]]) -> None:
        batch = [waiting for waiting in batch if not waiting.done.done()]  # a request cancelled meanwhile
        if not batch:
            return
        try:
            await asyncio.get_running_loop().run_in_executor(self._thread, self.handle, [w.item for w in batch])
        except Exception as e:  # the requests of this batch fail with it; the service goes on
            for waiting in batch:
                if not waiting.done.done():
                    waiting.done.set_exception(e)
            return
        self.stats.batches += 1
        self.stats.images += len(batch)
        self.stats.largest = max(self.stats.largest, len(batch))
        for waiting in batch:
            if not waiting.done.done():
                waiting.done.set_result(None)


# --- the service ------------------------------------------------------------------------------


class Service:
    """One worker's model, decoding threads and batcher."""

    def __init__(self, config: ServeConfig):
        self.config = config
        self.predictor = Predictor(
            config.model,
            config.threads,
            config.tta,
            config.threshold,
            config.max_batch,
            detect_faces=config.detect_faces,
            min_face_size=config.min_face_size,
            max_faces=config.max_faces,
        )
        self.decoders = ThreadPoolExecutor(WORKERS, thread_name_prefix="gclf-decode")  # bounds decoded memory too
        self.batcher: Batcher[tuple[Row, np.ndarray]] = Batcher(
            self.predict_batch, config.max_batch, config.max_wait_ms / 1000
        )

    def decode(self, name: str, data: bytes) -> Decoded:
        """The rows of one uploaded file, each with its pixels (None on error), as ``gclf predict`` decodes
        a file: written to a temporary file first, since the Predictor reads paths."""
        with tempfile.NamedTemporaryFile(prefix="gclf-serve-") as f:
            f.write(data)
            f.flush()
            decoded = self.predictor.decode((0, (f.name, "")), None)
        for row, _ in decoded:
            row["path"] = name
        return decoded

    def predict_batch(self, items: list[tuple[Row, np.ndarray]]) -> None:
        """Fill in the probability and label of each row, in one model call (in the batcher's thread)."""
        self.predictor.predicted([row for row, _ in items], items)

    async def predict(self, uploads: list[tuple[str, bytes]]) -> list[Row]:
        """The rows of ``uploads`` (name, bytes), in order; :class:`ServeError` when any cannot be used."""
        loop = asyncio.get_running_loop()
        decoded = await asyncio.gather(*(loop.run_in_executor(self.decoders, self.decode, *u) for u in uploads))
        pairs = [pair for rows in decoded for pair in rows]
        failed = [row for row, _ in pairs if row["error"] and row["error"] != NO_FACE]  # no face is an answer
        if failed:
            first = failed[0]
            raise ServeError(
                status_for(first["error"]),
                f"{first['path']}: {first['error']}",
                [{"path": row["path"], "error": row["error"]} for row in failed],
            )
        await asyncio.gather(*(self.batcher.submit(pair) for pair in pairs if pair[1] is not None))
        return [row for row, _ in pairs]

    def meta(self) -> dict[str, Any]:
        predictor, config, stats = self.predictor, self.config, self.batcher.stats
        return {
            "model": predictor.model_path,
            "arch": predictor.meta.get("arch"),
            "image_size": predictor.image_size,
            "classes": predictor.classes,
            "threshold": predictor.threshold,
            "threshold_source": predictor.threshold_source,
            "temperature": predictor.temperature,
            "tta_views": list(predictor.views),
            "quantization": predictor.meta.get("quantization"),
            "detect_faces": config.detect_faces,
            "columns": list(predictor.columns),
            "limits": {"max_upload_mb": config.max_upload_mb, "max_pixels": MAX_PIXELS, "timeout_s": config.timeout_s},
            "worker": {"pid": os.getpid(), "workers": config.workers, "threads": config.threads},
            "batching": {"max_batch": config.max_batch, "max_wait_ms": config.max_wait_ms, **asdict(stats)},
            "versions": {name: metadata.version(name) for name in VERSIONED},
        }


def status_for(reason: str) -> int:
    """The HTTP status of a file :class:`Predictor` could not use, from its reason."""
    if reason == "not an image":
        return 415
    if reason.startswith("too large"):  # over MAX_PIXELS, or a photo over gclf.photos' own limit
        return 413
    return 400  # truncated, empty, too small for a face, undecodable


# --- reading a request ------------------------------------------------------------------------


def limited(receive: Receive, max_bytes: int, timeout_s: float) -> Receive:
    """``receive`` that refuses a body over ``max_bytes`` as it arrives (413), before it is all in
    memory, and one that has not all arrived ``timeout_s`` from now (408): a stalled or trickling
    client holds a connection, not the service."""
    deadline = time.monotonic() + timeout_s
    received = 0

    async def receive_limited() -> Message:
        nonlocal received
        try:
            message = await asyncio.wait_for(receive(), max(0.0, deadline - time.monotonic()))
        except asyncio.TimeoutError:
            raise ServeError(408, f"the request body did not arrive within {timeout_s:g} s (--timeout-s)") from None
        received += len(message.get("body", b""))
        if received > max_bytes:
            raise ServeError(413, too_large(max_bytes))
        return message

    return receive_limited


def too_large(max_bytes: int) -> str:
    return f"request body over the upload limit of {max_bytes / 2**20:g} MB (--max-upload-mb)"


async def read_uploads(request: Request, config: ServeConfig) -> list[tuple[str, bytes]]:
    """The files of the ``file`` fields as (name, bytes), read within the size and time limits."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "multipart/form-data":
        raise ServeError(415, f"send the images as multipart/form-data, each in a field named {FIELD!r}")
    max_bytes = round(config.max_upload_mb * 2**20)
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:  # refused before a byte of it is read
        raise ServeError(413, too_large(max_bytes))
    body = Request(request.scope, limited(request.receive, max_bytes, config.timeout_s))
    async with body.form() as form:
        files = form.getlist(FIELD)
        if not files:
            raise ServeError(400, f"no images: send each as a multipart field named {FIELD!r}")
        if not all(isinstance(f, UploadFile) for f in files):
            raise ServeError(400, f"the {FIELD!r} fields must be files, not text")
        return [(f.filename or f"{FIELD}{i}", await f.read()) for i, f in enumerate(files)]


# --- the application --------------------------------------------------------------------------


async def predict(request: Request) -> JSONResponse:
    service: Service = request.app.state.service
    rows = await service.predict(await read_uploads(request, service.config))
    return JSONResponse({"rows": [json_row(row, service.predictor.columns) for row in rows]})


async def health(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def meta(request: Request) -> JSONResponse:
    return JSONResponse(request.app.state.service.meta())


async def openapi(request: Request) -> JSONResponse:
    return JSONResponse(OPENAPI)


async def refused(request: Request, exc: Exception) -> JSONResponse:
    """A :class:`ServeError`, or Starlette's own HTTP errors (404, 405, malformed multipart), as JSON."""
    if isinstance(exc, ServeError):
        body = {"error": exc.message, **({"files": exc.files} if exc.files else {})}
        return JSONResponse(body, exc.status)
    assert isinstance(exc, HTTPException)
    return JSONResponse({"error": exc.detail}, exc.status_code, exc.headers)  # headers: 405's Allow


async def hung_up(request: Request, exc: Exception) -> Response:
    """A client that went away mid-request: no one reads the answer, and it is no error of the service's."""
    return Response(status_code=400)


async def failed(request: Request, exc: Exception) -> JSONResponse:
    """Any other exception (a model call that raised, a bug): 500 as JSON; Starlette then raises it
    again, so uvicorn logs the traceback."""
    return JSONResponse({"error": f"internal error: {type(exc).__name__}: {exc}"}, 500)


def create_app(config: ServeConfig) -> Starlette:
    """The application of one worker: loads the model now, starts the batcher with the server."""
    # Refuse decompression bombs as gclf predict does (over the limit, PIL only warns up to 2x of it),
    # at a limit that bounds what one request may decode; filters are process-wide, and this
    # process only serves.
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    warnings.simplefilter("error", Image.DecompressionBombWarning)  # type: ignore[arg-type]
    service = Service(config)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        batching = asyncio.create_task(service.batcher.run())
        log.info(startup_line(service))
        try:
            yield
        finally:
            batching.cancel()
            service.batcher.close()
            service.decoders.shutdown(wait=True)
            log.info(f"gclf serve worker {os.getpid()}: {STOPPED}")

    app = Starlette(
        routes=[
            Route("/predict", predict, methods=["POST"]),
            Route("/health", health),
            Route("/meta", meta),
            Route("/openapi.json", openapi),
        ],
        exception_handlers={ServeError: refused, HTTPException: refused, ClientDisconnect: hung_up, Exception: failed},
        lifespan=lifespan,
    )
    app.state.service = service
    return app


def startup_line(service: Service) -> str:
    predictor, config = service.predictor, service.config
    return (
        f"gclf serve worker {os.getpid()}: {predictor.model_path} ({predictor.meta.get('arch')}, "
        f"{predictor.image_size} px, threshold {predictor.threshold:g} from the {predictor.threshold_source}), "
        f"{config.threads} threads, batches of up to {config.max_batch} images within {config.max_wait_ms:g} ms"
    )


def app_from_environment() -> Starlette:
    """uvicorn's app factory in each worker: the config :func:`serve` left in the environment."""
    return create_app(ServeConfig(**json.loads(os.environ[CONFIG_ENV])))


def serve(config: ServeConfig) -> None:
    """Run the service until Ctrl-C or SIGTERM (uvicorn finishes the requests in flight first)."""
    os.environ[CONFIG_ENV] = json.dumps(asdict(config))
    uvicorn.run(
        f"{__name__}:app_from_environment",  # an import string: the only way uvicorn runs several workers
        factory=True,
        host=config.host,
        port=config.port,
        workers=config.workers,
        access_log=False,  # a log line per request costs the event loop more than it tells
    )


# --- OpenAPI ----------------------------------------------------------------------------------


def error_response(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "gclf serve", "version": metadata.version("gclf"), "description": "Face gender classifier."},
    "paths": {
        "/predict": {
            "post": {
                "summary": "Label face images (with --detect-faces: photos, one row per face)",
                "requestBody": {
                    "required": True,
                    "content": {
                        "multipart/form-data": {
                            "schema": {
                                "type": "object",
                                "properties": {
                                    FIELD: {"type": "array", "items": {"type": "string", "format": "binary"}}
                                },
                                "required": [FIELD],
                            }
                        }
                    },
                },
                "responses": {
                    "200": {
                        "description": "One row per image (per face), in the order sent; the fields of gclf predict",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {"rows": {"type": "array", "items": {"type": "object"}}},
                                }
                            }
                        },
                    },
                    "400": error_response("a truncated, empty or tiny image, or a malformed form"),
                    "408": error_response("the body did not arrive within --timeout-s"),
                    "413": error_response("a body over --max-upload-mb, or an image over the pixel limit"),
                    "415": error_response("not multipart/form-data, or a file that is not an image"),
                    "500": error_response("the model call failed"),
                },
            }
        },
        "/health": {"get": {"summary": "Liveness", "responses": {"200": {"description": '{"status": "ok"}'}}}},
        "/meta": {
            "get": {
                "summary": "The model, its threshold and image size, the limits, batching counters, versions",
                "responses": {"200": {"description": "JSON object"}},
            }
        },
    },
    "components": {
        "schemas": {
            "Error": {
                "type": "object",
                "properties": {"error": {"type": "string"}, "files": {"type": "array", "items": {"type": "object"}}},
                "required": ["error"],
            }
        }
    },
}
