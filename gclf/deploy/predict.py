"""Label image files with any gclf artifact: the :class:`Predictor` API behind ``gclf predict``.

Inputs may be image files, folders (searched recursively), globs, or CSV files listing paths. Every
input gives one row ``{path, probability, label, aligned, error}`` (with face detection, one row per
face, with its number and box: :data:`FACE_COLUMNS`): a file that cannot be used gets its reason in
``error`` and the batch goes on. Each face is aligned to a UTKFace-like chip where dlib's landmark
model is installed (:mod:`gclf.faces.align`; ``align=False`` turns it off); unaligned, images are
decoded exactly as the evaluate stage decodes them (:func:`gclf.data.images.decode_image`). A small
thread pool keeps decoding ahead while the model runs on the current batch. Inputs are expanded
lazily and rows written as each batch ends, so memory stays bounded for any number of inputs; a
killed run is resumed from its output file (:func:`resume_output`), and the inputs can be split
between machines (:func:`in_shard`).
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import json
import os
import sys
import textwrap
import warnings
from collections import Counter, deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable, Iterator, Sequence, TextIO, TypeVar

import numpy as np
import torch
from PIL import Image, ImageOps
from tqdm import tqdm

from gclf.artifact import DYNAMIC_INT8, read_artifact_meta
from gclf.data import WORKERS
from gclf.data.formats import GLOB_CHARACTERS, IMAGE_EXTENSIONS, glob_files, is_image_name, walk_files
from gclf.data.images import decode_image, to_rgb
from gclf.data.manifest import DataError
from gclf.detect import DEFAULT_MAX_FACES, DEFAULT_MIN_FACE_SIZE, Face, FaceDetector, crop_square, face_crop
from gclf.errors import UserError
from gclf.faces.align import Aligner, landmark_box, requested_aligner
from gclf.io import atomic_write, dumps_json
from gclf.runtime import Runner, load_runner
from gclf.tta import predict_probs

COLUMNS = ("path", "probability", "label", "aligned", "error")
FACE_COLUMNS = ("path", "face", "x", "y", "w", "h", "detection_score", "probability", "label", "aligned", "error")
MIN_IMAGE_SIDE = 32  # measured (docs/faces.md): UTKFace test crops reduced to 32 px lose 4 points, to 8 px all
OUTPUT_FORMATS = (".csv", ".jsonl", ".json")
RESUMABLE_FORMATS = (".csv", ".jsonl")  # written a row at a time; a .json array is written whole at the end
NO_FACE = "no face found"
DEFAULT_THRESHOLD = 0.5  # for checkpoints that carry no tuned threshold (models/train_phase2.pt)
DEFAULT_TTA_VIEWS = ("identity", "hflip")  # for artifacts that do not record their TTA views
PROGRESS_DELAY_S = 2.0  # the progress bar appears only on runs longer than this

Row = dict[str, Any]
Decoded = list[tuple[Row, "np.ndarray | None"]]  # one decoded input: its rows, each with the pixels to classify
Item = TypeVar("Item")
Result = TypeVar("Result")


# --- inputs -----------------------------------------------------------------------------------


class Inputs:
    """The inputs that ``items`` name, expanded lazily: ``(path, "")`` for each image, in order, or one
    ``(item, reason)`` for an item that names none.

    A file is used as given (a ``.csv`` is a list of paths, :func:`csv_inputs`); folders (recursively)
    and globs contribute the files with an image extension (:data:`gclf.data.formats.IMAGE_EXTENSIONS`).
    Folders, and globs (:func:`gclf.data.formats.glob_files`: each file once, by the folder walk's
    rule, symlinked folders not followed), are walked one directory at a time and CSVs read a line
    at a time, so a million inputs are never all in memory. ``skipped`` counts, so far, the files
    that folders and globs left out for their extension.
    """

    def __init__(self, items: str | os.PathLike | Iterable[str | os.PathLike]):
        self.items = [items] if isinstance(items, (str, os.PathLike)) else items  # a generator is read as needed
        self.skipped = 0

    def __iter__(self) -> Iterator[tuple[str, str]]:
        for item in self.items:
            yield from self.expand(os.fspath(item))

    def expand(self, item: str) -> Iterator[tuple[str, str]]:
        if os.path.isdir(item):
            yield from or_else(
                self.images(walk_files(item)), (item, f"folder has no images ({' '.join(IMAGE_EXTENSIONS)})")
            )
        elif os.path.exists(item):
            yield from csv_inputs(item) if item.lower().endswith(".csv") else [(item, "")]
        elif any(c in item for c in GLOB_CHARACTERS):
            yield from or_else(self.images(glob_files(item)), (item, "no image matches this pattern"))
        else:
            yield item, "no such file or folder"

    def images(self, files: Iterable[str]) -> Iterator[tuple[str, str]]:
        """``(path, "")`` for the image files among ``files``; the others are counted in ``skipped``."""
        for path in files:
            if is_image_name(path):
                yield path, ""
            else:
                self.skipped += 1


def or_else(entries: Iterable[Item], otherwise: Item) -> Iterator[Item]:
    """``entries``, or ``otherwise`` alone when there are none."""
    empty = True
    for entry in entries:
        empty = False
        yield entry
    if empty:
        yield otherwise


def csv_inputs(path: str) -> Iterator[tuple[str, str]]:
    """The paths a CSV lists, relative to its folder: its ``path`` column, or its only column.

    Yields ``(path, "")`` per listed path, or one ``(csv path, reason)`` when it lists none or
    cannot be read from some line on.
    """
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = (row for row in csv.reader(f) if any(cell.strip() for cell in row))
            first = next(rows, None)
            header = [cell.strip().lower() for cell in first] if first else []
            if "path" in header:
                column = header.index("path")
            elif len(header) == 1:  # a bare list of paths, no header
                column, rows = 0, itertools.chain([first], rows)
            elif header:
                yield path, "CSV has several columns but none named 'path'"
                return
            folder = os.path.dirname(path)
            listed = (row[column].strip() for row in rows if len(row) > column and row[column].strip())
            yield from or_else(((os.path.join(folder, p), "") for p in listed), (path, "CSV lists no paths"))
    except (OSError, UnicodeDecodeError) as e:
        yield path, f"cannot read this CSV ({type(e).__name__})"


def in_shard(path: str, shard: int, shards: int) -> bool:
    """Whether the input ``path`` (as written) falls in shard ``shard`` of ``shards`` (1-based): by a
    stable hash of the path, so every machine splits the same inputs alike, whatever their order."""
    digest = hashlib.blake2b(path.encode("utf-8", "surrogateescape"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % shards == shard - 1


def selected(shard: tuple[int, int] | None, done: Counter[str]) -> Callable[[str], bool]:
    """``keep`` for :meth:`Predictor.stream`: the inputs of ``shard`` (K, N) that are not ``done``.
    Call it once per input, in order: a path listed twice is done as many times as ``done`` counts."""

    def keep(path: str) -> bool:
        if shard is not None and not in_shard(path, *shard):
            return False
        if done[path]:
            done[path] -= 1
            return False
        return True

    return keep


# --- decoding ---------------------------------------------------------------------------------


def read_image(path: str, image_size: int, aligner: Aligner | None = None) -> tuple[np.ndarray | None, str]:
    """``(pixels, "")`` with (S, S, 3) uint8 pixels as evaluate decodes them (with an ``aligner``: the
    face crop aligned, :meth:`gclf.faces.align.Aligner.face_pixels`), or ``(None, reason)``.

    Never raises for a bad file: one unreadable image must not stop a batch. An image under
    :data:`MIN_IMAGE_SIDE` px a side is refused: it cannot hold a face the model can tell.
    """

    def decode() -> np.ndarray:
        with Image.open(path) as image:
            if min(image.size) < MIN_IMAGE_SIDE:
                width, height = image.size
                raise DataError(f"too small for a face ({width}x{height} px; at least {MIN_IMAGE_SIDE} px a side)")
            if aligner is not None:
                return aligner.face_pixels(np.asarray(to_rgb(ImageOps.exif_transpose(image))), image_size)
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
    the photo or more is found (:class:`gclf.detect.FaceDetector`, at most ``max_faces`` per photo),
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
        crop square itself, levelled (:func:`gclf.detect.face_crop`)."""
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
            # limit is refused alike. Photos for detection have their own limit (gclf.photos).
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


