"""Training augmentation on decoded uint8 image tensors (C, H, W), the same for both classes by default."""

from __future__ import annotations

import dataclasses

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


def stronger(p: AugmentParams, factor: float) -> AugmentParams:
    """``p`` with crop, rotation, jitter, grayscale and erasing ``factor`` times as strong (capped)."""
    return dataclasses.replace(
        p,
        crop_scale=max(0.1, 1 - (1 - p.crop_scale) * factor),
        rotation=min(180.0, p.rotation * factor),
        color_jitter=min(1.0, p.color_jitter * factor),
        grayscale=min(1.0, p.grayscale * factor),
        erasing=min(1.0, p.erasing * factor),
    )


def class_transforms(p: AugmentParams, image_size: int, labels: torch.Tensor) -> tuple[v2.Compose, v2.Compose]:
    """The training transform of label 0 and of label 1.

    One shared transform unless ``p.minority_strength > 1``: then the class with fewer train
    ``labels`` gets :func:`stronger` augmentation, as one reference project did. That is a
    shortcut risk (the network can read the class off augmentation artefacts), so it is opt-in.
    """
    same = train_transform(p, image_size)
    if p.minority_strength == 1:
        return same, same
    strong = train_transform(stronger(p, p.minority_strength), image_size)
    minority = int(labels.float().mean() < 0.5)  # fewer positives than negatives: label 1
    return (same, strong) if minority == 1 else (strong, same)
