"""Label image files with any gclf artifact: the :class:`Predictor` API behind ``gclf predict``.

Inputs may be image files, folders (searched recursively), globs, or CSV files listing paths. Every
input gives one row ``{path, probability, label, error}`` (with face detection, one row per face,
with its number and box: :data:`FACE_COLUMNS`): a file that cannot be used gets its reason in
``error`` and the batch goes on. Images are decoded exactly as the evaluate stage decodes
them (:func:`gclf.data.images.decode_image`), by a small thread pool that keeps decoding ahead while the
model runs on the current batch.
"""

from __future__ import annotations

import csv
import glob
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

from gclf.artifact import DYNAMIC_INT8, read_artifact_meta
from gclf.data import WORKERS
from gclf.data.formats import IMAGE_EXTENSIONS, image_files, is_image_name, visible_files
from gclf.data.images import decode_image
from gclf.data.manifest import DataError
from gclf.detect import DEFAULT_MAX_FACES, DEFAULT_MIN_FACE_SIZE, Face, FaceDetector, face_crop
from gclf.errors import UserError
from gclf.io import csv_text, dumps_json, write_text
from gclf.runtime import Runner, load_runner
from gclf.tta import predict_probs

COLUMNS = ("path", "probability", "label", "error")
FACE_COLUMNS = ("path", "face", "x", "y", "w", "h", "detection_score", "probability", "label", "error")
MIN_IMAGE_SIDE = 32  # measured (docs/faces.md): UTKFace test crops reduced to 32 px lose 4 points, to 8 px all
OUTPUT_FORMATS = (".csv", ".json")
DEFAULT_THRESHOLD = 0.5  # for checkpoints that carry no tuned threshold (models/train_phase2.pt)
DEFAULT_TTA_VIEWS = ("identity", "hflip")  # for artifacts that do not record their TTA views
PROGRESS_DELAY_S = 2.0  # the progress bar appears only on runs longer than this
GLOB_CHARACTERS = "*?["

Row = dict[str, Any]
Decoded = list[tuple[Row, "np.ndarray | None"]]  # one decoded input: its rows, each with the pixels to classify
Item = TypeVar("Item")
Result = TypeVar("Result")


# --- inputs -----------------------------------------------------------------------------------


def csv_inputs(path: str) -> list[tuple[str, str]]:
    """The paths a CSV lists, relative to its folder: its ``path`` column, or its only column.

    Returns ``(path, "")`` per listed path, or one ``(csv path, reason)`` when it lists none.
    """
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = [row for row in csv.reader(f) if any(cell.strip() for cell in row)]
    except (OSError, UnicodeDecodeError) as e:
        return [(path, f"cannot read this CSV ({type(e).__name__})")]
    header = [cell.strip().lower() for cell in rows[0]] if rows else []
    if "path" in header:
        column, rows = header.index("path"), rows[1:]
    elif len(header) == 1:  # a bare list of paths, no header
        column = 0
    elif header:
        return [(path, "CSV has several columns but none named 'path'")]
    folder = os.path.dirname(path)
    listed = [row[column].strip() for row in rows if len(row) > column and row[column].strip()]
    return [(os.path.join(folder, p), "") for p in listed] or [(path, "CSV lists no paths")]


def expand_input(item: str) -> list[tuple[str, str]]:
    """``(path, "")`` for each image ``item`` names, or one ``(item, reason)`` when it names none.

    A file is used as given (a ``.csv`` is a list of paths); folders and globs contribute the
    files with an image extension (:data:`gclf.data.formats.IMAGE_EXTENSIONS`), folders recursively.
    """
    if os.path.isdir(item):
        found = image_files(item)
        return [(p, "") for p in found] or [(item, f"folder has no images ({' '.join(IMAGE_EXTENSIONS)})")]
    if os.path.exists(item):
        return csv_inputs(item) if item.lower().endswith(".csv") else [(item, "")]
    if any(c in item for c in GLOB_CHARACTERS):
        found = []
        for match in sorted(glob.glob(item, recursive=True)):
            found += image_files(match) if os.path.isdir(match) else [match] if is_image_name(match) else []
        return [(p, "") for p in found] or [(item, "no image matches this pattern")]
    return [(item, "no such file or folder")]


def expand_inputs(items: Iterable[str | os.PathLike]) -> list[tuple[str, str]]:
    """:func:`expand_input` of every item, in order."""
    return [entry for item in items for entry in expand_input(os.fspath(item))]


