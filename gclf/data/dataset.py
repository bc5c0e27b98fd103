"""The training :class:`~torch.utils.data.Dataset`: decoded uint8 images and labels, augmented per class."""

from __future__ import annotations

from typing import Callable, Sequence

import torch


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
