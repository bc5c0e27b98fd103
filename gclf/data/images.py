"""Images as the model sees them: decoded (EXIF orientation applied, any mode to 8-bit RGB, antialiased
resize) into uint8 arrays, each set of files decoded once into an on-disk cache; a split's tensors.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from PIL import Image, ImageOps
from tqdm import tqdm

from gclf.data import WORKERS
from gclf.data.manifest import SPLITS_DIR, DataError, Record, read_manifest
from gclf.io import atomic_write

CACHE_DIR = ".cache/images"


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
