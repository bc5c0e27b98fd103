"""The training :class:`~torch.utils.data.Dataset`: batches gathered by index from decoded uint8 images.

A batch is fetched whole (``__getitems__``), one gather from the decoded-image store, so the
DataLoader does no per-image work unless a per-image transform is asked for.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch


class ImageDataset(torch.utils.data.Dataset):
    """Decoded uint8 images (N, 3, S, S) and their float labels.

    Without ``transforms`` a batch is the uint8 images as stored (channels-last), to be augmented and
    made float on the training device. ``transforms``, when given, holds one per-image transform per
    class label (0, 1), usually the same one, ending in a float [0, 1] conversion; batches are then float.
    ``targets``, when given, holds a row of per-sample training targets (the distillation teacher's,
    :mod:`gclf.train.distill`) for each image; a batch then carries its rows as a third element.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        transforms: Sequence[Callable] | None = None,
        targets: torch.Tensor | None = None,
    ):
        self.images = images
        self.labels = labels.float()
        self.transforms = transforms
        self.targets = targets

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        return tuple(batch[0] for batch in self.__getitems__([index]))

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, ...]:
        index = torch.as_tensor(indices, dtype=torch.long)
        labels = self.labels[index]
        if self.transforms is None:
            images = self.images[index].contiguous(memory_format=torch.channels_last)
        else:
            per_image = [self.transforms[int(label)](self.images[i]) for i, label in zip(indices, labels)]
            images = torch.stack([x.float().div(255) if x.dtype == torch.uint8 else x for x in per_image])
        return (images, labels) if self.targets is None else (images, labels, self.targets[index])


def whole_batch(batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """The DataLoader's collate function: ``__getitems__`` already made the batch."""
    return batch
