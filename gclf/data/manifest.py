"""Records and manifests: the CSVs the split stage writes to ``data/splits/`` and every later stage reads.

A manifest is a CSV with columns ``path,label,sha1,<metadata...>``; ``path`` opens from the repo root,
``label`` is 0 (male) or 1 (female, the positive class): :data:`CLASSES`.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from typing import Iterable

from gclf.errors import UserError
from gclf.io import csv_text

SPLITS_DIR = "data/splits"
CLASSES = ("male", "female")  # label 0, label 1 (the positive class)


class DataError(UserError):
    """A dataset the pipeline cannot use, with a one-line message for the user."""


@dataclass(frozen=True)
class Record:
    path: str  # opens from the repo root: the dataset root as the user gave it, joined with the file
    label: int
    meta: dict[str, str] = field(default_factory=dict)
    split: str | None = None  # preassigned by a presplit layout; None means the splitter decides
    sha1: str = ""  # of the file's bytes: manifests name content, not just paths


Rejected = list[tuple[str, str]]  # (path, reason)


def manifest_text(records: Iterable[Record], meta_columns: list[str]) -> str:
    """Manifest CSV ``path,label,sha1,<meta_columns>``, rows sorted by path."""
    ordered = sorted(records, key=lambda r: r.path)
    rows = ([r.path, r.label, r.sha1, *(r.meta.get(c, "") for c in meta_columns)] for r in ordered)
    return csv_text(["path", "label", "sha1", *meta_columns], rows)


def read_manifest(path: str) -> list[Record]:
    """The records of a manifest written by :func:`gclf.data.split.build_splits`."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except FileNotFoundError:
        raise DataError(f"{path}: no such manifest; run `dvc repro split` first") from None
    return [
        Record(
            row["path"],
            int(row["label"]),
            {k: v for k, v in row.items() if k not in ("path", "label", "sha1")},
            sha1=row.get("sha1", ""),
        )
        for row in rows
    ]
