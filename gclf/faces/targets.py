"""The teacher's targets as files: what the ``teacher`` stage writes to ``data/teacher/`` and the
training and evaluate stages read, numpy only (reading needs no teacher installed).

Per split, in the order of its manifest (``data/splits/<split>.csv``):

- ``<split>_embeddings.npy``: float32 (N, 128), the teacher's face descriptor of each image;
- ``<split>_probs.npy``: float32 (N,), the logistic probe's P(female) of each image.

A face the teacher could not embed has NaN in both: training falls back to the plain loss for it.
``teacher.json`` says whether the teacher ran (``enabled``), and for which manifests: ``manifests``
maps each split to the sha1 of its manifest's bytes, so targets are never paired with another
split's images. With ``distill.enabled: false`` the stage writes ``{"enabled": false}`` and nothing else.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from gclf.data.manifest import SPLITS_DIR
from gclf.errors import UserError
from gclf.io import read_json

TEACHER_DIR = "data/teacher"
SPLITS = ("train", "val", "test")
EMBED_DIM = 128  # dlib's face descriptor


def manifest_sha1(split: str, splits_dir: str = SPLITS_DIR) -> str:
    """sha1 of the split's manifest bytes (paths, labels and each file's sha1): the key of its targets."""
    return hashlib.sha1(Path(splits_dir, f"{split}.csv").read_bytes()).hexdigest()


def embeddings_path(split: str, teacher_dir: str = TEACHER_DIR) -> str:
    return os.path.join(teacher_dir, f"{split}_embeddings.npy")


def probs_path(split: str, teacher_dir: str = TEACHER_DIR) -> str:
    return os.path.join(teacher_dir, f"{split}_probs.npy")


def summary_path(teacher_dir: str = TEACHER_DIR) -> str:
    return os.path.join(teacher_dir, "teacher.json")


def read_summary(teacher_dir: str = TEACHER_DIR) -> dict:
    path = summary_path(teacher_dir)
    if not os.path.exists(path):
        raise UserError(f"{path}: no teacher outputs; run `dvc repro teacher` (with distill.enabled: true)")
    return read_json(path)


def load_targets(
    split: str, splits_dir: str = SPLITS_DIR, teacher_dir: str = TEACHER_DIR
) -> tuple[np.ndarray, np.ndarray]:
    """(probs (N,), embeddings (N, 128)) of ``split``, float32, NaN where the teacher could not embed
    a face; refused with one line when the teacher did not run or ran on other manifests."""
    summary = read_summary(teacher_dir)
    if not summary.get("enabled"):
        raise UserError(f"{summary_path(teacher_dir)}: the teacher did not run; set distill.enabled: true and rerun")
    if summary["manifests"].get(split) != manifest_sha1(split, splits_dir):
        raise UserError(
            f"{teacher_dir}: the teacher's {split} targets belong to other manifests than {splits_dir}; "
            "run `dvc repro teacher`"
        )
    probs = np.load(probs_path(split, teacher_dir))
    embeddings = np.load(embeddings_path(split, teacher_dir))
    if embeddings.shape != (len(probs), EMBED_DIM):
        raise UserError(f"{embeddings_path(split, teacher_dir)}: shape {embeddings.shape}, not ({len(probs)}, 128)")
    return probs, embeddings


def teacher_test_probs(splits_dir: str = SPLITS_DIR, teacher_dir: str = TEACHER_DIR) -> tuple[np.ndarray, float]:
    """The teacher's P(female) of each test image (NaN: not scored) and its threshold, chosen on
    validation: what the evaluate stage scores beside the student as a baseline."""
    probs, _ = load_targets("test", splits_dir, teacher_dir)
    return probs, float(read_summary(teacher_dir)["threshold"])
