"""What ``gclf predict`` reads: files, folders, globs and CSV lists expanded lazily, and the shard and
resume filters over them.
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import os
from collections import Counter
from typing import Callable, Iterable, Iterator, TypeVar

from gclf.data.formats import GLOB_CHARACTERS, IMAGE_EXTENSIONS, glob_files, is_image_name, walk_files

Item = TypeVar("Item")


# --- inputs -----------------------------------------------------------------------------------


class Inputs:
    """The inputs that ``items`` name, expanded lazily: ``(path, "")`` for each image, in order, or one
    ``(item, reason)`` for an item that names none.

    A file is used as given (a ``.csv`` is a list of paths, :func:`csv_inputs`); folders (recursively)
    and globs contribute the files with an image extension (:data:`gclf.data.formats.IMAGE_EXTENSIONS`).
    Folders, and globs (:func:`gclf.data.formats.glob_files`: each file once, by the folder walk's
    rule, symlinked folders not followed), are walked one directory at a time and CSVs read a line
    at a time, so a million inputs are never all in memory. ``skipped`` counts, so far, the files
    that folders and globs left out for their extension.
    """

    def __init__(self, items: str | os.PathLike | Iterable[str | os.PathLike]):
        self.items = [items] if isinstance(items, (str, os.PathLike)) else items  # a generator is read as needed
        self.skipped = 0

    def __iter__(self) -> Iterator[tuple[str, str]]:
        for item in self.items:
            yield from self.expand(os.fspath(item))

    def expand(self, item: str) -> Iterator[tuple[str, str]]:
        if os.path.isdir(item):
            yield from or_else(
                self.images(walk_files(item)), (item, f"folder has no images ({' '.join(IMAGE_EXTENSIONS)})")
            )
        elif os.path.exists(item):
            yield from csv_inputs(item) if item.lower().endswith(".csv") else [(item, "")]
        elif any(c in item for c in GLOB_CHARACTERS):
            yield from or_else(self.images(glob_files(item)), (item, "no image matches this pattern"))
        else:
            yield item, "no such file or folder"

    def images(self, files: Iterable[str]) -> Iterator[tuple[str, str]]:
        """``(path, "")`` for the image files among ``files``; the others are counted in ``skipped``."""
        for path in files:
            if is_image_name(path):
                yield path, ""
            else:
                self.skipped += 1


def or_else(entries: Iterable[Item], otherwise: Item) -> Iterator[Item]:
    """``entries``, or ``otherwise`` alone when there are none."""
    empty = True
    for entry in entries:
        empty = False
        yield entry
    if empty:
        yield otherwise


def csv_inputs(path: str) -> Iterator[tuple[str, str]]:
    """The paths a CSV lists, relative to its folder: its ``path`` column, or its only column.

    Yields ``(path, "")`` per listed path, or one ``(csv path, reason)`` when it lists none or
    cannot be read from some line on.
    """
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = (row for row in csv.reader(f) if any(cell.strip() for cell in row))
            first = next(rows, None)
            header = [cell.strip().lower() for cell in first] if first else []
            if "path" in header:
                column = header.index("path")
            elif len(header) == 1:  # a bare list of paths, no header
                column, rows = 0, itertools.chain([first], rows)
            elif header:
                yield path, "CSV has several columns but none named 'path'"
                return
            folder = os.path.dirname(path)
            listed = (row[column].strip() for row in rows if len(row) > column and row[column].strip())
            yield from or_else(((os.path.join(folder, p), "") for p in listed), (path, "CSV lists no paths"))
    except (OSError, UnicodeDecodeError) as e:
        yield path, f"cannot read this CSV ({type(e).__name__})"


def in_shard(path: str, shard: int, shards: int) -> bool:
    """Whether the input ``path`` (as written) falls in shard ``shard`` of ``shards`` (1-based): by a
    stable hash of the path, so every machine splits the same inputs alike, whatever their order."""
    digest = hashlib.blake2b(path.encode("utf-8", "surrogateescape"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % shards == shard - 1


def selected(shard: tuple[int, int] | None, done: Counter[str]) -> Callable[[str], bool]:
    """``keep`` for :meth:`Predictor.stream`: the inputs of ``shard`` (K, N) that are not ``done``.
    Call it once per input, in order: a path listed twice is done as many times as ``done`` counts."""

    def keep(path: str) -> bool:
        if shard is not None and not in_shard(path, *shard):
            return False
        if done[path]:
            done[path] -= 1
            return False
        return True

    return keep
