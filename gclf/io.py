"""Atomic file writes, and JSON and CSV text that is byte-stable: equal results give equal files.

A killed stage never leaves a half-written file behind.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_umask()  # what open() would give a new file; mkstemp's 0600 would hide it from others


def fsync(path: str | os.PathLike) -> None:
    """Flush ``path`` (a file or a directory) to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)``, flush it to disk and move it onto ``path`` in one rename: after a
    kill or a power cut ``path`` holds the old bytes or the new ones, never part of them."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, FILE_MODE)
        fsync(tmp)
        os.replace(tmp, path)
        fsync(path.parent)  # the rename itself
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text(path: str | os.PathLike, text: str) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)

    atomic_write(path, write)


def _rounded(value: Any, digits: int) -> Any:
    if isinstance(value, float):
        return None if not math.isfinite(value) else round(value, digits)
    if isinstance(value, dict):
        return {str(k): _rounded(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_rounded(v, digits) for v in value]
    if hasattr(value, "item"):  # numpy / torch scalars
        return _rounded(value.item(), digits)
    return value


def _sorted(value: Any) -> Any:
    """``value`` with the keys of every dict in it in sorted order."""
    if isinstance(value, dict):
        return {k: _sorted(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_sorted(v) for v in value]
    return value


def dumps_json(obj: Any, digits: int = 4, first: Sequence[str] = ()) -> str:
    """JSON with sorted keys and rounded floats, so equal results give equal bytes.

    ``first`` names top-level keys to write before the sorted rest, in that order: DVC lists a
    metrics file's keys as they stand, so these are the ones ``dvc exp show`` shows first.
    """
    ordered = _sorted(_rounded(obj, digits))
    if first:
        ordered = {k: ordered[k] for k in [*first, *ordered] if k in ordered}  # a dict keeps a key's first place
    return json.dumps(ordered, indent=2) + "\n"


def write_json(path: str | os.PathLike, obj: Any, digits: int = 4, first: Sequence[str] = ()) -> None:
    write_text(path, dumps_json(obj, digits, first))


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def csv_text(header: list[str], rows: Iterable[Iterable]) -> str:
    """CSV text with ``\n`` line endings, so manifests are byte-identical on every platform."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()
