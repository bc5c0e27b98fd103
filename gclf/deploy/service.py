"""One worker of ``gclf serve``: its model, decoding threads, batcher and deadlines.

Images are decoded and predicted by a :class:`~gclf.deploy.predict.Predictor`, so a file gets the
same row over HTTP as from ``gclf predict``; requests that arrive close together share one model
call (:class:`~gclf.deploy.batcher.Batcher`). A request's work is given up when its client goes
away or its deadline passes: its queued decoding and its images waiting for the model are dropped.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from importlib import metadata
from typing import Any, BinaryIO

import numpy as np
from fastapi import Request, UploadFile
from fastapi.responses import JSONResponse
from starlette.requests import ClientDisconnect
from starlette.types import Receive

from gclf.data import WORKERS
from gclf.deploy.batcher import Batcher, BatcherStopped, QueueFull
from gclf.deploy.guards import DEADLINE, RequestStats, ServeError, busy
from gclf.deploy.predict import Decoded, Predictor
from gclf.deploy.rows import NO_FACE, Row
from gclf.deploy.serveconfig import ServeConfig

FIELD = "file"  # the multipart field of the images
VERSIONED = ("gclf", "torch", "timm", "numpy", "pillow", "onnxruntime", "openvino", "fastapi", "starlette", "uvicorn")


class Service:
    """One worker's model, decoding threads, batcher and request counters."""

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
        # the decoding threads bound decoded memory; their queue is bounded by the admitted requests' files
        self.decoders = ThreadPoolExecutor(WORKERS, thread_name_prefix="gclf-decode")
        self.batcher: Batcher[tuple[Row, np.ndarray]] = Batcher(
            self.predict_batch, config.max_batch, config.max_wait_ms / 1000, config.max_queue_images
        )
        self.requests = RequestStats()

    def decode(self, name: str, upload: BinaryIO) -> Decoded:
        """The rows of one uploaded file, each with its pixels (None on error), as ``gclf predict`` decodes
        a file: copied to a temporary file first, since the Predictor reads paths."""
        with tempfile.NamedTemporaryFile(prefix="gclf-serve-") as f:
            shutil.copyfileobj(upload, f)
            f.flush()
            decoded = self.predictor.decode((0, (f.name, "")), None)
        for row, _ in decoded:
            row["path"] = name
        return decoded

    def predict_batch(self, items: list[tuple[Row, np.ndarray]]) -> None:
        """Fill in the probability and label of each row, in one model call (in the batcher's thread)."""
        self.predictor.predicted([row for row, _ in items], items)

    async def predict(self, uploads: list[UploadFile]) -> list[Row]:
        """The rows of ``uploads``, in order; :class:`ServeError` when any cannot be used or the queue is full."""
        loop = asyncio.get_running_loop()
        names = [upload.filename or f"{FIELD}{i}" for i, upload in enumerate(uploads)]
        decoded = await asyncio.gather(
            *(loop.run_in_executor(self.decoders, self.decode, name, u.file) for name, u in zip(names, uploads))
        )
        pairs = [pair for rows in decoded for pair in rows]
        failed = [row for row, _ in pairs if row["error"] and row["error"] != NO_FACE]  # no face is an answer
        if failed:
            first = failed[0]
            raise ServeError(
                status_for(first["error"]),
                f"{first['path']}: {first['error']}",
                [{"path": row["path"], "error": row["error"]} for row in failed],
            )
        try:
            await self.batcher.submit([pair for pair in pairs if pair[1] is not None])
        except QueueFull as e:
            raise busy(f"{e} (--max-queue-images)") from None
        except BatcherStopped as e:
            raise ServeError(503, f"this worker cannot predict: its batching task has stopped ({e})") from None
        return [row for row, _ in pairs]

    async def answer(self, request: Request, uploads: list[UploadFile]) -> list[Row]:
        """:meth:`predict`, given up when the client goes away (its images are not predicted) or when
        the request's deadline passes (503)."""
        remaining = request.scope[DEADLINE] - asyncio.get_running_loop().time()
        work = asyncio.ensure_future(self.predict(uploads))
        gone = asyncio.ensure_future(disconnected(request.receive))
        try:
            done, _ = await asyncio.wait({work, gone}, timeout=max(0.0, remaining), return_when="FIRST_COMPLETED")
        finally:
            gone.cancel()
            work.cancel()  # a no-op once it is done; else its decoding and its batcher items are dropped
        if work in done:
            return work.result()
        if gone in done:
            self.requests.gone += 1
            raise ClientDisconnect()
        self.requests.expired += 1
        raise busy(f"not answered within {self.config.deadline_s:g} s (--deadline-s)")

    def health(self) -> JSONResponse:
        failure = self.batcher.failure()
        if failure:
            return JSONResponse({"status": "failing", "error": f"the batching task has stopped: {failure}"}, 503)
        return JSONResponse({"status": "ok"})

    def meta(self) -> dict[str, Any]:
        predictor, config = self.predictor, self.config
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
            "limits": {
                "max_upload_mb": config.max_upload_mb,
                "max_files": config.max_files,
                "max_pixels": config.max_pixels,
                "timeout_s": config.timeout_s,
                "header_timeout_s": config.header_timeout_s,
                "deadline_s": config.deadline_s,
                "max_queue": config.max_queue,
                "max_queue_images": config.max_queue_images,
            },
            "worker": {"pid": os.getpid(), "workers": config.workers, "threads": config.threads},
            "requests": asdict(self.requests),
            "batching": {
                "max_batch": config.max_batch,
                "max_wait_ms": config.max_wait_ms,
                **asdict(self.batcher.stats),
            },
            "versions": {name: metadata.version(name) for name in VERSIONED},
        }

    def close(self) -> None:
        self.batcher.close()
        self.decoders.shutdown(wait=True, cancel_futures=True)


async def disconnected(receive: Receive) -> None:
    """Return once the client has gone away (called after the body is in: nothing else is left to come)."""
    while (await receive())["type"] != "http.disconnect":
        pass


def status_for(reason: str) -> int:
    """The HTTP status of a file :class:`Predictor` could not use, from its reason."""
    if reason == "not an image":
        return 415
    if reason.startswith("too large"):  # over the pixel limit, or a photo over gclf.faces.photos' own limit
        return 413
    return 400  # truncated, empty, too small for a face, undecodable
