"""The typed bodies of ``gclf serve``'s answers, from which FastAPI writes the OpenAPI description.

A prediction row has the columns of ``gclf predict`` (:data:`gclf.deploy.predict.COLUMNS`, or
:data:`~gclf.deploy.predict.FACE_COLUMNS` with face detection) in their order, so its model is
made from those columns and :data:`ROW_FIELDS`, the type and meaning of each.
"""

from __future__ import annotations

from typing import Any, Literal, Sequence

from pydantic import BaseModel, Field, create_model

ROW_FIELDS: dict[str, tuple[Any, str]] = {
    "path": (str, "the uploaded file's name"),
    "face": (int | None, "the face's number in its photo, left to right (null when none was found)"),
    "x": (int | None, "the face box's left edge, in pixels of the upright photo"),
    "y": (int | None, "the face box's top edge"),
    "w": (int | None, "the face box's width"),
    "h": (int | None, "the face box's height"),
    "detection_score": (float | None, "the face detector's confidence"),
    "probability": (float | None, "calibrated probability of the positive class (female); null on error"),
    "label": (str, "the class at the decision threshold: male or female; empty on error"),
    "aligned": (bool | None, "whether the face was aligned from its landmarks before it was classified; null on error"),
    "error": (str, "why there is no prediction (for example 'no face found'); empty when there is one"),
}


def prediction_model(columns: Sequence[str]) -> type[BaseModel]:
    """The body of a ``POST /predict`` answer whose rows have ``columns``."""
    fields = {name: (ROW_FIELDS[name][0], Field(description=ROW_FIELDS[name][1])) for name in columns}
    row = create_model("FaceRow" if "face" in columns else "Row", **fields)  # type: ignore[call-overload]
    return create_model(
        "Prediction",
        rows=(list[row], Field(description="one row per image (per face with --detect-faces), in the order sent")),
    )


class FileError(BaseModel):
    path: str = Field(description="the uploaded file's name")
    error: str = Field(description="why it cannot be used")


class Error(BaseModel):
    """Every refusal's body."""

    error: str = Field(description="what went wrong, in one line")
    files: list[FileError] | None = Field(None, description="the files at fault, when files are")


class Health(BaseModel):
    status: Literal["ok", "failing"]
    error: str = Field("", description="why the worker cannot predict (empty when it can)")


class Limits(BaseModel):
    max_upload_mb: float
    max_files: int
    max_pixels: int
    timeout_s: float = Field(description="the body must have arrived this long after the headers")
    header_timeout_s: float = Field(description="the headers must have arrived this long after the request began")
    deadline_s: float = Field(description="a request not answered this long after its headers gets 503")
    max_queue: int = Field(description="requests admitted at once by each worker")
    max_queue_images: int = Field(description="images waiting for the model in each worker")


class Worker(BaseModel):
    pid: int
    workers: int
    threads: int


class Requests(BaseModel):
    """This worker's ``POST /predict`` requests so far."""

    in_flight: int
    refused: int = Field(description="503 at once: the queue was full")
    expired: int = Field(description="503 at the deadline")
    gone: int = Field(description="the client went away; its work was dropped")


class Batching(BaseModel):
    """This worker's model calls so far."""

    max_batch: int
    max_wait_ms: float
    batches: int
    images: int
    largest: int
    dropped: int = Field(description="images given up by their request before the model ran")
    refused: int = Field(description="images refused because the model's queue was full")


class Meta(BaseModel):
    model: str
    arch: str | None
    image_size: int
    classes: list[str]
    threshold: float
    threshold_source: Literal["argument", "artifact", "default"]
    temperature: float
    tta_views: list[str]
    quantization: str | None
    detect_faces: bool
    columns: list[str]
    limits: Limits
    worker: Worker
    requests: Requests
    batching: Batching
    versions: dict[str, str]
