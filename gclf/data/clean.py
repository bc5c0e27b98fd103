"""Which scanned files the pipeline can use: each file is read once, hashed and test-decoded
(missing, empty, truncated, undecodable and too large files are rejected with their reason), then
copies of the same bytes are reduced to one, so no image is in two splits.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from gclf.data import WORKERS
from gclf.data.manifest import Record, Rejected

HELD_OUT_RANK = {"test": 2, "val": 1, "train": 0, None: 0}  # which duplicate copy to keep


def decode_problem(data: bytes) -> str | None:
    """Why these bytes are not a usable image, or None if they decode completely."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.draft("RGB", (1, 1))  # JPEG: decode at 1/8 scale; the whole stream is still read
            image.load()
    except Image.DecompressionBombError:
        return "too large"
    except (OSError, SyntaxError, ValueError) as e:
        return "truncated" if "truncated" in str(e).lower() else "not an image"
    return None


def inspect_file(path: str) -> tuple[str, str | None]:
    """(sha1 of the file's bytes, reason it is unusable or None); the file is read once."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return "", "missing file"
    except OSError:
        return "", "unreadable"
    if not data:
        return "", "empty file"
    return hashlib.sha1(data).hexdigest(), decode_problem(data)


def inspect_all(records: list[Record]) -> tuple[list[Record], list[str], Rejected]:
    """Check every file with a progress bar: (good records, their content hashes, rejected)."""
    with ThreadPoolExecutor(WORKERS) as pool:
        results = list(
            tqdm(
                pool.map(inspect_file, [r.path for r in records]),
                total=len(records),
                desc="checking images",
                unit="img",
            )
        )
    good, hashes, rejected = [], [], []
    for record, (digest, problem) in zip(records, results):
        if problem is None:
            good.append(dataclasses.replace(record, sha1=digest))
            hashes.append(digest)
        else:
            rejected.append((record.path, problem))
    return good, hashes, rejected


def deduplicate(records: list[Record], hashes: list[str]) -> tuple[list[Record], Rejected, int]:
    """Keep one copy per content hash: (kept, rejected, number of groups with conflicting labels).

    Copies with conflicting labels are all dropped; otherwise the copy in the most held-out split
    is kept (test > val > train), then the first path, so no image is in two splits.
    """
    groups: dict[str, list[Record]] = defaultdict(list)
    for record, digest in zip(records, hashes):
        groups[digest].append(record)
    kept, rejected, conflicts = [], [], 0
    for group in groups.values():
        if len({r.label for r in group}) > 1:
            conflicts += 1
            rejected += [(r.path, "duplicate with conflicting labels") for r in group]
            continue
        keeper = min(group, key=lambda r: (-HELD_OUT_RANK[r.split], r.path))
        kept.append(keeper)
        rejected += [(r.path, "duplicate") for r in group if r is not keeper]
    return kept, rejected, conflicts
