"""Label image files with any gclf artifact: the :class:`Predictor` API behind ``gclf predict``.

Inputs may be image files, folders (searched recursively), globs, or CSV files listing paths. Every
input gives one row ``{path, probability, label, error}``: a file that cannot be used gets its
reason in ``error`` and the batch goes on. Images are decoded exactly as the evaluate stage decodes
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
from gclf.data.formats import IMAGE_EXTENSIONS, image_files, is_image_name
from gclf.data.images import decode_image
from gclf.errors import UserError
from gclf.io import csv_text, dumps_json, write_text
from gclf.runtime import Runner, load_runner
from gclf.tta import predict_probs

COLUMNS = ("path", "probability", "label", "error")
OUTPUT_FORMATS = (".csv", ".json")
DEFAULT_THRESHOLD = 0.5  # for checkpoints that carry no tuned threshold (models/train_phase2.pt)
DEFAULT_TTA_VIEWS = ("identity", "hflip")  # for artifacts that do not record their TTA views
PROGRESS_DELAY_S = 2.0  # the progress bar appears only on runs longer than this
GLOB_CHARACTERS = "*?["

Row = dict[str, Any]
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


# --- decoding ---------------------------------------------------------------------------------


def read_image(path: str, image_size: int) -> tuple[np.ndarray | None, str]:
    """``(pixels, "")`` with (S, S, 3) uint8 pixels as evaluate decodes them, or ``(None, reason)``.

    Never raises for a bad file: one unreadable image must not stop a batch.
    """
    try:
        if os.path.getsize(path) == 0:
            return None, "empty file"
        return decode_image(path, image_size), ""
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
    """

    def __init__(
        self,
        model_path: str | os.PathLike,
        threads: int = 2,
        tta: bool = False,
        threshold: float | None = None,
        batch_size: int = 32,
    ):
        if threads < 1 or batch_size < 1:
            raise UserError(f"threads and batch size must be at least 1, got {threads} and {batch_size}")
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

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        """Probability of the positive class for uint8 images (N, S, S, 3), averaged over the TTA views."""
        images = torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous()  # as load_images gives evaluate

        def logits(x: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(self._runner(np.ascontiguousarray(x.numpy())))

        return predict_probs(logits, images, batch_size=len(images), views=self.views, temperature=self.temperature)

    def _decode(self, entry: tuple[str, str]) -> tuple[np.ndarray | None, str]:
        path, error = entry
        return (None, error) if error else read_image(path, self.image_size)

    def predict(self, paths: str | os.PathLike | Iterable[str | os.PathLike], progress: bool = False) -> list[Row]:
        """One row ``{path, probability, label, error}`` per image that ``paths`` name, in order.

        ``paths`` may hold image files, folders (recursive), globs and CSV files of paths (or be
        one of them). A row
        with an ``error`` has probability None and label ""; an input naming no image gets one.
        """
        entries = expand_inputs([paths] if isinstance(paths, (str, os.PathLike)) else paths)
        rows: list[Row] = [{"path": path, "probability": None, "label": "", "error": ""} for path, _ in entries]
        batch: list[tuple[int, np.ndarray]] = []
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
            # limit is refused alike. Set around the whole pool, since warning filters are global.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            decoded = decoded_in_order(entries, self._decode, pool, ahead=2 * self.batch_size)
            for index, (pixels, error) in enumerate(decoded):
                if pixels is None:
                    rows[index]["error"] = error
                    bar.update()
                else:
                    batch.append((index, pixels))
                if len(batch) == self.batch_size or (batch and index == len(entries) - 1):
                    self._fill(rows, batch)
                    bar.update(len(batch))
                    batch = []
        return rows

    def _fill(self, rows: list[Row], batch: list[tuple[int, np.ndarray]]) -> None:
        """Predict ``batch`` (row index, pixels) into ``rows``."""
        probs = self.probabilities(np.stack([pixels for _, pixels in batch]))
        positive = probs >= self.threshold  # on the float32 array, exactly as evaluate compares
        for (index, _), prob, is_positive in zip(batch, probs, positive):
            rows[index].update(probability=float(prob), label=self.classes[int(is_positive)])


# --- output -----------------------------------------------------------------------------------


def output_format(path: str) -> str:
    """``.csv`` or ``.json``, from the output file's name."""
    suffix = Path(path).suffix.lower()
    if suffix not in OUTPUT_FORMATS:
        raise UserError(f"--out {path}: use a .csv or .json file name")
    return suffix


def probability_cell(probability: float | None) -> str:
    return "" if probability is None else f"{probability:.6f}"


def rows_csv(rows: list[Row]) -> str:
    """Rows as CSV ``path,probability,label,error``; a failed row has an empty probability."""
    cells = ([r["path"], probability_cell(r["probability"]), r["label"], r["error"]] for r in rows)
    return csv_text(list(COLUMNS), cells)


def write_rows(rows: list[Row], path: str) -> None:
    """Write rows to ``path`` (``.csv``, or ``.json``: a list of objects, null probability on error)."""
    write_text(path, dumps_json(rows, digits=6) if output_format(path) == ".json" else rows_csv(rows))
