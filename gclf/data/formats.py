"""The dataset layouts ``data.format`` names, each scanned into records with labels and metadata:
imagefolder, presplit, csv, utkface, and the embedded synthetic drawings.

A scanner returns ``(records, rejected)``: files it found but could not label (a UTKFace name
that does not parse) are rejected with a reason; a layout it cannot read raises :class:`DataError`.
"""

from __future__ import annotations

import csv
import fnmatch
import os
import re
import shutil
from typing import Callable, Iterator

from gclf.data.manifest import DataError, Record, Rejected
from gclf.data.synthetic import make_synthetic

GLOB_CHARACTERS = "*?["  # a path with one of them, naming no file, is a glob (glob_files)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif")  # GIF: its first frame
CLASS_NAMES = {
    **dict.fromkeys(("male", "males", "man", "men", "m"), 0),
    **dict.fromkeys(("female", "females", "woman", "women", "f"), 1),
}
SPLIT_NAMES = {
    **dict.fromkeys(("train", "training"), "train"),
    **dict.fromkeys(("val", "valid", "validation"), "val"),
    **dict.fromkeys(("test", "testing"), "test"),
}
UTK_NAME = re.compile(r"(\d+)_([01])_([0-4])_\d+\.")  # AGE_GENDER_RACE_DATETIME.jpg.chip.jpg
UTK_RACES = ("white", "black", "asian", "indian", "others")
AGE_BANDS = ((10, "0-9"), (20, "10-19"), (40, "20-39"), (60, "40-59"))  # (upper bound, band); older: 60+

Scan = tuple[list[Record], Rejected]


def class_label(name: str) -> int:
    """0 for a male class name, 1 for a female one (case-insensitive), else :class:`DataError`."""
    try:
        return CLASS_NAMES[name.strip().lower()]
    except KeyError:
        raise DataError(f"{name!r} is not a class name: use one of {', '.join(CLASS_NAMES)} (any case)") from None


def is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def image_files(folder: str) -> list[str]:
    """Image paths under ``folder`` (recursive, sorted, hidden entries skipped), joined onto it as given."""
    return [path for path in visible_files(folder) if is_image_name(path)]


def walk_files(folder: str, descend: Callable[[str], bool] | None = None) -> Iterator[str]:
    """Every file under ``folder`` (recursive, sorted, hidden entries skipped, symlinked folders not
    followed: a loop cannot trap the walk), joined onto it as given, one directory's listing in memory
    at a time. ``descend(path)`` False skips a folder below ``folder`` (a glob prunes with it)."""
    for parent, dirs, files in os.walk(folder):
        visible = (d for d in dirs if not d.startswith("."))
        dirs[:] = sorted(d for d in visible if descend is None or descend(os.path.join(parent, d)))
        yield from (os.path.join(parent, f) for f in sorted(files) if not f.startswith("."))


def glob_files(pattern: str) -> Iterator[str]:
    """The files the glob ``pattern`` names, each once, in :func:`walk_files` order and by its rule
    (hidden entries skipped, symlinked folders not followed): those whose path, or a folder above it,
    the pattern matches (``*``, ``?`` and ``[...]`` within a name, ``**`` any number of folders), so a
    matched folder gives all its files, as a folder argument would. The walk starts at the pattern's
    last folder before its first wildcard and enters only folders that can still match."""
    parts = pattern.split(os.sep)
    literal = next(i for i, part in enumerate(parts) if any(c in part for c in GLOB_CHARACTERS))
    root = os.sep.join(parts[:literal]) or (os.sep if pattern.startswith(os.sep) else "")
    segments = parts[literal:]
    folders_only = segments[-1] == ""  # "p/*/" names folders only, as glob reads it
    if folders_only:
        segments.pop()
    start = root or os.curdir
    if not os.path.isdir(start):
        return

    def match(path: str, is_folder: bool) -> tuple[bool, bool]:
        """(the pattern matches ``path`` or a folder above it, it could still match below ``path``)"""
        names = os.path.relpath(path, start).split(os.sep)
        states = glob_states({0}, segments)
        hit = len(segments) in states  # only "**" segments: the start folder itself matches
        for depth, name in enumerate(names, 1):
            states = glob_step(states, name, segments)
            named = depth < len(names) or is_folder or not folders_only
            hit = hit or (named and len(segments) in states)
        return hit, hit or bool(states)

    cut = 0 if root else len(os.curdir + os.sep)  # "*.jpg" gives "a.jpg", as glob does, not "./a.jpg"
    for path in walk_files(start, descend=lambda folder: match(folder, True)[1]):
        if match(path, False)[0]:
            yield path[cut:]


def glob_step(states: set[int], name: str, segments: list[str]) -> set[int]:
    """The glob states (how many ``segments`` are matched) after one more path name: a ``**`` keeps
    its state, any other segment moves on past a name it matches."""
    pending = [i for i in states if i < len(segments)]
    stay = {i for i in pending if segments[i] == "**"}
    moved = {i + 1 for i in pending if segments[i] != "**" and fnmatch.fnmatchcase(name, segments[i])}
    return glob_states(stay | moved, segments)


