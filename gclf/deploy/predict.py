"""Label image files with any gclf artifact: the :class:`Predictor` API behind ``gclf predict``.

Inputs may be image files, folders (searched recursively), globs, or CSV files listing paths. Every
input gives one row ``{path, probability, label, aligned, error}`` (with face detection, one row per
face, with its number and box: :data:`FACE_COLUMNS`): a file that cannot be used gets its reason in
``error`` and the batch goes on. Each face is aligned to a UTKFace-like chip where dlib's landmark
model is installed (:mod:`gclf.faces.align`; ``align=False`` turns it off); unaligned, images are
decoded exactly as the evaluate stage decodes them (:func:`gclf.data.images.decode_image`). A small
thread pool keeps decoding ahead while the model runs on the current batch. Inputs are expanded
lazily and rows written as each batch ends, so memory stays bounded for any number of inputs; a
killed run is resumed from its output file (:func:`gclf.deploy.rows.resume_output`), and the inputs can be
split between machines (:func:`gclf.deploy.inputs.in_shard`).
"""

from __future__ import annotations

import os
import warnings
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, TypeVar

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from gclf.data import WORKERS
from gclf.deploy.inputs import Inputs
from gclf.deploy.rows import NO_FACE, Row
from gclf.errors import UserError
from gclf.export.artifact import DYNAMIC_INT8, read_artifact_meta
from gclf.export.runtime import Runner, load_runner
from gclf.faces.align import landmark_box, requested_aligner
from gclf.faces.detect import DEFAULT_MAX_FACES, DEFAULT_MIN_FACE_SIZE, Face, FaceDetector, crop_square, face_crop
from gclf.faces.read import guarded, read_image
from gclf.tta import predict_probs

COLUMNS = ("path", "probability", "label", "aligned", "error")
FACE_COLUMNS = ("path", "face", "x", "y", "w", "h", "detection_score", "probability", "label", "aligned", "error")
DEFAULT_THRESHOLD = 0.5  # for checkpoints that carry no tuned threshold (models/train_phase2.pt)
DEFAULT_TTA_VIEWS = ("identity", "hflip")  # for artifacts that do not record their TTA views
PROGRESS_DELAY_S = 2.0  # the progress bar appears only on runs longer than this

Decoded = list[tuple[Row, "np.ndarray | None"]]  # one decoded input: its rows, each with the pixels to classify
Item = TypeVar("Item")
Result = TypeVar("Result")


# --- decoding ---------------------------------------------------------------------------------


def decoded_in_order(
    items: Iterable[Item], decode: Callable[[Item], Result], pool: ThreadPoolExecutor, ahead: int
) -> Iterator[Result]:
    """``decode(item)`` for each item, in order, with up to ``ahead`` items decoding in ``pool``
    meanwhile: the model runs on one batch while the next is decoded, and memory stays bounded."""
    pending: deque[Future] = deque()
    for item in items:
        pending.append(pool.submit(decode, item))
        if len(pending) > ahead:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


# --- the predictor ----------------------------------------------------------------------------


def one_image_per_call(runner: Runner) -> Runner:
    """``runner`` called on each image alone.

    Dynamic INT8 quantizes activations with the range of the whole batch, so an image's
    prediction would change with the other images in its batch; alone, it depends on the image
    only, as the quantize stage scores this artifact.
    """
    return lambda pixels: np.concatenate([runner(pixels[i : i + 1]) for i in range(len(pixels))])


