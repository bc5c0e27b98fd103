"""The training loop both phases share.

One loop, read top to bottom in :func:`fit`: per epoch, seed, shuffle, train (AMP on CUDA),
validate on the EMA or live weights, keep the best, checkpoint, maybe stop early. It runs as one
process on CPU or GPU, or under ``torchrun`` (DDP: each rank trains on its shard of the data;
rank 0 writes files, every rank resumes from rank 0's state; see :mod:`gclf.device`). What it
reads is :mod:`gclf.train.pipeline`'s, what it optimises with :mod:`gclf.train.optim`'s, what it
saves between epochs :mod:`gclf.train.state`'s.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel
from torch.utils.data import DataLoader

from gclf.data.dataset import ImageDataset
from gclf.device import init_distributed
from gclf.errors import UserError
from gclf.metrics import binary_metrics
from gclf.progress import progress
from gclf.train.augment import BatchAugment
from gclf.train.distill import Distiller, student_forward
from gclf.train.memory import PeakMemory
from gclf.train.optim import ema_model, steps_per_batch
from gclf.train.pipeline import InputPipeline, device_batch, train_loader
from gclf.train.seeds import augment_generator
from gclf.train.state import Stepped, best_model, new_state, resume, save_state, track_best
from gclf.tta import predict_probs


@dataclass(frozen=True)
class FitConfig:
    epochs: int
    batch_size: int
    monitor: str  # val_auc | val_f1 | val_accuracy | val_loss
    seed: int
    grad_clip: float = 0.0  # max gradient norm; 0 = off
    ema_decay: float = 0.0  # 0 = off
    early_stop_patience: int = 0  # 0 = off
    freeze_backbone: bool = False  # phase 1: backbone weights and BatchNorm statistics stay fixed
    cpu_bf16: bool = False  # bfloat16 autocast on the CPU too (CUDA always trains under autocast)
    weighted_sampler: bool = False
    num_workers: int = 0
    epoch_sizes: tuple[int, ...] = ()  # progressive resizing: training image size per epoch; () = as decoded


@dataclass
class FitResult:
    model: nn.Module  # the best weights (the EMA's when EMA is on)
    history: list[dict] = field(default_factory=list)
    best_epoch: int = -1
    train_images_per_s: float = 0.0
    train_wall_s: float = 0.0
    peak_rss_anon_mb: float = 0.0  # the loop's peak anonymous memory (the store's page cache not counted)
    distill_fallback_faces: int | None = None  # train images without teacher targets (plain loss); None: no distilling


def _average_buffers(world: int, *modules: nn.Module) -> None:
    """Average floating buffers (BatchNorm statistics) across DDP ranks. DDP keeps parameters equal,
    but each rank updates the statistics on its own shard; unequal ones would make the ranks
    validate different models and disagree on the best epoch and on early stopping."""
    for module in modules:
        for buffer in module.buffers():
            if buffer.is_floating_point():
                dist.all_reduce(buffer)
                buffer.div_(world)


def _train_epoch(
    model: nn.Module,
    ddp: nn.Module,
    loader: DataLoader,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    batch_scheduler,
    *,
    batch_augment: BatchAugment | None,
    generator: torch.Generator,
    scaler: torch.amp.GradScaler,
    amp_dtype: torch.dtype,
    ema: AveragedModel | None,
    cfg: FitConfig,
    epoch: int,
    device: torch.device,
    desc: str,
    distiller: Distiller | None = None,
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """One pass over ``loader``: per batch, copy to the device, augment there (``batch_augment``, drawing from
    ``generator``, when the loader gives uint8), resize to the epoch's size, forward through ``ddp`` (under autocast on
    CUDA, and on the CPU with ``cfg.cpu_bf16``), backward (scaled for float16), clip, step the
    optimiser, update the EMA and step ``batch_scheduler`` (None when the schedule steps per epoch).
    With a ``distiller`` the batches carry the teacher's targets, and the loss distils them
    (:meth:`gclf.train.distill.Distiller.loss`).

    Returns the logits and labels of the images trained on, and their summed loss.
    """
    model.train()
    if cfg.freeze_backbone:
        model.backbone.eval()
    cuda = device.type == "cuda"
    clipped = list(model.parameters()) + (list(distiller.projection.parameters()) if distiller else [])
    size = cfg.epoch_sizes[epoch] if cfg.epoch_sizes else None
    logits_seen, labels_seen, losses = [], [], []
    for x, y, *teacher in progress(loader, f"{desc} epoch {epoch + 1}/{cfg.epochs}"):  # teacher: [targets] or []
        x, y = device_batch(x, y, device, batch_augment, generator, size)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=cuda or cfg.cpu_bf16):
            logits, pooled = (ddp(x), None) if distiller is None else student_forward(model, x)
        logits = logits.float()  # bfloat16 under autocast; the loss and the epoch's scores want float32
        if distiller is None:
            loss = loss_fn(logits, y)
        else:
            loss = distiller.loss(logits, pooled, y, teacher[0].to(device), loss_fn)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if cfg.grad_clip:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(clipped, cfg.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        if ema is not None:
            ema.update_parameters(model)
        if batch_scheduler is not None:
            batch_scheduler.step()
        logits_seen.append(logits.detach().cpu())
        labels_seen.append(y.cpu())
        losses.append(loss.item() * len(y))
    return torch.cat(logits_seen), torch.cat(labels_seen), sum(losses)


def _train_row(logits: torch.Tensor, labels: torch.Tensor, loss_sum: float) -> dict[str, float]:
    """The epoch's training scores, on the augmented images as they were trained on (threshold 0.5)."""
    seen = labels.numpy()
    m = binary_metrics(seen, torch.sigmoid(logits).numpy())
    return {
        "train_loss": loss_sum / len(seen),
        "train_accuracy": m["accuracy"],
        "train_f1": m["f1"],
        "train_auc": m["roc_auc"],
    }