def skipped_by_extension(items: Iterable[str | os.PathLike]) -> list[str]:
    """Files that the folders and globs among ``items`` hold but :func:`expand_input` leaves out,
    their extension not being an image's (files named directly are always tried)."""
    skipped = []
    for item in map(os.fspath, items):
        if os.path.isdir(item):
            skipped += [p for p in visible_files(item) if not is_image_name(p)]
        elif not os.path.exists(item) and any(c in item for c in GLOB_CHARACTERS):
            for match in sorted(glob.glob(item, recursive=True)):
                found = visible_files(match) if os.path.isdir(match) else [match]
                skipped += [p for p in found if not is_image_name(p)]
    return skipped


# --- decoding ---------------------------------------------------------------------------------


def read_image(path: str, image_size: int) -> tuple[np.ndarray | None, str]:
    """``(pixels, "")`` with (S, S, 3) uint8 pixels as evaluate decodes them, or ``(None, reason)``.

    Never raises for a bad file: one unreadable image must not stop a batch. An image under
    :data:`MIN_IMAGE_SIDE` px a side is refused: it cannot hold a face the model can tell.
    """

    def decode() -> np.ndarray:
        with Image.open(path) as image:
            if min(image.size) < MIN_IMAGE_SIDE:
                width, height = image.size
                raise DataError(f"too small for a face ({width}x{height} px; at least {MIN_IMAGE_SIDE} px a side)")
        return decode_image(path, image_size)

    return guarded(decode, path)


def guarded(read: Callable[[], Result], path: str) -> tuple[Result | None, str]:
    """``(read(), "")``, or ``(None, reason)`` when reading the file ``path`` fails."""
    try:
        if os.path.getsize(path) == 0:
            return None, "empty file"
        return read(), ""
    except DataError as e:
        return None, str(e)
    except FileNotFoundError:
        return None, "no such file"
    except IsADirectoryError:
        return None, "is a folder"
    except PermissionError:
        return None, "permission denied"
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        return None, f"too large (over {Image.MAX_IMAGE_PIXELS} pixels, PIL's decompression-bomb limit)"
    except Image.UnidentifiedImageError:
        return None, "not an image"
    except Exception as e:  # PIL raises many types on malformed files (OSError, SyntaxError, ValueError, ...)
        if "truncated" in str(e).lower():
            return None, "truncated image"
        return None, f"cannot decode ({type(e).__name__}: {' '.join(str(e).split())})"


