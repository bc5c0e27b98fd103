"""The two training phases' common ends: :func:`run_phase` calls :func:`gclf.train.loop.fit` with
what a stage's params decide (loss, augmentation, resumable state, DVCLive), and :func:`save_phase`
writes the phase's model and metric files. ``stages/train_phase1.py`` and ``stages/train_phase2.py``
build the model, optimiser and schedule and call these."""

from __future__ import annotations

import dataclasses

import torch
import torch.distributed as dist
from torch import nn

from gclf.device import init_distributed
from gclf.io import write_json
from gclf.live import EpochLog
from gclf.train.distill import Distiller
from gclf.train.loop import FitConfig, FitResult, fit
from gclf.train.losses import make_loss
from gclf.train.model import save_model
from gclf.train.pipeline import input_pipeline
from gclf.train.state import resume_key, state_path


def run_phase(
    name: str,
    p,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler,
    cfg: FitConfig,
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    device: torch.device,
    inputs: list[str],
    distiller: Distiller | None = None,
) -> FitResult:
    """:func:`~gclf.train.loop.fit` with what both phases share: the loss and augmentation from params
    ``p``, a resumable state at :func:`~gclf.train.state.state_path` keyed by the params and the
    ``inputs`` files, each epoch logged with DVCLive to ``plots/NAME/`` (:class:`gclf.live.EpochLog`,
    rank 0 only); the ``distiller`` (:func:`gclf.train.distill.make_distiller`) when distillation is on."""
    rank, _ = init_distributed()

    return fit(
        model,
        train,
        val,
        make_loss(p.loss, train[1], p.focal.gamma, p.focal.alpha, p.label_smoothing),
        optimizer,
        scheduler,
        cfg,
        input_pipeline(p.augment, p.data.image_size, train[1]),
        device,
        state_path=state_path(name),
        state_key=resume_key(dataclasses.asdict(p), inputs),
        desc=name,
        distiller=distiller,
        on_epoch=EpochLog(name) if rank == 0 else None,
    )


def save_phase(name: str, result: FitResult, meta: dict, monitor: str) -> None:
    """Write a phase's outputs: ``models/NAME.pt``, ``metrics/NAME.json`` (best epoch's validation
    scores; deterministic) and ``metrics/speed/NAME.json`` (timing; varies run to run); the
    per-epoch curves are already in ``plots/NAME/`` (:func:`run_phase`). Under ``torchrun`` only
    rank 0 writes: every rank holds the same result."""
    if dist.is_initialized() and dist.get_rank() != 0:
        return
    save_model(f"models/{name}.pt", result.model, meta)
    best = next((r for r in result.history if r["epoch"] == result.best_epoch), {})
    fallback = result.distill_fallback_faces
    write_json(
        f"metrics/{name}.json",
        {
            "best_epoch": result.best_epoch,
            "epochs_run": len(result.history),
            "monitor": monitor,
            **{k: v for k, v in best.items() if k.startswith("val_")},
            **({} if fallback is None else {"distill_fallback_faces": fallback}),
        },
    )
    write_json(
        f"metrics/speed/{name}.json",
        {
            "train_images_per_s": result.train_images_per_s,
            "train_wall_s": result.train_wall_s,
            "peak_rss_anon_mb": result.peak_rss_anon_mb,
        },
        digits=1,
    )
