"""What the training phases optimise with: the trained parameters and their groups (layer-wise LR
decay, no weight decay on 1-D weights), the optimisers, the learning-rate schedules, and the EMA
of the weights that is validated and kept instead of the live ones."""

from __future__ import annotations

import math

import torch
from timm.models import group_parameters
from torch import nn
from torch.optim.lr_scheduler import LambdaLR, OneCycleLR, ReduceLROnPlateau
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


def freeze_backbone(model: nn.Module) -> list[nn.Parameter]:
    """Freeze ``model.backbone``; return the parameters left to train (the head's)."""
    for p in model.backbone.parameters():
        p.requires_grad_(False)
    return [p for p in model.parameters() if p.requires_grad]


def plateau(optimizer: torch.optim.Optimizer, factor: float, patience: int, monitor: str) -> ReduceLROnPlateau:
    """Cut the learning rate by ``factor`` after ``patience`` epochs without ``monitor`` improving."""
    mode = "min" if monitor == "val_loss" else "max"
    return ReduceLROnPlateau(optimizer, mode=mode, factor=factor, patience=patience)


def steps_per_batch(scheduler) -> bool:
    """Whether ``scheduler`` steps after every batch (one-cycle, cosine) or once per epoch, on the
    monitored score (ReduceLROnPlateau)."""
    return not isinstance(scheduler, ReduceLROnPlateau)


def adam_plateau(params, lr: float, weight_decay: float, factor: float, patience: int, monitor: str):
    """Phase 1: Adam + ReduceLROnPlateau on ``monitor``."""
    optimizer = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    return optimizer, plateau(optimizer, factor, patience, monitor)


def layer_decay_groups(
    model: nn.Module, lr: float, weight_decay: float, layer_decay: float, extra: nn.Module | None = None
) -> list[dict]:
    """AdamW groups with layer-wise LR decay over the backbone's stages (timm's coarse grouping).

    The head gets ``lr``; each stage below it ``layer_decay`` times the one above. Biases and
    normalisation weights (1-D) get no weight decay. ``extra`` (the distillation projection) trains
    with the head.
    """
    stage_of = {}
    stages = group_parameters(model.backbone, model.backbone.group_matcher(coarse=True))
    for stage, names in stages.items():
        stage_of.update({f"backbone.{n}": stage for n in names})
    top = max(stages) + 1
    groups: dict[tuple[int, bool], dict] = {}
    named = list(model.named_parameters())
    if extra is not None:
        named += [(f"distill.{name}", p) for name, p in extra.named_parameters()]
    for name, p in named:
        if not p.requires_grad:
            continue
        depth = stage_of.get(name, top)
        decay = p.ndim > 1
        g = groups.setdefault(
            (depth, decay),
            {
                "params": [],
                "lr": lr * layer_decay ** (top - depth),
                "weight_decay": weight_decay if decay else 0.0,
            },
        )
        g["params"].append(p)
    return [groups[k] for k in sorted(groups)]


def adamw_schedule(
    model,
    lr: float,
    weight_decay: float,
    layer_decay: float,
    schedule: str,
    warmup_fraction: float,
    total_steps: int,
    plateau_args: tuple[float, int, str] = (0.5, 1, "val_auc"),
    extra: nn.Module | None = None,
):
    """Phase 2: AdamW with LLRD, and a one-cycle or warm-up + cosine schedule stepped per batch,
    or ReduceLROnPlateau stepped per epoch (``plateau_args``: factor, patience, monitor).
    ``extra``: more parameters to train at the head's rate (the distillation projection)."""
    groups = layer_decay_groups(model, lr, weight_decay, layer_decay, extra)
    optimizer = torch.optim.AdamW(groups, lr=lr)
    if schedule == "plateau":  # with weight_decay 0 this is the seed project's Adam + ReduceLROnPlateau
        return optimizer, plateau(optimizer, *plateau_args)
    total_steps = max(total_steps, 1)
    if schedule == "onecycle":
        # OneCycleLR divides by each phase's length in steps, (pct * total - 1) and total * (1 - pct):
        # keep both away from zero however few the steps or however short the asked warm-up
        pct = min(max(warmup_fraction, 1.5 / total_steps), 1 - 0.5 / total_steps)
        return optimizer, OneCycleLR(optimizer, [g["lr"] for g in groups], total_steps=total_steps, pct_start=pct)
    warmup = int(warmup_fraction * total_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(total_steps - warmup, 1)))

    return optimizer, LambdaLR(optimizer, factor)


def ema_model(model: nn.Module, decay: float) -> AveragedModel | None:
    """An exponential moving average of ``model``'s weights and buffers, updated after every step;
    None when ``decay`` is 0 (off)."""
    if not decay:
        return None
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
