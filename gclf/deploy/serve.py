"""``gclf serve``: any gclf artifact as an HTTP inference service, FastAPI on uvicorn (docs/serve.md).

``POST /predict`` takes one or several images as multipart fields named ``file`` and answers
``{"rows": [...]}``, the rows ``gclf predict`` writes (one per face with ``--detect-faces``); ``GET
/health`` answers 503 once the worker cannot predict; ``GET /meta`` shows the model, the limits,
counters and versions. FastAPI writes the OpenAPI description from the typed handlers and
:mod:`gclf.deploy.schema` (``/openapi.json``, browsable at ``/docs``).

Every queue is bounded and every wait ends: a full queue is a 503 with ``Retry-After`` answered from
the headers, a body over the upload limit a 413 (:mod:`gclf.deploy.guards`); a request not answered
by its deadline is a 503, and its work is dropped, as is that of a client that went away
(:class:`~gclf.deploy.service.Service`); headers that do not arrive in time close the connection
(:mod:`gclf.deploy.connections`). A bad request gets a JSON ``{"error": ...}`` and the service goes on;
an internal error is a 500 that names an incident, its traceback in the server log only.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import warnings
from contextlib import asynccontextmanager
from dataclasses import asdict
from importlib import metadata
from typing import Annotated, Any, AsyncIterator

import uvicorn
from fastapi import FastAPI, File, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from PIL import Image
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from gclf.deploy.connections import HeaderDeadlineProtocol, raise_open_file_limit
from gclf.deploy.guards import Admission, HideInternalErrors, error_response
from gclf.deploy.rows import json_row
from gclf.deploy.schema import Error, Health, Meta, prediction_model
from gclf.deploy.serveconfig import STOPPED, ServeConfig
from gclf.deploy.service import FIELD, Service

CONFIG_ENV = "GCLF_SERVE_CONFIG"  # how the config reaches uvicorn's worker processes, which import the app anew
TEXT_FIELDS = {"max_fields": 16, "max_part_size": 64 * 1024}  # text fields are ignored: a few small ones, else 400
log = logging.getLogger("uvicorn.error")  # uvicorn's own log, so gclf's lines keep its format and level
# at module level: FastAPI reads the handlers' annotations as strings, in this module's namespace
Images = Annotated[list[UploadFile], File(description="the images, one file per part, at most --max-files")]


def refusal(description: str) -> dict[str, Any]:
    return {"model": Error, "description": description}


PREDICT_REFUSALS: dict[int | str, dict[str, Any]] = {
    400: refusal("a truncated, empty or tiny image; a malformed form; more files than --max-files"),
    408: refusal("the body did not arrive within --timeout-s of the headers"),
    413: refusal("a body over --max-upload-mb, or an image over --max-megapixels"),
    415: refusal("not multipart/form-data, or a file that is not an image"),
    422: refusal("no 'file' field, or a 'file' field that is text"),
    500: refusal("an internal error: the answer names an incident, the server log has its traceback"),
    503: {
        **refusal("busy (a full queue, or not answered within --deadline-s): send it again after Retry-After"),
        "headers": {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}},
    },
}


async def refused(request: Request, exc: Exception) -> JSONResponse:
    """A refusal (:class:`~gclf.deploy.guards.ServeError`, or Starlette's 404, 405, malformed multipart) as JSON."""
    assert isinstance(exc, HTTPException)
    return error_response(exc)


async def invalid(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's validation of the form, in this service's words: 422 and one line."""
    assert isinstance(exc, RequestValidationError)
    missing = any(error["type"] == "missing" for error in exc.errors())
    message = f"no images: send each as a multipart field named {FIELD!r}"
    return JSONResponse({"error": message if missing else f"the {FIELD!r} fields must be files, not text"}, 422)


async def hung_up(request: Request, exc: Exception) -> Response:
    """A client that went away mid-request: no one reads the answer, and it is no error of the service's."""
    return Response(status_code=400)


def create_app(config: ServeConfig) -> FastAPI:
    """The application of one worker: loads the model now, starts the batcher with the server."""
    # Refuse decompression bombs as gclf predict does (over the limit, PIL only warns up to 2x of it),
    # at a limit that bounds what one request may decode; filters are process-wide, and this
    # process only serves.
    Image.MAX_IMAGE_PIXELS = config.max_pixels
    warnings.simplefilter("error", Image.DecompressionBombWarning)  # type: ignore[arg-type]
    service = Service(config)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service.batcher.start()
        log.info(startup_line(service))
        try:
            yield
        finally:
            service.close()
            log.info(f"gclf serve worker {os.getpid()}: {STOPPED}")

    app = FastAPI(
        title="gclf serve",
        version=metadata.version("gclf"),
        description="Face gender classifier: the rows of `gclf predict` for images posted as multipart files.",
        lifespan=lifespan,
        redoc_url=None,
        exception_handlers={HTTPException: refused, RequestValidationError: invalid, ClientDisconnect: hung_up},
    )
    app.add_middleware(
        Admission,
        max_queue=config.max_queue,
        max_bytes=round(config.max_upload_mb * 2**20),
        timeout_s=config.timeout_s,
        deadline_s=config.deadline_s,
        stats=service.requests,
    )
    app.add_middleware(HideInternalErrors)  # added last: the outermost, so it also covers Admission
    app.state.service = service
    columns = service.predictor.columns

    @app.post(
        "/predict",
        operation_id="predict",
        summary="Label face images (with --detect-faces: photos, one row per face)",
        response_model=prediction_model(columns),
        response_description="one row per image (per face), in the order sent",
        responses=PREDICT_REFUSALS,
        form_limits={"max_files": config.max_files, **TEXT_FIELDS},
    )
    async def predict(request: Request, file: Images) -> Any:
        rows = await service.answer(request, file)
        return {"rows": [json_row(row, columns) for row in rows]}

    @app.get(
        "/health",
        operation_id="health",
        summary="Whether this worker can predict",
        response_description="it can",
        response_model=Health,
        responses={503: {"model": Health, "description": "the worker's batching task has stopped"}},
    )
    async def health() -> Any:
        return service.health()

    @app.get(
        "/meta",
        operation_id="meta",
        summary="The model, the limits, this worker's counters, versions",
        response_model=Meta,
    )
    async def meta() -> Any:
        return service.meta()

    return app


def startup_line(service: Service) -> str:
    predictor, config = service.predictor, service.config
    return (
        f"gclf serve worker {os.getpid()}: {predictor.model_path} ({predictor.meta.get('arch')}, "
        f"{predictor.image_size} px, threshold {predictor.threshold:g} from the {predictor.threshold_source}), "
        f"{config.threads} threads, batches of up to {config.max_batch} images within {config.max_wait_ms:g} ms"
    )


def app_from_environment() -> FastAPI:
    """uvicorn's app factory in each worker: the config :func:`serve` left in the environment."""
    return create_app(ServeConfig(**json.loads(os.environ[CONFIG_ENV])))


def uvicorn_options(config: ServeConfig) -> dict[str, Any]:
    """uvicorn's settings for ``config``: where to listen, and the h11 protocol with the header deadline."""
    return {
        "host": config.host,
        "port": config.port,
        "http": functools.partial(HeaderDeadlineProtocol, header_timeout_s=config.header_timeout_s),
        "access_log": False,  # a log line per request costs the event loop more than it tells
    }


def serve(config: ServeConfig) -> None:
    """Run the service until Ctrl-C or SIGTERM (uvicorn finishes the requests in flight first)."""
    os.environ[CONFIG_ENV] = json.dumps(asdict(config))
    raise_open_file_limit()
    uvicorn.run(
        f"{__name__}:app_from_environment",  # an import string: the only way uvicorn runs several workers
        factory=True,
        workers=config.workers,
        **uvicorn_options(config),
    )
