"""``gclf bench-data``: the training input pipeline's own benchmark, in images/s and peak memory.

It reads a dataset as the training stages do: scanned by the same formats, decoded into the same
decoded-image store (first, when the store is cold, timed apart), batched by the same loader and
sampler, copied to the device and augmented by the same code (``augment.backend``), with the default
augmentation params. Memory is the peak anonymous resident memory (RssAnon) of the process,
sampled every few milliseconds: the page cache behind the memory-mapped store is the kernel's to
drop and is not counted.
"""

from __future__ import annotations

import itertools
import time
from typing import Any

import torch
from tqdm import tqdm

from gclf.data.dataset import ImageDataset
from gclf.data.formats import SCANNERS
from gclf.data.images import CACHE_DIR, load_images
from gclf.data.manifest import DataError
from gclf.params import AugmentParams
from gclf.train.memory import PeakMemory
from gclf.train.pipeline import device_batch, input_pipeline, train_loader


def bench_data(
    data: str,
    data_format: str,
    image_size: int,
    batch_size: int,
    augment: str,
    device: torch.device,
    batches: int = 0,
    num_workers: int = 0,
    cache_dir: str = CACHE_DIR,
    seed: int = 0,
) -> dict[str, Any]:
    """Decode ``data`` into the store (if cold), then time one epoch of training batches (the first
    ``batches`` of it when > 0) made on ``device``; returns the figures :func:`bench_data_command` prints."""
    if data_format not in SCANNERS:
        raise DataError(f"--format: expected one of {', '.join(SCANNERS)}, got {data_format!r}")
    records, _ = SCANNERS[data_format](data)
    if not records:
        raise DataError(f"{data}: no images found as {data_format}")
    labels = torch.tensor([r.label for r in records], dtype=torch.float32)
    with PeakMemory() as memory:
        start = time.perf_counter()
        images = load_images([r.path for r in records], image_size, cache_dir)
        store_s = time.perf_counter() - start
        pipeline = input_pipeline(AugmentParams(backend=augment), image_size, labels)
        dataset = ImageDataset(images, labels, pipeline.transforms)
        loader = train_loader(
            dataset, batch_size=batch_size, seed=seed, epoch=0, num_workers=num_workers, pin=device.type == "cuda"
        )
        generator = torch.Generator().manual_seed(seed)
        total = min(len(loader), batches) if batches > 0 else len(loader)
        seen, start = 0, time.perf_counter()
        for x, y in tqdm(itertools.islice(loader, total), total=total, desc=f"{augment} batches", unit="batch"):
            x, _ = device_batch(x, y, device, pipeline.batch_augment, generator)
            seen += len(x)
        if device.type == "cuda":
            torch.cuda.synchronize(device)  # the device's queued work counts too
        epoch_s = time.perf_counter() - start
    return {
        "augment": augment,
        "batch_size": batch_size,
        "device": device.type,
        "image_size": image_size,
        "images": len(records),
        "images_per_second": seen / epoch_s if epoch_s else 0.0,
        "images_timed": seen,
        "num_workers": num_workers,
        "peak_rss_anon_mb": memory.peak_mb,
        "store_mb": images.numel() / 1e6,
        "store_s": store_s,
        "threads": torch.get_num_threads(),
    }