class Predictor:
    """Any gclf artifact (``.pt`` FP32 or dynamic INT8, ``.onnx``, OpenVINO ``.xml``) as an image labeller.

    Everything inference needs (image size, classes, temperature, threshold, TTA views) comes from the artifact;
    ``threshold`` overrides the artifact's. ``threshold_source`` says where the threshold came
    from: ``"argument"``, ``"artifact"``, or ``"default"`` (0.5, for a checkpoint without one).
    With ``detect_faces``, inputs are photos: every face whose crop is about ``min_face_size`` px of
    the photo or more is found (:class:`gclf.faces.detect.FaceDetector`, at most ``max_faces`` per photo),
    cropped like the training crops and labelled, one row per face (:data:`FACE_COLUMNS`).
    ``align``: None aligns each face where the landmark model is installed, True requires it,
    False never aligns (:func:`gclf.faces.align.requested_aligner`); rows say which (``aligned``).
    """

    def __init__(
        self,
        model_path: str | os.PathLike,
        threads: int = 2,
        tta: bool = False,
        threshold: float | None = None,
        batch_size: int = 32,
        detect_faces: bool = False,
        min_face_size: int = DEFAULT_MIN_FACE_SIZE,
        max_faces: int = DEFAULT_MAX_FACES,
        align: bool | None = None,
    ):
        if threads < 1 or batch_size < 1 or max_faces < 1 or min_face_size < 1:
            raise UserError(
                "threads, batch size, max faces and min face size must be at least 1, got "
                f"{threads}, {batch_size}, {max_faces} and {min_face_size}"
            )
        if threshold is not None and not 0.0 <= threshold <= 1.0:
            raise UserError(f"threshold must be between 0 and 1, got {threshold}")
        self.model_path = os.fspath(model_path)
        self.meta = read_artifact_meta(self.model_path)
        self.image_size = int(self.meta["image_size"])
        self.classes = list(self.meta["classes"])
        self.views = tuple(self.meta.get("tta_views", DEFAULT_TTA_VIEWS)) if tta else ("identity",)
        stored = self.meta.get("tta_threshold" if tta else "threshold")
        if threshold is not None:
            self.threshold, self.threshold_source = float(threshold), "argument"
        elif stored is not None:
            self.threshold, self.threshold_source = float(stored), "artifact"
        else:
            self.threshold, self.threshold_source = DEFAULT_THRESHOLD, "default"
        self.temperature = float(self.meta.get("temperature", 1.0))  # 1: an artifact made before calibration
        self.batch_size = batch_size
        runner = load_runner(self.model_path, threads)
        self._runner = one_image_per_call(runner) if self.meta.get("quantization") == DYNAMIC_INT8 else runner
        self.detector = (
            FaceDetector(threads, min_face_size=min_face_size, max_faces=max_faces) if detect_faces else None
        )
        self.columns = FACE_COLUMNS if detect_faces else COLUMNS
        self.aligner = requested_aligner(align)

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        """Probability of the positive class for uint8 images (N, S, S, 3), averaged over the TTA views."""
        images = torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous()  # as load_images gives evaluate

        def logits(x: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(self._runner(np.ascontiguousarray(x.numpy())))

        return predict_probs(logits, images, batch_size=len(images), views=self.views, temperature=self.temperature)

    def row(self, path: str, **fields: Any) -> Row:
        """A row of :attr:`columns` for ``path``: no prediction yet, ``fields`` filled in."""
        return {**dict.fromkeys(self.columns), "path": path, "label": "", "error": "", **fields}

    def decode(self, numbered: tuple[int, tuple[str, str]], crops_dir: str | None) -> Decoded:
        """The rows of input number ``numbered[0]``, each with the pixels to classify (None on error)."""
        number, (path, error) = numbered
        if error:
            return [(self.row(path, error=error), None)]
        aligned = self.aligner is not None
        if self.detector is None:
            pixels, error = read_image(path, self.image_size, self.aligner)
            return [(self.row(path, error=error, aligned=None if error else aligned), pixels)]
        faces, error = guarded(lambda: self.detect(path), path)
        if faces is None or not faces:
            return [(self.row(path, error=error or NO_FACE), None)]
        decoded = []
        for index, (face, pixels) in enumerate(faces):
            box = {k: round(v) for k, v in zip("xywh", (face.x, face.y, face.w, face.h))}
            row = self.row(path, face=index, detection_score=face.score, aligned=aligned, **box)
            if crops_dir:
                try:
                    Image.fromarray(pixels).save(os.path.join(crops_dir, crop_name(number, path, index)))
                except OSError as e:
                    row["error"], pixels = f"cannot save its crop ({e.strerror or e})", None
            decoded.append((row, pixels))
        return decoded

    def detect(self, path: str) -> list[tuple[Face, np.ndarray]]:
        """Every face in the photo at ``path`` (box in the whole upright photo's pixels), left to right,
        with its crop as the model takes it: aligned from the landmarks in its crop square, or the
        crop square itself, levelled (:func:`gclf.faces.detect.face_crop`)."""
        photo, (sx, sy), faces = self.detector.in_photo(path)
        if self.aligner is None:
            return [(face.scaled(sx, sy), face_crop(photo, face, self.image_size)) for face in faces]
        pixels = np.asarray(photo)
        return [
            (face.scaled(sx, sy), self.aligner.face_pixels(pixels, self.image_size, landmark_box(*crop_square(face))))
            for face in faces
        ]

    def predict(
        self,
        paths: str | os.PathLike | Iterable[str | os.PathLike],
        progress: bool = False,
        crops_dir: str | os.PathLike | None = None,
    ) -> list[Row]:
        """One row per image that ``paths`` name (one per face with ``detect_faces``), in order.

        ``paths`` may hold image files, folders (recursive), globs and CSV files of paths (or be
        one of them). A row with an ``error`` has probability None and label ""; an input naming
        no image gets one. ``crops_dir``: where to save each face crop (:func:`crop_name`).
        For any number of inputs, :meth:`stream` the rows instead.
        """
        return [row for rows in self.stream(paths, progress, crops_dir) for row in rows]

    def stream(
        self,
        paths: str | os.PathLike | Iterable[str | os.PathLike] | Inputs,
        progress: bool = False,
        crops_dir: str | os.PathLike | None = None,
        keep: Callable[[str], bool] | None = None,
    ) -> Iterator[list[Row]]:
        """The rows of :meth:`predict`, in order, a list each time a batch is predicted; memory stays
        bounded whatever the number of inputs. ``keep(path)`` False skips that input (no row, not
        decoded): :func:`selected` gives one for a shard and for the inputs an earlier run did.
        A batch is predicted once ``batch_size`` rows wait, errors included, so no row waits long.
        """
        inputs = paths if isinstance(paths, Inputs) else Inputs(paths)
        if crops_dir is not None:
            try:
                os.makedirs(crops_dir, exist_ok=True)
            except OSError as e:
                raise UserError(f"cannot save crops to {os.fspath(crops_dir)}: {e.strerror or e}") from None
        # numbered before keep: a face crop's name is the same in every shard and resumed run
        numbered = (entry for entry in enumerate(inputs) if keep is None or keep(entry[1][0]))
        rows: list[Row] = []
        batch: list[tuple[Row, np.ndarray]] = []
        # disable=None: no bar when stderr is not a terminal, so logs stay clean
        bar = tqdm(desc="predicting", unit="img", disable=None if progress else True, delay=PROGRESS_DELAY_S)
        with warnings.catch_warnings(), ThreadPoolExecutor(WORKERS) as pool, bar:
            # PIL only warns between 1x and 2x its pixel limit; as an error, every image over the
            # limit is refused alike. Photos for detection have their own limit (gclf.faces.photos).
            # Set around the whole pool, since warning filters are global.
            bomb = "ignore" if self.detector else "error"
            warnings.simplefilter(bomb, Image.DecompressionBombWarning)  # type: ignore[arg-type]
            decode = lambda entry: self.decode(entry, None if crops_dir is None else os.fspath(crops_dir))  # noqa: E731
            for decoded in decoded_in_order(numbered, decode, pool, ahead=2 * self.batch_size):
                for row, pixels in decoded:
                    rows.append(row)
                    if pixels is not None:
                        batch.append((row, pixels))
                bar.update()
                if len(rows) >= self.batch_size:
                    yield self.predicted(rows, batch)
                    rows, batch = [], []
            if rows:
                yield self.predicted(rows, batch)

    def predicted(self, rows: list[Row], batch: list[tuple[Row, np.ndarray]]) -> list[Row]:
        """``rows``, with the images of ``batch`` (row, pixels), which are among them, predicted."""
        if batch:
            probs = self.probabilities(np.stack([pixels for _, pixels in batch]))
            positive = probs.astype(np.float64) >= self.threshold  # in float64, as evaluate and the sweep compare
            for (row, _), prob, is_positive in zip(batch, probs, positive):
                row.update(probability=float(prob), label=self.classes[int(is_positive)])
        return rows


def crop_name(number: int, path: str, face: int) -> str:
    """File name of a saved face crop: the input's number (so no two inputs share a name), the
    photo's path made flat (its last 150 characters), and the face's number
    (input 3, ``photos/party.jpg``, face 0 -> ``0003_photos_party.jpg.face0.png``)."""
    flat = "_".join(part for part in Path(path).parts if part not in ("/", "..", ".")).replace(":", "_")
    return f"{number:04d}_{flat[-150:]}.face{face}.png"