def _val_row(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, device) -> dict[str, float]:
    probs = predict_probs(model, images, device=device)
    m = binary_metrics(labels.numpy(), probs)
    loss = F.binary_cross_entropy(torch.from_numpy(probs).double().clamp(1e-7, 1 - 1e-7), labels.double())
    return {"val_loss": float(loss), "val_accuracy": m["accuracy"], "val_f1": m["f1"], "val_auc": m["roc_auc"]}


def fit(
    model: nn.Module,
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    scheduler,
    cfg: FitConfig,
    pipeline: InputPipeline,
    device: torch.device,
    state_path: str | Path | None = None,
    state_key: str = "",
    desc: str = "train",
    distiller: Distiller | None = None,
    on_epoch: Callable[[dict, float], None] | None = None,
) -> FitResult:
    """Train ``model`` on uint8 images + float labels; validate each epoch; return the best weights.

    ``pipeline`` augments training images: per image in the DataLoader, or per batch on ``device``
    (:func:`gclf.train.pipeline.input_pipeline`).
    ``state_path`` holds a checkpoint written after every epoch (model, optimiser, scheduler,
    EMA, best weights, history); a run started with the same ``state_key`` resumes after the
    last finished epoch and ends as an uninterrupted run would. It is removed on success.
    ``distiller``: distil the teacher's targets for the ``train`` images (:mod:`gclf.train.distill`); its
    projection must be among the optimiser's parameters. The returned model is the student alone.
    ``on_epoch(row, images_per_s)`` is called on rank 0 after each epoch with its history row and its
    training throughput (:class:`gclf.live.EpochLog`); on a resume, first for every epoch already run.
    """
    rank, world = init_distributed()
    if distiller is not None and world > 1:
        raise UserError("distill.enabled is not supported with several processes (torchrun); train in one")
    projection = distiller.projection.to(device) if distiller is not None else None
    model.to(device)
    cuda = device.type == "cuda"
    # Channels-last convolutions: on this 2-core CPU 1.6x the training throughput of NCHW
    # (EfficientNet-B0, 64 px, batch 64); on GPUs the layout tensor cores want.
    model.to(memory_format=torch.channels_last)
    amp_dtype = torch.float16 if cuda and not torch.cuda.is_bf16_supported() else torch.bfloat16  # CPU: bf16 only
    scaler = torch.amp.GradScaler("cuda", enabled=cuda and amp_dtype == torch.float16)
    ddp = nn.parallel.DistributedDataParallel(model) if world > 1 else model
    ema = ema_model(model, cfg.ema_decay)
    per_batch = steps_per_batch(scheduler)
    sign = -1.0 if cfg.monitor == "val_loss" else 1.0  # higher score is better
    dataset = ImageDataset(train[0], train[1], pipeline.transforms, distiller.targets if distiller else None)
    stepped = Stepped(model, optimizer, scheduler, scaler, ema, projection)
    state = resume(state_path, state_key, stepped, rank, world)
    if state is None:
        state = new_state()
    else:
        print(f"{desc}: resuming after epoch {state['epoch']} from {state_path}")
        state.setdefault("images_per_s", [0.0] * len(state["history"]))  # a state saved before it was kept
    if on_epoch is not None and rank == 0:
        for row, images_per_s in zip(state["history"], state["images_per_s"]):
            on_epoch(row, images_per_s)

    with PeakMemory(every_s=0.05) as memory:
        for epoch in range(state["epoch"], cfg.epochs):
            loader = train_loader(
                dataset,
                batch_size=cfg.batch_size,
                seed=cfg.seed,
                epoch=epoch,
                rank=rank,
                world=world,
                weighted_sampler=cfg.weighted_sampler,
                num_workers=cfg.num_workers,
                pin=cuda,
            )
            start = time.perf_counter()
            logits, labels, loss_sum = _train_epoch(
                model,
                ddp,
                loader,
                loss_fn,
                optimizer,
                scheduler if per_batch else None,
                batch_augment=pipeline.batch_augment,
                generator=augment_generator(cfg.seed, epoch, rank),
                scaler=scaler,
                amp_dtype=amp_dtype,
                ema=ema,
                cfg=cfg,
                epoch=epoch,
                device=device,
                desc=desc,
                distiller=distiller,
            )
            epoch_s = time.perf_counter() - start
            state["train_s"] += epoch_s
            state["train_images"] += len(labels) * world
            state["images_per_s"].append(len(labels) * world / epoch_s)
            if world > 1:
                _average_buffers(world, model, *([ema] if ema is not None else []))

            eval_model = ema.module if ema is not None else model
            row = {
                "epoch": epoch + 1,
                "lr": optimizer.param_groups[-1]["lr"],
                **_train_row(logits, labels, loss_sum),
                **_val_row(eval_model, val[0], val[1], device),
            }
            state["history"].append(row)
            if not per_batch:
                scheduler.step(row[cfg.monitor])
            track_best(state, sign * row[cfg.monitor], epoch, eval_model)
            state["epoch"] = epoch + 1
            if rank == 0:
                print(
                    f"{desc} epoch {epoch + 1}/{cfg.epochs}: "
                    + " ".join(f"{k}={v:.4f}" for k, v in row.items() if k not in ("epoch", "lr"))
                )
                if on_epoch is not None:
                    on_epoch(row, state["images_per_s"][-1])
            if state_path and rank == 0:
                save_state(state_path, state_key, stepped, state)
            if cfg.early_stop_patience and state["stale_epochs"] >= cfg.early_stop_patience:
                print(f"{desc}: no {cfg.monitor} improvement in {cfg.early_stop_patience} epochs, stopping early")
                break

    best = best_model(model, state)
    if state_path and rank == 0 and Path(state_path).exists():
        os.unlink(state_path)
    return FitResult(
        model=best,
        history=state["history"],
        best_epoch=state["best_epoch"],
        train_images_per_s=state["train_images"] / state["train_s"] if state["train_s"] else 0.0,
        train_wall_s=state["train_s"],
        peak_rss_anon_mb=memory.peak_mb,
        distill_fallback_faces=distiller.not_embedded if distiller is not None else None,
    )