# --- output -----------------------------------------------------------------------------------


def output_format(path: str, resume: bool = False) -> str:
    """``.csv``, ``.jsonl`` or ``.json``, from the output file's name; ``resume`` needs one written as it goes."""
    suffix = Path(path).suffix.lower()
    if suffix not in OUTPUT_FORMATS:
        raise UserError(f"--out {path}: use a .csv, .jsonl or .json file name")
    if resume and suffix not in RESUMABLE_FORMATS:
        raise UserError(f"--resume: {path} is a JSON array, written whole at the end; use .csv or .jsonl")
    return suffix


def cell(column: str, value: Any) -> str:
    """A CSV cell: empty for None, 6 decimals for a probability, 4 for a detection score, ``true`` or
    ``false`` as in JSON."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if column == "probability":
        return f"{value:.6f}"
    if column == "detection_score":
        return f"{value:.4f}"
    return str(value)


def json_row(row: Row, columns: Sequence[str]) -> dict[str, Any]:
    """``row``'s ``columns``, floats to 6 decimals, None as null."""
    return {c: round(row[c], 6) if isinstance(row[c], float) else row[c] for c in columns}


def write_rows(chunks: Iterable[list[Row]], out: str | None, columns: Sequence[str], append: bool = False) -> None:
    """Write each list of rows as it comes (:meth:`Predictor.stream`) and flush it, so a killed run
    keeps the rows it wrote: to ``out`` (``.csv`` with a header; ``.jsonl``, one JSON object a line;
    added to the end with ``append``), or as CSV to stdout. A ``.json`` file, one array, appears
    only when the run ends, written whole as :func:`gclf.io.atomic_write` does."""
    if out is None:
        write_csv(sys.stdout, chunks, columns, header=True)
    elif output_format(out) == ".json":
        atomic_write(out, lambda tmp: write_json_array(tmp, chunks, columns))
    else:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        with open(out, "a" if append else "w", encoding="utf-8", newline="") as f:
            if output_format(out) == ".csv":
                write_csv(f, chunks, columns, header=f.tell() == 0)
            else:
                for rows in chunks:
                    f.writelines(json.dumps(json_row(row, columns)) + "\n" for row in rows)
                    f.flush()


