"""Dataset ingestion: scan a dataset layout, reject unreadable files and duplicates, split it
stratified into train/val/test manifests, and decode images once into a uint8 tensor cache.

A manifest is a CSV with columns ``path,label,<metadata...>``; ``path`` opens from the repo root,
``label`` is 0 (male) or 1 (female, the positive class), see :data:`gclf.model.CLASSES`.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import os
import re
import shutil
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
from PIL import Image, ImageOps
from tqdm import tqdm

from gclf.errors import UserError
from gclf.io import atomic_write, write_text
from gclf.model import CLASSES
from gclf.synthetic import make_synthetic

SPLITS = ("train", "val", "test")
SPLITS_DIR = "data/splits"
CACHE_DIR = ".cache/images"
WORKERS = 2  # threads hashing and decoding: PIL and file reads release the GIL
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
CLASS_NAMES = {
    **dict.fromkeys(("male", "males", "man", "men", "m"), 0),
    **dict.fromkeys(("female", "females", "woman", "women", "f"), 1),
}
SPLIT_NAMES = {
    **dict.fromkeys(("train", "training"), "train"),
    **dict.fromkeys(("val", "valid", "validation"), "val"),
    **dict.fromkeys(("test", "testing"), "test"),
}
HELD_OUT_RANK = {"test": 2, "val": 1, "train": 0, None: 0}  # which duplicate copy to keep
UTK_NAME = re.compile(r"(\d+)_([01])_([0-4])_\d+\.")  # AGE_GENDER_RACE_DATETIME.jpg.chip.jpg
UTK_RACES = ("white", "black", "asian", "indian", "others")
AGE_BANDS = ((10, "0-9"), (20, "10-19"), (40, "20-39"), (60, "40-59"))  # (upper bound, band); older: 60+


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
Scan = tuple[list[Record], Rejected]


# --- scanning ---------------------------------------------------------------------------------


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
    found = []
    for parent, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [os.path.join(parent, f) for f in sorted(files) if is_image_name(f) and not f.startswith(".")]
    return found


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


# --- validation and deduplication -------------------------------------------------------------


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


# --- splitting --------------------------------------------------------------------------------


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


# --- manifests --------------------------------------------------------------------------------


def csv_text(header: list[str], rows: Iterable[Iterable]) -> str:
    """CSV text with ``\n`` line endings, so manifests are byte-identical on every platform."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


def manifest_text(records: Iterable[Record], meta_columns: list[str]) -> str:
    """Manifest CSV ``path,label,sha1,<meta_columns>``, rows sorted by path."""
    ordered = sorted(records, key=lambda r: r.path)
    rows = ([r.path, r.label, r.sha1, *(r.meta.get(c, "") for c in meta_columns)] for r in ordered)
    return csv_text(["path", "label", "sha1", *meta_columns], rows)


def read_manifest(path: str) -> list[Record]:
    """The records of a manifest written by :func:`build_splits`."""
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
    if not kept:
        raise DataError(f"{path}: none of the {len(records)} images is usable; see {out_dir}/skipped.csv")
    split = stratified_split(kept, val_fraction, test_fraction, seed)
    splits = {s: [r for r in split if r.split == s] for s in SPLITS}
    meta_columns = sorted({k for r in split for k in r.meta})
    for name, rs in splits.items():
        write_text(os.path.join(out_dir, f"{name}.csv"), manifest_text(rs, meta_columns))
    write_text(os.path.join(out_dir, "skipped.csv"), csv_text(["path", "reason"], sorted(rejected)))
    return summarize(splits, rejected, scanned, conflict_groups)


# --- decoding ---------------------------------------------------------------------------------


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode as 8-bit RGB; transparency is composited onto white."""
    if image.mode.startswith("I"):  # 16/32-bit grayscale: PIL's convert would clip, so rescale
        wide = np.asarray(image, dtype=np.float64) / (257 if image.mode.startswith("I;16") else 65535 / 255)
        image = Image.fromarray(np.clip(np.round(wide), 0, 255).astype(np.uint8))
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        image = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image.alpha_composite(rgba)
    return image.convert("RGB")


def decode_image(path: str, image_size: int) -> np.ndarray:
    """(S, S, 3) uint8: EXIF orientation applied, RGB, resized with antialiased bilinear."""
    with Image.open(path) as image:
        upright = ImageOps.exif_transpose(image)
        rgb = to_rgb(upright)
    return np.asarray(rgb.resize((image_size, image_size), Image.BILINEAR, reducing_gap=None))


def cache_key(paths: list[str], image_size: int) -> str:
    """sha1 of the sorted paths, each file's size and mtime, and the image size."""
    digest = hashlib.sha1(f"size={image_size}\n".encode())
    for path in sorted(paths):
        stat = os.stat(path)
        digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def decode_all(paths: list[str], image_size: int) -> np.ndarray:
    """(N, S, S, 3) uint8, decoded by a small thread pool under a progress bar."""
    array = np.empty((len(paths), image_size, image_size, 3), np.uint8)
    with ThreadPoolExecutor(WORKERS) as pool:
        decoded = pool.map(lambda p: decode_image(p, image_size), paths)
        for i, pixels in enumerate(tqdm(decoded, total=len(paths), desc="decoding images", unit="img")):
            array[i] = pixels
    return array


def save_array(path: str, array: np.ndarray) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:  # a file object: np.save would append .npy to a name
            np.save(f, array)

    atomic_write(path, write)


def load_images(paths: list[str], image_size: int, cache_dir: str | None = None) -> torch.Tensor:
    """uint8 (N, 3, S, S) in the order of ``paths``; with ``cache_dir`` each set is decoded once."""
    unique = sorted(set(paths))
    missing = next((p for p in unique if not os.path.isfile(p)), None)
    if missing is not None:
        raise DataError(f"{missing}: image is missing; run `dvc repro split` to rebuild the manifests")
    cache = os.path.join(cache_dir, cache_key(unique, image_size) + ".npy") if cache_dir else None
    if cache and os.path.exists(cache):
        array = np.load(cache)
    else:
        array = decode_all(unique, image_size)
        if cache:
            save_array(cache, array)
    index = {p: i for i, p in enumerate(unique)}
    return torch.from_numpy(array[[index[p] for p in paths]]).permute(0, 3, 1, 2).contiguous()


def load_split(
    split: str, image_size: int, splits_dir: str = SPLITS_DIR, cache_dir: str | None = CACHE_DIR
) -> tuple[torch.Tensor, torch.Tensor, list[Record]]:
    """(uint8 images (N, 3, S, S), float labels (N,), records) of one split's manifest."""
    records = read_manifest(os.path.join(splits_dir, f"{split}.csv"))
    images = load_images([r.path for r in records], image_size, cache_dir)
    return images, torch.tensor([r.label for r in records], dtype=torch.float32), records


class ImageDataset(torch.utils.data.Dataset):
    """Decoded uint8 images and their labels; items are (float image in [0, 1], float label).

    ``transforms``, when given, holds one transform per class label (0, 1), usually the same one.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transforms: Sequence[Callable] | None = None):
        self.images = images
        self.labels = labels.float()
        self.transforms = transforms

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.images[index]
        if self.transforms is not None:
            image = self.transforms[int(self.labels[index])](image)
        # training transforms end in a float [0, 1] conversion; raw pixels still need one
        image = image.float().div(255) if image.dtype == torch.uint8 else image.float()
        return image, self.labels[index]
