"""What ``gclf serve`` checks before a request reaches its handler, and what it never shows a client.

:class:`Admission` sits in front of ``POST /predict``: a request that is not multipart (415), that
declares a body over the upload limit (413), or that finds this worker's queue full (503 with
``Retry-After``) is answered from its headers alone, before its body is read, so refusing costs
neither memory nor waiting (what the client goes on sending is dropped as it comes). An admitted
request's body is read within the upload limit and the read timeout, and the request carries its
deadline (:data:`DEADLINE`).
:class:`HideInternalErrors` turns any other exception into a 500 that names an incident, with
the traceback in the server log only.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

DEADLINE = "gclf.deadline"  # scope key: the loop time by which the request must be answered
RETRY_AFTER_S = 1  # a full queue drains within a second or so at the batch sizes served (docs/serve.md)
PREDICT = ("POST", "/predict")
log = logging.getLogger("uvicorn.error")  # uvicorn's own log, so gclf's lines keep its format and level


class ServeError(HTTPException):
    """A request the service refuses: an HTTP status, a one-line message, the files at fault (if any).
    An :class:`HTTPException`, so it passes through FastAPI's form parsing to the error handler."""

    def __init__(
        self, status: int, message: str, files: list[dict[str, Any]] | None = None, retry: bool = False
    ) -> None:
        super().__init__(status, message, {"Retry-After": str(RETRY_AFTER_S)} if retry else None)
        self.message, self.files = message, files


def busy(reason: str) -> ServeError:
    """503: the service cannot take this request now; the client may send it again shortly."""
    return ServeError(503, f"busy, retry in {RETRY_AFTER_S} s: {reason}", retry=True)


def error_response(exc: HTTPException) -> JSONResponse:
    """``{"error": ...}`` (with ``"files"`` when files are at fault), the status and headers of ``exc``."""
    files = exc.files if isinstance(exc, ServeError) else None
    return JSONResponse({"error": exc.detail, **({"files": files} if files else {})}, exc.status_code, exc.headers)


@dataclass
class RequestStats:
    """What happened to this worker's ``POST /predict`` requests: shown by ``GET /meta``."""

    in_flight: int = 0  # admitted and not yet answered
    refused: int = 0  # 503 at the door: the queue was full
    expired: int = 0  # 503 after admission: not answered within the deadline
    gone: int = 0  # the client went away before its answer; its work was dropped


class Admission:
    """ASGI middleware in front of ``POST /predict``: refuses what it can from the headers, admits at
    most ``max_queue`` requests at a time, and reads an admitted body within ``max_bytes`` and
    ``timeout_s``."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_queue: int,
        max_bytes: int,
        timeout_s: float,
        deadline_s: float,
        stats: RequestStats,
    ) -> None:
        self.app, self.max_queue, self.max_bytes = app, max_queue, max_bytes
        self.timeout_s, self.deadline_s, self.stats = timeout_s, deadline_s, stats

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (scope["method"], scope["path"]) != PREDICT:
            await self.app(scope, receive, send)
            return
        try:
            self.check(scope)
        except ServeError as refusal:
            await error_response(refusal)(scope, receive, send)
            return
        scope[DEADLINE] = asyncio.get_running_loop().time() + self.deadline_s
        self.stats.in_flight += 1
        try:
            await self.app(scope, limited(receive, self.max_bytes, self.timeout_s), send)
        finally:
            self.stats.in_flight -= 1

    def check(self, scope: Scope) -> None:
        """Refuse from the headers alone: the client's mistakes first, then a full queue."""
        headers = dict(scope["headers"])
        content_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if content_type != b"multipart/form-data":
            raise ServeError(415, "send the images as multipart/form-data, each in a field named 'file'")
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            raise ServeError(413, too_large(self.max_bytes))
        if self.stats.in_flight >= self.max_queue:
            self.stats.refused += 1
            raise busy(f"{self.stats.in_flight} requests in flight in this worker (--max-queue {self.max_queue})")


def too_large(max_bytes: int) -> str:
    return f"request body over the upload limit of {max_bytes / 2**20:g} MB (--max-upload-mb)"


def limited(receive: Receive, max_bytes: int, timeout_s: float) -> Receive:
    """``receive`` that refuses a body over ``max_bytes`` as it arrives (413), before it is all in
    memory, and one that has not all arrived ``timeout_s`` from now (408): a stalled or trickling
    client holds a connection, not the service. Once the body is in, it passes ``receive`` on as it
    is: all that is left to wait for is the client going away, however long the answer takes."""
    deadline = time.monotonic() + timeout_s
    received = 0
    complete = False

    async def receive_limited() -> Message:
        nonlocal received, complete
        if complete:
            return await receive()
        try:
            message = await asyncio.wait_for(receive(), max(0.0, deadline - time.monotonic()))
        except asyncio.TimeoutError:
            raise ServeError(408, f"the request body did not arrive within {timeout_s:g} s (--timeout-s)") from None
        received += len(message.get("body", b""))
        if received > max_bytes:
            raise ServeError(413, too_large(max_bytes))
        complete = message["type"] != "http.request" or not message.get("more_body", False)
        return message

    return receive_limited


class HideInternalErrors:
    """ASGI middleware: an exception no handler took becomes a 500 naming an incident, and the log
    gets the traceback under the same name; the client sees nothing of the internals."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, send_tracked)
        except Exception as error:
            incident = secrets.token_hex(4)
            log.error(f"internal error {incident} on {scope['method']} {scope['path']}", exc_info=error)
            if not started:  # else the answer is half sent: uvicorn closes the connection
                body = {"error": f"internal error {incident}; the server log has the details"}
                await JSONResponse(body, 500)(scope, receive, send)
