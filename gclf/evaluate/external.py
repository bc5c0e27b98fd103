"""``gclf evaluate``: any trained artifact on any labelled dataset, scored like the evaluate stage.

The dataset is read with the split stage's scanners (every ``data.format`` but synthetic), so a
folder with ``female/`` and ``male/`` inside, a presplit layout, a CSV manifest or UTKFace all
work; images are decoded and predicted by :class:`gclf.deploy.predict.Predictor`, exactly as ``gclf
predict`` and the pipeline do. Files that cannot be used are skipped and counted, as in split.
"""

from __future__ import annotations

import numpy as np

from gclf.data.formats import SCANNERS
from gclf.data.manifest import DataError, Record, Rejected, read_manifest
from gclf.deploy.predict import Predictor
from gclf.evaluate.scoring import score

SPLIT_CHOICES = ("all", "test")
MANIFEST = "manifest"  # a split manifest the split stage wrote, for the benchmarks' --format


def scan_labelled(path: str, fmt: str, split: str = "all") -> tuple[list[Record], Rejected]:
    """(records, rejected) of a labelled dataset; ``split="test"`` keeps a presplit layout's test
    folder only. Stops with :class:`DataError` when nothing is left to evaluate."""
    if fmt not in SCANNERS:
        raise DataError(f"unknown dataset format {fmt!r}: use one of {', '.join(SCANNERS)}")
    if split not in SPLIT_CHOICES:
        raise DataError(f"unknown split {split!r}: use one of {', '.join(SPLIT_CHOICES)}")
    if split == "test" and fmt != "presplit":
        raise DataError(f"--split test needs --format presplit; a {fmt} dataset has no test folder, use --split all")
    records, rejected = SCANNERS[fmt](path)
    if split == "test":
        records = [r for r in records if r.split == "test"]
        if not records:
            raise DataError(f"{path}: no test folder with images")
    if not records:
        raise DataError(f"{path}: no labelled images found for --format {fmt}")
    return records, rejected


def labelled_faces(path: str, fmt: str) -> list[Record]:
    """The records of labelled face crops for a benchmark: a split manifest (``fmt`` :data:`MANIFEST`)
    or any layout :func:`scan_labelled` reads (its rejected files left out)."""
    return read_manifest(path) if fmt == MANIFEST else scan_labelled(path, fmt)[0]


def evaluate_artifact(
    predictor: Predictor,
    records: list[Record],
    *,
    bootstrap: int = 1000,
    seed: int = 0,
    min_group_size: int = 30,
    progress: bool = False,
) -> tuple[dict[str, float], Rejected]:
    """Metrics of ``predictor`` on ``records`` at its threshold, scored as the evaluate stage scores
    the test split (:func:`gclf.evaluate.scoring.score`: binary metrics, 95 % bootstrap intervals
    for accuracy, F1 and ROC-AUC with ``bootstrap`` resamples (0 = none), the subgroup audit when
    the records carry metadata, and the accuracies at 0.5), ``images`` used, how many of them were ``aligned``
    (:mod:`gclf.faces.align`) and ``threshold``. With face
    detection, each photo is scored by its largest face; a photo without one is unreadable.

    Returns (metrics, unreadable files with their reasons); stops with :class:`DataError` when no
    image could be read.
    """
    rows = predictor.predict([r.path for r in records], progress=progress)
    if predictor.detector is not None:
        subjects = main_faces(rows)
        rows = [subjects[record.path] for record in records]
    unreadable = [(row["path"], row["error"]) for row in rows if row["error"]]
    used = [(record, row["probability"]) for record, row in zip(records, rows) if not row["error"]]
    if not used:
        first = unreadable[0]
        raise DataError(f"none of the {len(records)} images could be read (first: {first[0]}: {first[1]})")
    labels = np.array([record.label for record, _ in used])
    probs = np.array([prob for _, prob in used], dtype=np.float32)  # float32, as the pipeline compares
    threshold = predictor.threshold
    aligned = sum(1 for row in rows if not row["error"] and row["aligned"])
    meta = [record.meta for record, _ in used]
    scores = score(labels, probs, threshold, meta, bootstrap=bootstrap, seed=seed, min_group_size=min_group_size)
    report = {"images": len(used), "aligned": aligned, "threshold": threshold, **scores.flat(prefix="")}
    return report, unreadable


def main_faces(rows: list[dict]) -> dict[str, dict]:
    """Per photo, the row of its largest face (its subject), or its error row."""
    subjects: dict[str, dict] = {}
    for row in rows:
        best = subjects.get(row["path"])
        if best is None or (not row["error"] and (best["error"] or row["w"] * row["h"] > best["w"] * best["h"])):
            subjects[row["path"]] = row
    return subjects


def skipped_summary(rejected: Rejected, shown: int = 5) -> str:
    """``skipped N files`` with the first few paths and reasons, for stderr."""
    lines = [f"skipped {len(rejected)} file{'s' * (len(rejected) != 1)}:"]
    lines += [f"  {path}: {reason}" for path, reason in rejected[:shown]]
    if len(rejected) > shown:
        lines.append(f"  ... and {len(rejected) - shown} more")
    return "\n".join(lines)
