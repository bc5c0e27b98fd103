"""Batched inference with test-time augmentation: probabilities averaged over views.

Every view keeps the image's label (a flip or a crop of a face is the same person), so the
average is over probabilities of the same class; ``("identity",)`` is plain inference.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

VIEWS = ("identity", "hflip", "center_crop", "corner_crops", "scale_up")


def _crop_resize(x: torch.Tensor, top: int, left: int, size: int) -> torch.Tensor:
    crop = x[..., top : top + size, left : left + size]
    return F.interpolate(crop, size=x.shape[-2:], mode="bilinear", align_corners=False, antialias=True)


def view_batches(x: torch.Tensor, views: Sequence[str]) -> list[torch.Tensor]:
    """The float batch ``x`` (N, 3, S, S) as seen by each named view (corner_crops gives four)."""
    s = x.shape[-1]
    crop = round(s * 0.875)  # the usual 224/256 crop ratio
    out = []
    for view in views:
        if view == "identity":
            out.append(x)
        elif view == "hflip":
            out.append(torch.flip(x, dims=[-1]))
        elif view == "center_crop":
            out.append(_crop_resize(x, (s - crop) // 2, (s - crop) // 2, crop))
        elif view == "corner_crops":
            out += [_crop_resize(x, top, left, crop) for top in (0, s - crop) for left in (0, s - crop)]
        elif view == "scale_up":
            out.append(_crop_resize(x, (s - round(s * 0.8)) // 2, (s - round(s * 0.8)) // 2, round(s * 0.8)))
        else:
            raise ValueError(f"unknown TTA view {view!r}; use {', '.join(VIEWS)}")
    return out


def inference_views(tta_views: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """Metric key prefix -> views: plain inference (``""``) and TTA (``"tta_"``), as the stages report them."""
    return {"": ("identity",), "tta_": tuple(tta_views)}


@torch.no_grad()
def view_logits(
    model: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    batch_size: int = 128,
    views: Sequence[str] = ("identity",),
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """Logits (V, N) of uint8 images (N, 3, S, S), one row per view batch (corner_crops gives four)."""
    if isinstance(model, torch.nn.Module):
        model.eval()
    logits = []
    for start in range(0, len(images), batch_size):
        x = images[start : start + batch_size].to(device).float().div_(255)
        logits.append(torch.stack([model(v).float() for v in view_batches(x, views)]).cpu())
    return torch.cat(logits, dim=1).numpy() if logits else np.zeros((1, 0), dtype=np.float32)


def probs_from_logits(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """P(positive) averaged over views (rows of ``logits``), each view's logit divided by ``temperature``."""
    return torch.sigmoid(torch.from_numpy(np.asarray(logits, np.float32)) / temperature).mean(0).numpy()


def predict_probs(
    model: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    batch_size: int = 128,
    views: Sequence[str] = ("identity",),
    device: torch.device | str = "cpu",
    temperature: float = 1.0,
) -> np.ndarray:
    """Probability of the positive class for uint8 images (N, 3, S, S), averaged over ``views``,
    calibrated by ``temperature`` (fitted on validation, see :func:`gclf.threshold.fit_temperature`)."""
    return probs_from_logits(view_logits(model, images, batch_size, views, device), temperature)
