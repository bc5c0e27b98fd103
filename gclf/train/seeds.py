"""Every random stream training draws from, seeded from ``(seed, epoch)``: a resumed run draws
what an uninterrupted one drew."""

from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed torch, numpy and Python before anything random (model initialisation included)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _epoch_seed(seed: int, epoch: int) -> int:
    return seed * 100_003 + epoch


def seed_epoch(seed: int, epoch: int) -> torch.Generator:
    """Seed torch's global stream (dropout) from (seed, epoch); return the sampler's generator, seeded alike."""
    torch.manual_seed(_epoch_seed(seed, epoch))
    return torch.Generator().manual_seed(_epoch_seed(seed, epoch))


def augment_generator(seed: int, epoch: int, rank: int) -> torch.Generator:
    """The batched augmentation's own random stream: seeded from (seed, epoch) like the sampler's, so a
    resumed run draws the same, and apart per rank, so DDP ranks draw their own parameters."""
    return torch.Generator().manual_seed(_epoch_seed(seed, epoch) * 1_000 + 1 + rank)
