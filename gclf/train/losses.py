"""Binary losses on logits: BCE, class-weighted BCE, and focal loss with a per-sample alpha.

All take logits and float targets of shape (N,) and return the mean over the batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def positive_weight(labels: torch.Tensor) -> float:
    """``pos_weight`` that balances the classes: count(negative) / count(positive)."""
    positives = float(labels.sum())
    negatives = float(labels.numel()) - positives
    if positives == 0 or negatives == 0:
        return 1.0
    return negatives / positives


def focal_loss(logits: torch.Tensor, targets: torch.Tensor, gamma: float, alpha: float) -> torch.Tensor:
    """Binary focal loss (Lin et al. 2017).

    ``alpha`` weighs each positive sample and ``1 - alpha`` each negative one, per sample, so it
    changes the loss (a scalar alpha broadcast over both terms alike would cancel out of the
    gradient direction). With ``gamma = 0`` this is the alpha-weighted BCE.
    """
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_true = torch.exp(-bce)  # probability given to the true class
    alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
    return (alpha_t * (1 - p_true) ** gamma * bce).mean()


def make_loss(
    name: str, train_labels: torch.Tensor, gamma: float = 2.0, alpha: float = 0.5, label_smoothing: float = 0.0
):
    """The loss named in params: ``bce``, ``weighted_bce`` (pos_weight from the train counts) or ``focal``.

    ``label_smoothing`` eps trains towards eps / 2 and 1 - eps / 2 instead of 0 and 1.
    """
    loss = _loss(name, train_labels, gamma, alpha)
    if not label_smoothing:
        return loss
    return lambda logits, targets: loss(logits, targets * (1 - label_smoothing) + label_smoothing / 2)


def _loss(name: str, train_labels: torch.Tensor, gamma: float, alpha: float):
    if name == "bce":
        return lambda logits, targets: F.binary_cross_entropy_with_logits(logits, targets)
    if name == "weighted_bce":
        pos_weight = torch.tensor(positive_weight(train_labels))
        return lambda logits, targets: F.binary_cross_entropy_with_logits(
            logits, targets, pos_weight=pos_weight.to(logits.device)
        )
    if name == "focal":
        return lambda logits, targets: focal_loss(logits, targets, gamma, alpha)
    raise ValueError(f"unknown loss {name!r}")