def decoded_in_order(
    items: list[Item], decode: Callable[[Item], Result], pool: ThreadPoolExecutor, ahead: int
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
    the photo or more is found (:class:`gclf.detect.FaceDetector`, at most ``max_faces`` per photo),
    cropped like the training crops and labelled, one row per face (:data:`FACE_COLUMNS`).
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

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        """Probability of the positive class for uint8 images (N, S, S, 3), averaged over the TTA views."""
        images = torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous()  # as load_images gives evaluate

        def logits(x: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(self._runner(np.ascontiguousarray(x.numpy())))

        return predict_probs(logits, images, batch_size=len(images), views=self.views, temperature=self.temperature)

    def row(self, path: str, **fields: Any) -> Row:
        """A row of :attr:`columns` for ``path``: no prediction yet, ``fields`` filled in."""
        return {**dict.fromkeys(self.columns), "path": path, "label": "", "error": "", **fields}

    def _decode(self, numbered: tuple[int, tuple[str, str]], crops_dir: str | None) -> Decoded:
        """The rows of input number ``numbered[0]``, each with the pixels to classify (None on error)."""
        number, (path, error) = numbered
        if error:
            return [(self.row(path, error=error), None)]
        if self.detector is None:
            pixels, error = read_image(path, self.image_size)
            return [(self.row(path, error=error), pixels)]
        faces, error = guarded(lambda: self.detect(path), path)
        if faces is None or not faces:
            return [(self.row(path, error=error or "no face found"), None)]
        decoded = []
        for index, (face, pixels) in enumerate(faces):
            box = {k: round(v) for k, v in zip("xywh", (face.x, face.y, face.w, face.h))}
            row = self.row(path, face=index, detection_score=face.score, **box)
            if crops_dir:
                try:
                    Image.fromarray(pixels).save(os.path.join(crops_dir, crop_name(number, path, index)))
                except OSError as e:
                    row["error"], pixels = f"cannot save its crop ({e.strerror or e})", None
            decoded.append((row, pixels))
        return decoded

    def detect(self, path: str) -> list[tuple[Face, np.ndarray]]:
        """Every face in the photo at ``path`` (box in the whole upright photo's pixels), left to right,
        with its crop as the model takes it."""
        photo, (sx, sy), faces = self.detector.in_photo(path)
        return [(face.scaled(sx, sy), face_crop(photo, face, self.image_size)) for face in faces]

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
        """
        entries = expand_inputs([paths] if isinstance(paths, (str, os.PathLike)) else paths)
        if crops_dir is not None:
            try:
                os.makedirs(crops_dir, exist_ok=True)
            except OSError as e:
                raise UserError(f"cannot save crops to {os.fspath(crops_dir)}: {e.strerror or e}") from None
        rows: list[Row] = []
        batch: list[tuple[Row, np.ndarray]] = []
        # disable=None: no bar when stderr is not a terminal, so logs stay clean
        bar = tqdm(
            total=len(entries),
            desc="predicting",
            unit="img",
            disable=None if progress else True,
            delay=PROGRESS_DELAY_S,
        )
        with warnings.catch_warnings(), ThreadPoolExecutor(WORKERS) as pool, bar:
            # PIL only warns between 1x and 2x its pixel limit; as an error, every image over the
            # limit is refused alike. Photos for detection have their own limit (gclf.photos).
            # Set around the whole pool, since warning filters are global.
            bomb = "ignore" if self.detector else "error"
            warnings.simplefilter(bomb, Image.DecompressionBombWarning)  # type: ignore[arg-type]
            decode = lambda entry: self._decode(entry, None if crops_dir is None else os.fspath(crops_dir))  # noqa: E731
            for decoded in decoded_in_order(list(enumerate(entries)), decode, pool, ahead=2 * self.batch_size):
                for row, pixels in decoded:
                    rows.append(row)
                    if pixels is not None:
                        batch.append((row, pixels))
                if len(batch) >= self.batch_size:
                    self._fill(batch)
                    batch = []
                bar.update()
            if batch:
                self._fill(batch)
        return rows

    def _fill(self, batch: list[tuple[Row, np.ndarray]]) -> None:
        """Predict ``batch`` (row, pixels) into its rows."""
        probs = self.probabilities(np.stack([pixels for _, pixels in batch]))
        positive = probs >= self.threshold  # on the float32 array, exactly as evaluate compares
        for (row, _), prob, is_positive in zip(batch, probs, positive):
            row.update(probability=float(prob), label=self.classes[int(is_positive)])


def crop_name(number: int, path: str, face: int) -> str:
    """File name of a saved face crop: the input's number (so no two inputs share a name), the
    photo's path made flat (its last 150 characters), and the face's number
    (input 3, ``photos/party.jpg``, face 0 -> ``0003_photos_party.jpg.face0.png``)."""
    flat = "_".join(part for part in Path(path).parts if part not in ("/", "..", ".")).replace(":", "_")
    return f"{number:04d}_{flat[-150:]}.face{face}.png"


# --- output -----------------------------------------------------------------------------------


def output_format(path: str) -> str:
    """``.csv`` or ``.json``, from the output file's name."""
    suffix = Path(path).suffix.lower()
    if suffix not in OUTPUT_FORMATS:
        raise UserError(f"--out {path}: use a .csv or .json file name")
    return suffix


def cell(column: str, value: Any) -> str:
    """A CSV cell: empty for None, 6 decimals for a probability, 4 for a detection score."""
    if value is None:
        return ""
    if column == "probability":
        return f"{value:.6f}"
    if column == "detection_score":
        return f"{value:.4f}"
    return str(value)


def rows_csv(rows: list[Row], columns: Iterable[str] = COLUMNS) -> str:
    """Rows as CSV with ``columns`` (:data:`COLUMNS`, or :data:`FACE_COLUMNS`); empty cells for None."""
    columns = list(columns)
    return csv_text(columns, ([cell(c, row[c]) for c in columns] for row in rows))


def write_rows(rows: list[Row], path: str, columns: Iterable[str] = COLUMNS) -> None:
    """Write rows to ``path`` (``.csv``, or ``.json``: a list of objects, null where a value is missing)."""
    columns = list(columns)
    if output_format(path) == ".json":
        write_text(path, dumps_json([{c: row[c] for c in columns} for row in rows], digits=6))
    else:
        write_text(path, rows_csv(rows, columns))
