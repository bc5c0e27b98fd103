"""The training input pipeline, built for a GPU: what the training loop and ``gclf bench-data`` read.

Batches are gathered whole from the memory-mapped decoded-image store (:mod:`gclf.data.images`),
copied to the device as uint8 (a quarter of the bytes of float; pinned on CUDA, without blocking),
and augmented there, per sample, in one batched pass (:class:`gclf.train.augment.BatchAugment`);
``augment.backend: per-image`` keeps torchvision's per-image path in the DataLoader as the reference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, WeightedRandomSampler

from gclf.data.dataset import ImageDataset, whole_batch
from gclf.errors import UserError
from gclf.params import AugmentParams
from gclf.train.augment import BatchAugment, batch_augmenter, class_transforms
from gclf.train.seeds import seed_epoch


@dataclass(frozen=True)
class InputPipeline:
    """Where training images are augmented: per image in the DataLoader (``transforms``: one per class
    label, 0 and 1, ending in float [0, 1]), or per batch on the device (``batch_augment``, given the
    uint8 batch, its labels and a generator). :func:`input_pipeline` sets one of them."""

    transforms: Sequence[Callable] | None = None
    batch_augment: BatchAugment | None = None


def input_pipeline(p: AugmentParams, image_size: int, train_labels: torch.Tensor) -> InputPipeline:
    """The augmentation ``p.backend`` names (:data:`gclf.params.AUGMENT_BACKENDS`): per-image
    transforms by class, or the batched one."""
    if p.backend == "per-image":
        return InputPipeline(transforms=class_transforms(p, image_size, train_labels))
    return InputPipeline(batch_augment=batch_augmenter(p, image_size, train_labels))


def progressive_sizes(start: int, final: int, epochs: int, multiple: int = 16) -> tuple[int, ...]:
    """Training image size per epoch, from ``start`` growing linearly to ``final`` in the last epoch,
    rounded to ``multiple`` px (EfficientNet's stride is 32; 16 keeps the steps small). Small early
    epochs are cheap (at 96 px a step costs 0.45 of one at 128 px here) and the network ends at
    the size it is evaluated at. ``start`` 0 turns it off: ()."""
    if not start or epochs < 1:
        return ()
    if epochs == 1:
        return (final,)
    sizes = [start + (final - start) * e / (epochs - 1) for e in range(epochs)]
    return tuple(min(final, max(multiple, multiple * round(s / multiple))) for s in sizes[:-1]) + (final,)


def train_loader(
    dataset: ImageDataset,
    *,
    batch_size: int,
    seed: int,
    epoch: int,
    rank: int = 0,
    world: int = 1,
    weighted_sampler: bool = False,
    num_workers: int = 0,
    pin: bool = False,
) -> DataLoader:
    """The epoch's batches: shuffled (or class-balanced, or this rank's shard) from ``(seed, epoch)``,
    each gathered whole; ``pin``: page-locked, for copies to CUDA that do not block."""
    generator = seed_epoch(seed, epoch)
    if world > 1 and weighted_sampler:
        raise UserError("data.weighted_sampler is not supported with several processes (torchrun); turn it off")
    if world > 1:
        sampler = DistributedSampler(dataset, world, rank, shuffle=True, seed=seed)
        sampler.set_epoch(epoch)
    elif weighted_sampler:
        labels = dataset.labels.long()
        counts = torch.bincount(labels, minlength=2).clamp(min=1).float()
        sampler = WeightedRandomSampler((1 / counts)[labels], len(labels), generator=generator)
    else:
        sampler = RandomSampler(dataset, generator=generator)
    return DataLoader(
        dataset,
        batch_size,
        sampler=sampler,
        collate_fn=whole_batch,
        num_workers=num_workers,
        pin_memory=pin,
        # forked workers inherit the store's memory map; spawned ones would be sent a copy of the images
        multiprocessing_context="fork" if num_workers else None,
        drop_last=len(dataset) > batch_size,
    )


def device_batch(
    x: torch.Tensor,
    y: torch.Tensor,
    device: torch.device,
    batch_augment: BatchAugment | None,
    generator: torch.Generator,
    size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A loader batch as the model trains on it: on ``device`` (uint8, a quarter of float's bytes),
    augmented there when ``batch_augment`` is given, float [0, 1], channels-last, resized to ``size``
    px when given (progressive resizing)."""
    y = y.to(device, non_blocking=True)
    x = x.to(device, non_blocking=True)
    if batch_augment is not None:
        x = batch_augment(x, y, generator)
    x = x.contiguous(memory_format=torch.channels_last)
    if size is not None and size != x.shape[-1]:
        x = F.interpolate(x, size=size, mode="bilinear", antialias=True)
    return x, y