def write_csv(f: TextIO, chunks: Iterable[list[Row]], columns: Sequence[str], header: bool) -> None:
    writer = csv.writer(f, lineterminator="\n")
    if header:
        writer.writerow(columns)
    for rows in chunks:
        writer.writerows([cell(c, row[c]) for c in columns] for row in rows)
        f.flush()


def write_json_array(path: str, chunks: Iterable[list[Row]], columns: Sequence[str]) -> None:
    """The rows as one JSON array, as :func:`gclf.io.dumps_json` writes a list (keys sorted)."""
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        opening = "[\n"
        for rows in chunks:
            for row in rows:
                f.write(opening + textwrap.indent(dumps_json(json_row(row, columns), digits=6).rstrip("\n"), "  "))
                opening = ",\n"
        f.write("[]\n" if opening == "[\n" else "\n]\n")


# --- resuming ---------------------------------------------------------------------------------


@dataclass
class Tally:
    """Rows counted as they pass: what ``gclf predict`` reports and its exit code."""

    rows: int = 0
    failed: int = 0
    no_face: int = 0  # photos searched in vain (--detect-faces)
    photos: int = 0  # inputs with a predicted row
    first_failure: Row | None = None
    last_predicted: str | None = None  # the path of the last predicted row: its further faces are one photo

    def add(self, row: Row) -> None:
        self.rows += 1
        if row["error"]:
            self.failed += 1
            self.no_face += row["error"] == NO_FACE
            self.first_failure = self.first_failure or row
        elif row["path"] != self.last_predicted:
            self.photos += 1
            self.last_predicted = row["path"]


def resume_output(path: str, columns: Sequence[str]) -> tuple[Counter[str], Tally]:
    """Make the output ``path`` of an earlier, killed run ready to be added to, and say what it holds.

    Its rows are kept except those of its last input, which are cut off to be done again: a kill
    may have torn the last line, or fallen between two faces of one photo (--detect-faces). Returns
    how many times each path was done, for :func:`selected`, and the kept rows' :class:`Tally`.
    A missing file holds nothing; a file of other rows stops with a :class:`UserError`.
    """
    done: Counter[str] = Counter()
    tally = Tally()
    if not os.path.exists(path):
        return done, tally
    with open(path, "rb+") as f:
        keep, input_rows = 0, []  # where the rows of the last input read start, and those rows
        for start, row in output_rows(f, path, columns):
            if not input_rows or row.get("face") in (None, "", 0, "0") or row["path"] != input_rows[0]["path"]:
                if input_rows:
                    done[input_rows[0]["path"]] += 1
                    for kept in input_rows:
                        tally.add(kept)
                keep, input_rows = start, []
            input_rows.append(row)
        f.truncate(keep)  # with no row, the header goes too and is written again
    return done, tally


def output_rows(f: BinaryIO, path: str, columns: Sequence[str]) -> Iterator[tuple[int, Row]]:
    """``(offset, row)`` of each whole row in the ``.csv`` or ``.jsonl`` output ``f`` (its CSV header
    must be ``columns``); a line that is no such row stops with a :class:`UserError`."""
    is_csv = output_format(path, resume=True) == ".csv"
    lines = complete_lines(f)
    if is_csv:
        header = next(lines, None)
        if header is not None and read_row(header[1], columns, is_csv) != dict(zip(columns, columns)):
            raise not_our_rows(path, columns, 0)  # read as a row, the header holds each column's name
    for start, line in lines:
        row = read_row(line, columns, is_csv)
        if row is None:
            raise not_our_rows(path, columns, start)
        yield start, row


def read_row(line: bytes, columns: Sequence[str], is_csv: bool) -> Row | None:
    """A line of a ``.csv`` or ``.jsonl`` output as a row (CSV cells as strings), or None when it is none."""
    try:
        row = dict(zip(columns, next(csv.reader([line.decode("utf-8")])), strict=True)) if is_csv else json.loads(line)
    except ValueError:  # undecodable bytes, a CSV line of another length, not JSON
        return None
    return row if isinstance(row, dict) and sorted(row) == sorted(columns) else None


def not_our_rows(path: str, columns: Sequence[str], offset: int) -> UserError:
    return UserError(
        f"--resume: {path} holds other than rows of {','.join(columns)} (at byte {offset}); "
        "was it written with other options (--detect-faces)?"
    )


def complete_lines(f: BinaryIO) -> Iterator[tuple[int, bytes]]:
    """``(offset, line)`` of each line of ``f`` up to a last one a kill left without its newline."""
    offset = 0
    for line in f:
        if not line.endswith(b"\n"):
            return
        yield offset, line
        offset += len(line)
