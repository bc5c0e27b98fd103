"""Training augmentation on decoded uint8 image tensors (C, H, W), the same for both classes."""

from __future__ import annotations

import torch
from torchvision.transforms import v2

from gclf.params import AugmentParams


def train_transform(p: AugmentParams, image_size: int) -> v2.Compose:
    """Random resized crop, flip, rotation, colour jitter, grayscale, then float [0, 1] and erasing.

    Each op with strength 0 is left out, so ``crop_scale=1`` and zeros everywhere give the identity.
    """
    ops: list = []
    if p.crop_scale < 1:
        ops.append(v2.RandomResizedCrop(image_size, scale=(p.crop_scale, 1.0), ratio=(0.9, 1.1), antialias=True))
    if p.hflip > 0:
        ops.append(v2.RandomHorizontalFlip(p.hflip))
    if p.rotation > 0:
        ops.append(v2.RandomRotation(p.rotation))
    if p.color_jitter > 0:
        j = p.color_jitter
        ops.append(v2.ColorJitter(brightness=j, contrast=j, saturation=j, hue=min(j / 4, 0.5)))
    if p.grayscale > 0:
        ops.append(v2.RandomGrayscale(p.grayscale))
    ops.append(v2.ToDtype(torch.float32, scale=True))
    if p.erasing > 0:
        ops.append(v2.RandomErasing(p.erasing))
    return v2.Compose(ops)