def glob_states(states: set[int], segments: list[str]) -> set[int]:
    """``states`` and those a ``**`` that matches no folder leads to."""
    result = set(states)
    for i in states:
        while i < len(segments) and segments[i] == "**":
            i += 1
            result.add(i)
    return result


def visible_files(folder: str) -> list[str]:
    """:func:`walk_files` as a list."""
    return list(walk_files(folder))


def require_folder(folder: str) -> None:
    if not os.path.isdir(folder):
        raise DataError(f"{folder}: no such folder")


def subfolders(folder: str) -> list[str]:
    """Names of the visible folders directly in ``folder``, sorted."""
    require_folder(folder)
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))


def scan_imagefolder(root: str, split: str | None = None) -> Scan:
    """``root/<class>/**/<image>``, one folder per class."""
    records = []
    for name in subfolders(root):
        folder = os.path.join(root, name)
        try:
            label = class_label(name)
        except DataError as e:
            raise DataError(f"{folder}: {e}") from None
        records += [Record(path, label, split=split) for path in image_files(folder)]
    return records, []


def scan_presplit(root: str) -> Scan:
    """``root/{train,val[,test]}/<class>/...`` (any case, aliases allowed).

    Without a test folder the train records stay unassigned and the splitter carves test from them.
    """
    folders: dict[str, str] = {}
    for name in subfolders(root):
        split = SPLIT_NAMES.get(name.lower())
        if split is None:
            raise DataError(f"{os.path.join(root, name)}: not a split folder: use one of {', '.join(SPLIT_NAMES)}")
        if split in folders:
            raise DataError(f"{root}: both {folders[split]!r} and {name!r} are {split} folders")
        folders[split] = name
    missing = [s for s in ("train", "val") if s not in folders]
    if missing:
        raise DataError(f"{root}: no {' or '.join(missing)} folder (presplit needs train and val, test is optional)")
    records: list[Record] = []
    for split, name in folders.items():
        # no test folder: train is the pool the splitter carves test from
        preassigned = None if split == "train" and "test" not in folders else split
        records += scan_imagefolder(os.path.join(root, name), preassigned)[0]
    return records, []


def parse_label(value: str) -> int:
    """A manifest label: 0, 1 or a class name."""
    value = value.strip()
    return int(value) if value in ("0", "1") else class_label(value)


def scan_csv(manifest: str) -> Scan:
    """A CSV with a header: ``path,label`` plus optional metadata columns; paths relative to its folder."""
    try:
        with open(manifest, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            rows, columns = list(reader), set(reader.fieldnames or ())
    except FileNotFoundError:
        raise DataError(f"{manifest}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"{manifest}: is a folder; data.format=csv needs the manifest file") from None
    missing = {"path", "label"} - columns
    if missing:
        raise DataError(f"{manifest}: needs columns path,label (missing {','.join(sorted(missing))})")
    folder = os.path.dirname(manifest)
    records = []
    for line, row in enumerate(rows, start=2):
        try:
            label = parse_label(row["label"] or "")
        except DataError as e:
            raise DataError(f"{manifest}, line {line}: {e}") from None
        if not (row["path"] or "").strip():
            raise DataError(f"{manifest}, line {line}: empty path")
        meta = {k: v or "" for k, v in row.items() if k not in ("path", "label", None)}  # None: extra cells
        records.append(Record(os.path.join(folder, row["path"].strip()), label, meta))
    return records, []


def age_band(age: int) -> str:
    return next((band for upper, band in AGE_BANDS if age < upper), "60+")


def parse_utkface_name(name: str) -> tuple[int, dict[str, str]] | None:
    """(label, metadata) from ``AGE_GENDER_RACE_DATETIME.jpg.chip.jpg``, or None if it does not parse."""
    match = UTK_NAME.match(name)
    if match is None:
        return None
    age, gender, race = (int(g) for g in match.groups())
    return gender, {"age": str(age), "age_band": age_band(age), "race": UTK_RACES[race]}


def scan_utkface(root: str) -> Scan:
    """UTKFace: gender (0 male, 1 female), age and race are in each file name."""
    require_folder(root)
    records, rejected = [], []
    for path in image_files(root):
        parsed = parse_utkface_name(os.path.basename(path))
        if parsed is None:
            rejected.append((path, "bad name"))
        else:
            records.append(Record(path, parsed[0], parsed[1]))
    return records, rejected


def scan_synthetic(folder: str, count: int, seed: int, image_size: int, female_fraction: float) -> Scan:
    """Generate the embedded dataset into ``folder`` (replacing what was there) and list it."""
    shutil.rmtree(folder, ignore_errors=True)  # a smaller count must not leave old images behind
    items = make_synthetic(folder, count, seed, image_size, female_fraction)
    return [Record(os.path.join(folder, rel), label, meta) for rel, label, meta in items], []


SCANNERS: dict[str, Callable[[str], Scan]] = {
    "imagefolder": scan_imagefolder,
    "presplit": scan_presplit,
    "csv": scan_csv,
    "utkface": scan_utkface,
}
LABELLED_FORMATS = tuple(SCANNERS)  # the layouts that carry labels on disk: every data.format but synthetic
