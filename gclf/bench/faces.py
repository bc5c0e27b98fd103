"""``gclf bench-faces``: face detection measured on composite photos of labelled faces.

Labelled face crops (a test split, say) are pasted into 640 x 480 composites
(:mod:`gclf.faces.composites`), saved as JPEG and run through ``gclf predict --detect-faces``. Reported:
detection recall and precision (IoU >= 0.5 between the pasted square and the crop square made from
the detector's box) for faces of at least 64 px and smaller ones; the end-to-end accuracy on the
faces found against the accuracy of the same faces' original crop files; the same with the crop
made differently (eyes always or never levelled; the detector's bare box); and images/s against crop-only
predict on the same photos, in alternating rounds.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from typing import Any, Sequence

import numpy as np
from PIL import Image
from tqdm import tqdm

from gclf.data.images import to_rgb
from gclf.data.manifest import Record
from gclf.deploy.predict import Predictor
from gclf.deploy.rows import Row
from gclf.faces.composites import Pasted, composite_photos
from gclf.faces.detect import LEVEL_FROM_DEGREES, Face, box_iou, crop_square, face_crop
from gclf.faces.read import guarded

SMALL_FACE = 64  # the recall target is for faces at least this large
JPEG_QUALITY = 92
CROP_VARIANTS = {  # name: (level_from degrees, margin), as face_crop takes them
    "levelled_from_10_degrees": (LEVEL_FROM_DEGREES, True),
    "always_levelled": (0.0, True),
    "never_levelled": (math.inf, True),
    "detector_box": (math.inf, False),
}


def row_face(row: Row) -> Face:
    return Face(row["x"], row["y"], row["w"], row["h"], row["detection_score"], ((0.0, 0.0), (0.0, 0.0)))


def match_faces(truth: Sequence[Pasted], faces: Sequence[Face], min_iou: float = 0.5) -> dict[int, int]:
    """``{truth index: face index}``: each face, best score first, takes the unmatched pasted square
    its crop square overlaps most, if by ``min_iou`` or more."""
    if not truth or not faces:
        return {}
    squares = np.array([[p.x, p.y, p.side, p.side] for p in truth], float)
    matched: dict[int, int] = {}
    for index in sorted(range(len(faces)), key=lambda i: -faces[i].score):
        cx, cy, side = crop_square(faces[index])
        overlaps = box_iou(np.array([cx - side / 2, cy - side / 2, side, side]), squares)
        overlaps[list(matched)] = -1
        best = int(np.argmax(overlaps))
        if overlaps[best] >= min_iou:
            matched[best] = index
    return matched


def rate(hits: int, total: int) -> float | None:
    return hits / total if total else None


def report_table(report: dict[str, Any]) -> str:
    """The report as a Markdown table: one column per composite set."""

    def show(value: Any) -> str:
        return "n/a" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)

    names = [k.removeprefix("upright_") for k in report if k.startswith("upright_")]
    lines = ["| | upright faces | faces turned up to 30 degrees |", "|---|---|---|"]
    lines += [f"| {n} | {show(report['upright_' + n])} | {show(report['rolled_' + n])} |" for n in names]
    lines += [f"| {k} | {show(v)} | |" for k, v in report.items() if not k.startswith(("upright_", "rolled_"))]
    return "\n".join(lines)


def read_faces(records: Sequence[Record]) -> tuple[list[Record], list[Image.Image], list[tuple[str, str]]]:
    """(records whose image could be read, their RGB images, (path, reason) of the others)."""
    kept, faces, unreadable = [], [], []
    for record in tqdm(records, desc="reading faces", unit="img"):
        face, error = guarded(lambda path=record.path: rgb(path), record.path)
        if face is None:
            unreadable.append((record.path, error))
        else:
            kept.append(record)
            faces.append(face)
    return kept, faces, unreadable


def rgb(path: str) -> Image.Image:
    with Image.open(path) as image:
        return to_rgb(image)


def face_benchmark(
    model: str,
    records: Sequence[Record],
    faces: Sequence[Image.Image],
    photos: int = 200,
    seed: int = 0,
    threads: int = 2,
    rounds: int = 2,
) -> dict[str, Any]:
    """The numbers the module docstring lists, for the artifact ``model`` on ``faces``, the images of
    ``records`` (:func:`read_faces`)."""
    labels = np.array([r.label for r in records])
    detecting = Predictor(model, threads, detect_faces=True)
    cropping = Predictor(model, threads)
    report: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as folder:
        timed: list[str] = []
        for name, roll in (("upright", 0.0), ("rolled", 30.0)):
            made = composite_photos(faces, photos, seed, max_roll=roll)
            paths = [os.path.join(folder, f"{name}{i:04d}.jpg") for i in range(len(made))]
            for path, (photo, _) in zip(paths, made):
                photo.save(path, quality=JPEG_QUALITY)
            rows = detecting.predict(paths, progress=True)
            truth = [pasted for _, pasted in made]
            report.update(prefixed(name, detection_report(rows, paths, truth, labels, detecting, cropping, records)))
            timed = timed or paths
        report.update(speed_report(detecting, cropping, timed, rounds))
    report.update(
        {"photos": photos, "seed": seed, "threads": threads, "min_face_size": detecting.detector.min_face_size}
    )
    return report


def prefixed(prefix: str, values: dict[str, Any]) -> dict[str, Any]:
    return {f"{prefix}_{key}": value for key, value in values.items()}


def detection_report(
    rows: list[Row],
    paths: list[str],
    truth: list[list[Pasted]],
    labels: np.ndarray,
    detecting: Predictor,
    cropping: Predictor,
    records: Sequence[Record],
) -> dict[str, Any]:
    """Recall, precision and accuracies (see the module docstring) of one set of composites."""
    by_path: dict[str, list[Row]] = {path: [] for path in paths}
    for row in rows:
        if not row["error"]:
            by_path[row["path"]].append(row)
    found = {"large": 0, "small": 0}
    total = {"large": 0, "small": 0}
    false_positives = {"large": 0, "small": 0}
    matched_faces: list[tuple[str, Face, Row, int]] = []  # (photo, face, row, source face)
    pasted_sides: list[int] = []
    for path, pasted in zip(paths, truth):
        faces = [row_face(row) for row in by_path[path]]
        matched = match_faces(pasted, faces)
        for index, p in enumerate(pasted):
            size = "large" if p.side >= SMALL_FACE else "small"
            total[size] += 1
            if index in matched:
                found[size] += 1
                if size == "large":
                    matched_faces.append((path, faces[matched[index]], by_path[path][matched[index]], p.source))
                    pasted_sides.append(p.side)
        for index, face in enumerate(faces):
            if index not in matched.values():
                false_positives["large" if crop_square(face)[2] >= SMALL_FACE else "small"] += 1
    report: dict[str, Any] = {}
    for size in ("large", "small"):
        report[f"recall_{size}"] = rate(found[size], total[size])
        report[f"precision_{size}"] = rate(found[size], found[size] + false_positives[size])
        report[f"faces_{size}"] = total[size]
    sources = [source for *_, source in matched_faces]
    truth_labels = labels[sources]
    predicted = np.array([detecting.classes.index(row["label"]) for _, _, row, _ in matched_faces])
    report["end_to_end_accuracy_large"] = rate(int((predicted == truth_labels).sum()), len(sources))
    crop_rows = cropping.predict([records[s].path for s in sources])
    on_crops = np.array([cropping.classes.index(row["label"]) for row in crop_rows])
    report["crop_accuracy_large"] = rate(int((on_crops == truth_labels).sum()), len(sources))
    # the same crops at the size they were pasted: what the resolution alone costs
    shrunk = [shrunk_crop(records[s].path, side, cropping.image_size) for s, side in zip(sources, pasted_sides)]
    report["crop_accuracy_at_pasted_size_large"] = accuracy(cropping, shrunk, truth_labels)
    report.update(crop_variant_accuracies(matched_faces, truth_labels, detecting))
    return report


def crop_variant_accuracies(
    matched_faces: list[tuple[str, Face, Row, int]], truth_labels: np.ndarray, predictor: Predictor
) -> dict[str, float | None]:
    """End-to-end accuracy on the matched faces with each way of cropping (:data:`CROP_VARIANTS`),
    the detector run again, once per photo, to get the eyes (rows carry boxes only)."""
    crops: dict[str, list[np.ndarray]] = {name: [] for name in CROP_VARIANTS}
    seen = ""
    for path, face, _, _ in matched_faces:  # a photo's faces come one after another
        if path != seen:  # 640 x 480: not reduced, so row boxes are in the photo's pixels
            photo, _, detected = predictor.detector.in_photo(path)
            seen = path
        row_box = np.array([face.x, face.y, face.w, face.h], float)
        again = max(detected, key=lambda f: box_iou(row_box, np.array([[f.x, f.y, f.w, f.h]]))[0])
        for name, (level_from, margin) in CROP_VARIANTS.items():
            crops[name].append(face_crop(photo, again, predictor.image_size, level_from, margin))
    return {f"accuracy_{name}": accuracy(predictor, pixels, truth_labels) for name, pixels in crops.items()}


def accuracy(predictor: Predictor, pixels: list[np.ndarray], labels: np.ndarray) -> float | None:
    """Accuracy of ``predictor`` on uint8 images (S, S, 3) at its threshold; None for none."""
    if not pixels:
        return None
    probs = np.concatenate([predictor.probabilities(np.stack(pixels[i : i + 64])) for i in range(0, len(pixels), 64)])
    return float(((probs >= predictor.threshold) == labels).mean())


def shrunk_crop(path: str, side: int, image_size: int) -> np.ndarray:
    """The crop file reduced to ``side`` px as :func:`gclf.faces.composites.composite_photos` pastes it,
    then resized to the model's size as :func:`gclf.data.images.decode_image` does."""
    with Image.open(path) as image:
        small = image.convert("RGB").resize((side, side), Image.LANCZOS)
    return np.asarray(small.resize((image_size, image_size), Image.BILINEAR, reducing_gap=None))


def speed_report(detecting: Predictor, cropping: Predictor, paths: list[str], rounds: int) -> dict[str, float]:
    """Images/s of detect-then-classify and of crop-only predict on the same photos, in rounds of
    alternating order (ABBA), median over rounds; one untimed warm-up call each."""
    for predictor in (detecting, cropping):
        predictor.predict(paths[:4])
    seconds: dict[str, list[float]] = {"detect_faces": [], "crop_only": []}
    for round_ in range(rounds):
        order = [("detect_faces", detecting), ("crop_only", cropping)]
        for name, predictor in order if round_ % 2 == 0 else order[::-1]:
            start = time.perf_counter()
            predictor.predict(paths)
            seconds[name].append(time.perf_counter() - start)
    return {f"{name}_images_per_s": len(paths) / float(np.median(times)) for name, times in seconds.items()}
