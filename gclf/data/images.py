"""Images as the model sees them: decoded (EXIF orientation applied, any mode to 8-bit RGB, antialiased
resize) into uint8 arrays; the decoded-image store that holds a split on disk, never whole in memory.

The store is one raw uint8 file per set of images, (N, S, S, 3) in the order asked for, named by the
sha1 of the files' contents (the manifests carry each file's sha1) and the size, as DVC names its
cache: a changed file never reuses stale pixels. It is decoded once, streaming, straight into the
file, then memory-mapped: a batch reads only its own rows, and the pages it reads belong to the page
cache (the kernel's to drop), not to the process. Its tensor is the (N, 3, S, S) view of that
memory, which is the channels-last layout the model trains in.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from PIL import Image, ImageOps
from tqdm import tqdm

from gclf.data import WORKERS
from gclf.data.manifest import SPLITS_DIR, DataError, Record, read_manifest

CACHE_DIR = ".cache/images"
DECODER_VERSION = 1  # part of the store's key: bump it when decode_image changes its pixels
CHUNK = 512  # images decoded per round: bounds the decoded images waiting to be written


# 16-bit levels to 8-bit, round(v / 257): a table indexed once, where arithmetic on a whole image
# would copy it to float64 (8 bytes a pixel: 400 MB for 50 megapixels)
LEVELS_16_TO_8 = np.round(np.arange(2**16) / 257).astype(np.uint8)


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode as 8-bit RGB; transparency is composited onto white."""
    if image.mode.startswith("I"):  # 16/32-bit grayscale: PIL's convert would clip, so rescale
        levels = np.asarray(image)
        if levels.dtype.kind != "u" or levels.dtype.itemsize != 2:  # 32-bit or signed: saturate to 16 bits
            levels = np.clip(levels, 0, 2**16 - 1)
        image = Image.fromarray(LEVELS_16_TO_8[levels])
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        image = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image.alpha_composite(rgba)
    return image.convert("RGB")


def read_rgb(path: str) -> np.ndarray | None:
    """The file as RGB uint8 at its own size (EXIF orientation applied), or None when unreadable."""
    try:
        with Image.open(path) as image:
            return np.asarray(to_rgb(ImageOps.exif_transpose(image)))
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


def decode_image(path: str, image_size: int) -> np.ndarray:
    """(S, S, 3) uint8: EXIF orientation applied, RGB, resized with antialiased bilinear."""
    with Image.open(path) as image:
        upright = ImageOps.exif_transpose(image)
        rgb = to_rgb(upright)
    return np.asarray(rgb.resize((image_size, image_size), Image.BILINEAR, reducing_gap=None))


def file_sha1(path: str) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def store_key(sha1s: list[str], image_size: int) -> str:
    """sha1 of the decoder version, the size and the files' sha1s in order: names the store's content."""
    digest = hashlib.sha1(f"decoder={DECODER_VERSION} size={image_size}\n".encode())
    for sha1 in sha1s:
        digest.update(f"{sha1}\n".encode())
    return digest.hexdigest()


def decode_into(array: np.ndarray, paths: list[str], image_size: int) -> None:
    """Decode ``paths`` into the rows of ``array`` (N, S, S, 3), a small thread pool a chunk at a time,
    under a progress bar."""
    with ThreadPoolExecutor(WORKERS) as pool, tqdm(total=len(paths), desc="decoding images", unit="img") as bar:
        for start in range(0, len(paths), CHUNK):
            chunk = paths[start : start + CHUNK]
            for i, pixels in enumerate(pool.map(lambda p: decode_image(p, image_size), chunk), start):
                array[i] = pixels
            bar.update(len(chunk))


def build_store(path: Path, paths: list[str], image_size: int) -> None:
    """Decode ``paths`` into a new store file at ``path``: written beside it, synced, then renamed,
    so a killed decode leaves no store behind, only a temporary file the next build replaces."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        array = np.memmap(tmp, np.uint8, "w+", shape=(len(paths), image_size, image_size, 3))
        decode_into(array, paths, image_size)
        array.flush()
        del array
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def open_store(path: Path, count: int, image_size: int) -> torch.Tensor:
    """The store at ``path`` as a read-only-by-convention (N, 3, S, S) uint8 tensor over a private
    memory map (writes would stay in the process; nothing writes)."""
    shape = (count, image_size, image_size, 3)
    if count == 0:
        return torch.empty(shape, dtype=torch.uint8).permute(0, 3, 1, 2)
    nhwc = torch.from_file(str(path), shared=False, size=int(np.prod(shape)), dtype=torch.uint8).view(shape)
    return nhwc.permute(0, 3, 1, 2)


def load_images(
    paths: list[str], image_size: int, cache_dir: str | None = None, sha1s: list[str] | None = None
) -> torch.Tensor:
    """uint8 (N, 3, S, S) in the order of ``paths``, channels-last in memory.

    With ``cache_dir`` the images live in a decoded-image store there, keyed by content (``sha1s``,
    computed from the files when not given) and decoded only when no store has that key; without,
    they are decoded into memory.
    """
    missing = next((p for p in paths if not os.path.isfile(p)), None)
    if missing is not None:
        raise DataError(f"{missing}: image is missing; run `dvc repro split` to rebuild the manifests")
    if cache_dir is None:
        array = np.empty((len(paths), image_size, image_size, 3), np.uint8)
        decode_into(array, paths, image_size)
        return torch.from_numpy(array).permute(0, 3, 1, 2)
    sha1s = sha1s if sha1s and all(sha1s) else [file_sha1(p) for p in paths]
    store = Path(cache_dir) / f"{store_key(sha1s, image_size)}.u8"
    # Under torchrun one process per machine decodes (the store is per machine); the others wait.
    distributed = dist.is_available() and dist.is_initialized()
    if not distributed or int(os.environ.get("LOCAL_RANK", 0)) == 0:
        ensure_store(store, paths, image_size)
    if distributed:
        dist.barrier()
    return open_store(store, len(paths), image_size)


def ensure_store(store: Path, paths: list[str], image_size: int) -> None:
    """Build the store at ``store`` unless a whole one is there; one of the wrong size (cut short by
    a disk fault or a copy) is decoded again."""
    expected = len(paths) * image_size * image_size * 3
    if store.exists() and store.stat().st_size != expected:
        print(f"{store}: decoded-image store is {store.stat().st_size} bytes, not {expected}; decoding again")
        store.unlink()
    if not store.exists():
        store.parent.mkdir(parents=True, exist_ok=True)
        build_store(store, paths, image_size)


def load_split(
    split: str, image_size: int, splits_dir: str = SPLITS_DIR, cache_dir: str | None = CACHE_DIR
) -> tuple[torch.Tensor, torch.Tensor, list[Record]]:
    """(uint8 images (N, 3, S, S), float labels (N,), records) of one split's manifest."""
    records = read_manifest(os.path.join(splits_dir, f"{split}.csv"))
    images = load_images([r.path for r in records], image_size, cache_dir, [r.sha1 for r in records])
    return images, torch.tensor([r.label for r in records], dtype=torch.float32), records
