"""The split stage's work: scan a dataset, keep its usable unique images, split them stratified
into train/val/test, write the manifests and count what was kept and skipped (``metrics/data.json``).
"""

from __future__ import annotations

import dataclasses
import os
from collections import Counter

import numpy as np

from gclf.data.clean import deduplicate, inspect_all
from gclf.data.formats import IMAGE_EXTENSIONS, SCANNERS, scan_synthetic
from gclf.data.manifest import CLASSES, DataError, Record, Rejected, manifest_text
from gclf.io import csv_text, write_text

SPLITS = ("train", "val", "test")


def carve_counts(pool: int, total: int, fractions: dict[str, float]) -> dict[str, int]:
    """How many of ``pool`` unassigned images each split gets: its fraction of ``total``, at
    least one when the pool allows, always leaving one for train."""
    counts, left = {}, pool
    for split, fraction in fractions.items():
        counts[split] = max(0, min(max(1, round(fraction * total)), left - 1))
        left -= counts[split]
    return counts


def stratified_split(records: list[Record], val_fraction: float, test_fraction: float, seed: int) -> list[Record]:
    """Assign a split to every record, per class, deterministically.

    Preassigned splits are kept. A split no record was preassigned to is carved from the
    unassigned records, sized as its fraction of all records of that class (for a presplit layout
    with train and val: test is test_fraction of train + val, taken from train). The rest is train.
    Records are sorted by path, then shuffled with ``numpy.random.default_rng(seed)``.
    """
    present = {r.split for r in records if r.split is not None}
    fractions = {s: f for s, f in (("test", test_fraction), ("val", val_fraction)) if s not in present}
    rng = np.random.default_rng(seed)
    result = [r for r in records if r.split is not None]
    for label in range(len(CLASSES)):
        total = sum(r.label == label for r in records)
        pool = sorted((r for r in records if r.label == label and r.split is None), key=lambda r: r.path)
        order = rng.permutation(len(pool))
        start = 0
        for split, n in carve_counts(len(pool), total, fractions).items():
            result += [dataclasses.replace(pool[i], split=split) for i in order[start : start + n]]
            start += n
        result += [dataclasses.replace(pool[i], split="train") for i in order[start:]]
    return result


def summarize(
    splits: dict[str, list[Record]], rejected: Rejected, scanned: int, conflict_groups: int
) -> dict[str, int]:
    """Flat, stable counts for ``metrics/data.json``."""
    reasons = Counter(reason for _, reason in rejected)
    summary = {"scanned": scanned, "kept": sum(len(rs) for rs in splits.values())}
    for split, rs in splits.items():
        for label, name in enumerate(CLASSES):
            summary[f"{split}_{name}"] = sum(r.label == label for r in rs)
        summary[f"{split}_total"] = len(rs)
    summary.update(
        {
            "duplicates_removed": reasons.pop("duplicate", 0),
            "conflicting_groups": conflict_groups,
            "conflicting_dropped": reasons.pop("duplicate with conflicting labels", 0),
            "bad_names": reasons.pop("bad name", 0),
            "unreadable": sum(reasons.values()),  # empty, undecodable, truncated, too large, missing
        }
    )
    return summary


def build_splits(
    fmt: str,
    path: str,
    out_dir: str,
    *,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    synthetic_count: int,
    synthetic_size: int,
    synthetic_female_fraction: float,
) -> dict[str, int]:
    """Scan, check, deduplicate and split a dataset; write ``out_dir/{train,val,test,skipped}.csv``.

    ``fmt`` is synthetic (generated into ``out_dir/synthetic``, ``path`` unused), imagefolder,
    presplit, csv (``path`` is the manifest) or utkface. Returns the summary for metrics/data.json.
    """
    if fmt == "synthetic":
        records, rejected = scan_synthetic(
            os.path.join(out_dir, "synthetic"), synthetic_count, seed, synthetic_size, synthetic_female_fraction
        )
    elif fmt in SCANNERS:
        records, rejected = SCANNERS[fmt](path)
    else:
        raise DataError(f"unknown data format {fmt!r}: use synthetic or one of {', '.join(SCANNERS)}")
    scanned = len(records) + len(rejected)
    if not records:
        raise DataError(f"{path}: no images found ({', '.join(IMAGE_EXTENSIONS)}) for data.format={fmt}")
    good, hashes, unreadable = inspect_all(records)
    kept, duplicates, conflict_groups = deduplicate(good, hashes)
    rejected += unreadable + duplicates
    write_text(os.path.join(out_dir, "skipped.csv"), csv_text(["path", "reason"], sorted(rejected)))
    if not kept:
        raise DataError(f"{path}: none of the {len(records)} images is usable; see {out_dir}/skipped.csv")
    labels = {r.label for r in kept}
    if len(labels) < len(CLASSES):
        raise DataError(
            f"{path}: all {len(kept)} usable images are {CLASSES[labels.pop()]}; "
            f"a gender classifier needs images of both classes ({', '.join(CLASSES)})"
        )
    split = stratified_split(kept, val_fraction, test_fraction, seed)
    splits = {s: [r for r in split if r.split == s] for s in SPLITS}
    meta_columns = sorted({k for r in split for k in r.meta})
    for name, rs in splits.items():
        write_text(os.path.join(out_dir, f"{name}.csv"), manifest_text(rs, meta_columns))
    return summarize(splits, rejected, scanned, conflict_groups)
