"""The training loop both phases share, their optimisers and schedules, and resumable state.

One loop, read top to bottom in :func:`fit`: per epoch, seed, shuffle, train (AMP on CUDA),
validate on the EMA or live weights, keep the best, checkpoint, maybe stop early. It runs as one
process on CPU or GPU, or under ``torchrun`` (DDP: each rank trains on its shard of the data;
rank 0 writes files, every rank resumes from rank 0's state; see :mod:`gclf.device`).

The input pipeline is built for a GPU: batches are gathered whole from the memory-mapped
decoded-image store (:mod:`gclf.data.images`), copied to the device as uint8 (a quarter of the
bytes of float; pinned on CUDA, without blocking), and augmented there, per sample, in one batched
pass (:class:`gclf.train.augment.BatchAugment`); ``augment.backend: per-image`` keeps torchvision's
per-image path in the DataLoader as the reference.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import math
import os
import pickle
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from timm.models import group_parameters
from torch import nn
from torch.optim.lr_scheduler import LambdaLR, OneCycleLR, ReduceLROnPlateau
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, WeightedRandomSampler

from gclf.data.dataset import ImageDataset, whole_batch
from gclf.device import init_distributed
from gclf.errors import UserError
from gclf.io import atomic_write
from gclf.metrics import binary_metrics
from gclf.progress import progress
from gclf.train.distill import Distiller, student_forward
from gclf.train.memory import PeakMemory
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


def freeze_backbone(model: nn.Module) -> list[nn.Parameter]:
    """Freeze ``model.backbone``; return the parameters left to train (the head's)."""
    for p in model.backbone.parameters():
        p.requires_grad_(False)
    return [p for p in model.parameters() if p.requires_grad]


def progressive_sizes(start: int, final: int, epochs: int, multiple: int = 16) -> tuple[int, ...]:
    """Training image size per epoch, from ``start`` growing linearly to ``final`` in the last epoch,
    rounded to ``multiple`` px (EfficientNet's stride is 32; 16 keeps the steps small). Small early
    epochs are cheap (at 96 px a step costs 0.45 of one at 128 px here) and the network ends at
    the size it is evaluated at. ``start`` 0 turns it off: ()."""
    if not start or epochs < 1:
        return ()
    if epochs == 1:
        return (final,)
    sizes = [start + (final - start) * e / (epochs - 1) for e in range(epochs)]
    return tuple(min(final, max(multiple, multiple * round(s / multiple))) for s in sizes[:-1]) + (final,)


def plateau(optimizer: torch.optim.Optimizer, factor: float, patience: int, monitor: str) -> ReduceLROnPlateau:
    """Cut the learning rate by ``factor`` after ``patience`` epochs without ``monitor`` improving."""
    mode = "min" if monitor == "val_loss" else "max"
    return ReduceLROnPlateau(optimizer, mode=mode, factor=factor, patience=patience)


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


def seed_everything(seed: int) -> None:
    """Seed torch, numpy and Python before anything random (model initialisation included)."""
    import random

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _epoch_seed(seed: int, epoch: int) -> int:
    return seed * 100_003 + epoch


def _seed_epoch(seed: int, epoch: int) -> torch.Generator:
    """Seed every RNG from (seed, epoch): a resumed run draws what an uninterrupted one drew."""
    torch.manual_seed(_epoch_seed(seed, epoch))
    return torch.Generator().manual_seed(_epoch_seed(seed, epoch))


def _augment_generator(seed: int, epoch: int, rank: int) -> torch.Generator:
    """The batched augmentation's own random stream: seeded from (seed, epoch) like the sampler's, so a
    resumed run draws the same, and apart per rank, so DDP ranks draw their own parameters."""
    return torch.Generator().manual_seed(_epoch_seed(seed, epoch) * 1_000 + 1 + rank)


def train_loader(
    dataset: ImageDataset, labels: torch.Tensor, cfg: FitConfig, epoch: int, rank: int, world: int, pin: bool
) -> DataLoader:
    """The epoch's batches: shuffled (or class-balanced, or this rank's shard) from ``(seed, epoch)``,
    each gathered whole; ``pin``: page-locked, for copies to CUDA that do not block."""
    generator = _seed_epoch(cfg.seed, epoch)
    if world > 1 and cfg.weighted_sampler:
        raise UserError("data.weighted_sampler is not supported with several processes (torchrun); turn it off")
    if world > 1:
        sampler = DistributedSampler(dataset, world, rank, shuffle=True, seed=cfg.seed)
        sampler.set_epoch(epoch)
    elif cfg.weighted_sampler:
        counts = torch.bincount(labels.long(), minlength=2).clamp(min=1).float()
        sampler = WeightedRandomSampler((1 / counts)[labels.long()], len(labels), generator=generator)
    else:
        sampler = RandomSampler(dataset, generator=generator)
    return DataLoader(
        dataset,
        cfg.batch_size,
        sampler=sampler,
        collate_fn=whole_batch,
        num_workers=cfg.num_workers,
        pin_memory=pin,
        # forked workers inherit the store's memory map; spawned ones would be sent a copy of the images
        multiprocessing_context="fork" if cfg.num_workers else None,
        drop_last=len(dataset) > cfg.batch_size,
    )


def split_augment(augment) -> tuple[Sequence[Callable] | None, Callable | None]:
    """(per-image transforms for the dataset, batch augmentation for the device): one of them is None."""
    return (augment, None) if isinstance(augment, (list, tuple)) else (None, augment)


def device_batch(
    x: torch.Tensor,
    y: torch.Tensor,
    device: torch.device,
    batch_augment: Callable[[torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor] | None,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A loader batch as the model trains on it: on ``device`` (uint8, a quarter of float's bytes),
    augmented there when ``batch_augment`` is given, float [0, 1], channels-last."""
    y = y.to(device, non_blocking=True)
    x = x.to(device, non_blocking=True)
    if batch_augment is not None:
        x = batch_augment(x, y, generator)
    return x.contiguous(memory_format=torch.channels_last), y


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
    batch_augment: Callable[[torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor] | None,
    augment_generator: torch.Generator,
    scaler: torch.amp.GradScaler,
    amp_dtype: torch.dtype,
    ema: AveragedModel | None,
    cfg: FitConfig,
    epoch: int,
    device: torch.device,
    desc: str,
    distiller: Distiller | None = None,
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """One pass over ``loader``: per batch, copy to the device, augment there (``batch_augment``, when
    the loader gives uint8), resize to the epoch's size, forward through ``ddp`` (under autocast on
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
    logits_seen, labels_seen, losses = [], [], []
    for x, y, *teacher in progress(loader, f"{desc} epoch {epoch + 1}/{cfg.epochs}"):  # teacher: [targets] or []
        x, y = device_batch(x, y, device, batch_augment, augment_generator)
        if cfg.epoch_sizes and cfg.epoch_sizes[epoch] != x.shape[-1]:
            x = F.interpolate(x, size=cfg.epoch_sizes[epoch], mode="bilinear", antialias=True)
        if distiller is None:
            with torch.autocast(device.type, dtype=amp_dtype, enabled=cuda or cfg.cpu_bf16):
                logits = ddp(x).float()
            loss = loss_fn(logits, y)
        else:
            with torch.autocast(device.type, dtype=amp_dtype, enabled=cuda or cfg.cpu_bf16):
                logits, pooled = student_forward(model, x)
            logits = logits.float()  # bfloat16 under CPU autocast; the epoch's scores want float32
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


def _new_state() -> dict:
    """What the epoch loop carries from one epoch to the next; all of it is saved for a resume."""
    return {
        "epoch": 0,  # epochs finished
        "history": [],
        "best_score": -math.inf,
        "best_epoch": -1,
        "best_state": None,  # the best epoch's weights, on CPU
        "stale_epochs": 0,  # epochs since the best one
        "train_s": 0.0,
        "train_images": 0,
        "images_per_s": [],  # per epoch
    }


def _track_best(state: dict, score: float, epoch: int, eval_model: nn.Module) -> None:
    """Keep a CPU copy of ``eval_model``'s weights when ``score`` (higher is better) beats the best
    so far; otherwise count the epoch as stale, for early stopping."""
    if score > state["best_score"]:
        state.update(
            best_score=score,
            best_epoch=epoch + 1,
            stale_epochs=0,
            best_state={k: v.detach().cpu().clone() for k, v in eval_model.state_dict().items()},
        )
    else:
        state["stale_epochs"] += 1


def _save_state(
    path: str | Path,
    key: str,
    model,
    optimizer,
    scheduler,
    scaler,
    ema: AveragedModel | None,
    state: dict,
    projection: nn.Module | None = None,
) -> None:
    """Everything a killed run needs to go on after this epoch as if uninterrupted, under ``key``
    (the float16 loss scale included: a fresh one would skip steps while it re-learns the scale;
    the distillation ``projection`` too, when there is one)."""
    saved = {
        "key": key,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "ema": ema.state_dict() if ema is not None else {},
        "state": state,
    }
    if projection is not None:
        saved["projection"] = projection.state_dict()
    atomic_write(path, lambda tmp: torch.save(saved, tmp))


def _read_state(path: str | Path | None, key: str, rank: int, world: int) -> dict | None:
    """What :func:`_save_state` left at ``path`` for the same ``key``, or None. Under ``torchrun`` rank 0
    reads it and sends it to every rank: only rank 0 writes it, and on several machines the other
    ranks' disks hold no copy (or an older one), so they all resume from rank 0's."""
    saved = None
    if rank == 0 and path and Path(path).exists():
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
        except (RuntimeError, EOFError, OSError, pickle.UnpicklingError) as e:  # torn by a disk fault: start afresh
            print(f"{path}: unreadable training state ({type(e).__name__}), starting afresh")
        if saved is not None and saved.get("key") != key:  # another run's state (overwritten after epoch 1)
            saved = None
    if world > 1:
        box = [saved]
        dist.broadcast_object_list(box, src=0)
        saved = box[0]
    return saved


def _resume(
    path: str | Path | None,
    key: str,
    model,
    optimizer,
    scheduler,
    scaler,
    ema: AveragedModel | None,
    rank: int = 0,
    world: int = 1,
    projection: nn.Module | None = None,
) -> dict | None:
    """The loop state saved at ``path`` for the same ``key``, with the model, optimiser, scheduler,
    loss scaler, EMA and distillation projection restored in place; None when there is nothing to resume."""
    saved = _read_state(path, key, rank, world)
    if saved is None:
        return None
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    scaler.load_state_dict(saved["scaler"])
    if ema is not None:
        ema.load_state_dict(saved["ema"])
    if projection is not None:
        projection.load_state_dict(saved["projection"])
    return saved["state"]


def _best_model(model: nn.Module, state: dict) -> nn.Module:
    """A CPU copy of ``model`` holding the best epoch's weights (the last ones if no epoch ran)."""
    best = copy.deepcopy(model).cpu()
    if state["best_state"] is not None:
        best.load_state_dict(state["best_state"])
    return best.eval()


def fit(
    model: nn.Module,
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    scheduler,
    cfg: FitConfig,
    augment: Sequence[Callable] | Callable[[torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor],
    device: torch.device,
    state_path: str | Path | None = None,
    state_key: str = "",
    desc: str = "train",
    distiller: Distiller | None = None,
    on_epoch: Callable[[dict, float], None] | None = None,
) -> FitResult:
    """Train ``model`` on uint8 images + float labels; validate each epoch; return the best weights.

    ``augment`` augments training images: a batch augmentation run on ``device``
    (:class:`gclf.train.augment.BatchAugment`), or per-image transforms run by the DataLoader, one per
    class label (0, 1).
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
    ema = (
        AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True)
        if cfg.ema_decay
        else None
    )
    per_batch = not isinstance(scheduler, ReduceLROnPlateau)  # one-cycle, cosine; a plateau steps per epoch
    sign = -1.0 if cfg.monitor == "val_loss" else 1.0  # higher score is better
    image_transforms, batch_augment = split_augment(augment)
    dataset = ImageDataset(train[0], train[1], image_transforms, distiller.targets if distiller else None)
    state = _resume(state_path, state_key, model, optimizer, scheduler, scaler, ema, rank, world, projection)
    if state is None:
        state = _new_state()
    else:
        print(f"{desc}: resuming after epoch {state['epoch']} from {state_path}")
        state.setdefault("images_per_s", [0.0] * len(state["history"]))  # a state saved before it was kept
    if on_epoch is not None and rank == 0:
        for row, images_per_s in zip(state["history"], state["images_per_s"]):
            on_epoch(row, images_per_s)

    with PeakMemory(every_s=0.05) as memory:
        for epoch in range(state["epoch"], cfg.epochs):
            loader = train_loader(dataset, train[1], cfg, epoch, rank, world, pin=cuda)
            start = time.perf_counter()
            logits, labels, loss_sum = _train_epoch(
                model,
                ddp,
                loader,
                loss_fn,
                optimizer,
                scheduler if per_batch else None,
                batch_augment=batch_augment,
                augment_generator=_augment_generator(cfg.seed, epoch, rank),
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
            _track_best(state, sign * row[cfg.monitor], epoch, eval_model)
            state["epoch"] = epoch + 1
            if rank == 0:
                print(
                    f"{desc} epoch {epoch + 1}/{cfg.epochs}: "
                    + " ".join(f"{k}={v:.4f}" for k, v in row.items() if k not in ("epoch", "lr"))
                )
                if on_epoch is not None:
                    on_epoch(row, state["images_per_s"][-1])
            if state_path and rank == 0:
                _save_state(state_path, state_key, model, optimizer, scheduler, scaler, ema, state, projection)
            if cfg.early_stop_patience and state["stale_epochs"] >= cfg.early_stop_patience:
                print(f"{desc}: no {cfg.monitor} improvement in {cfg.early_stop_patience} epochs, stopping early")
                break

    best = _best_model(model, state)
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


def resume_key(params: dict, files: list[str]) -> str:
    """A fingerprint of everything a run depends on (params and the bytes of its input files):
    a saved state with another key belongs to another run and is not resumed."""
    digest = hashlib.sha1(repr(sorted(params.items())).encode())
    for path in files:
        digest.update(Path(path).read_bytes())
    return digest.hexdigest()


def state_path(name: str) -> str:
    """Where the training stage ``name`` keeps its resumable state between epochs."""
    return f".cache/{name}.state.pt"


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
    """:func:`fit` with what both phases share: the loss and augmentation from params ``p``, a
    resumable state at :func:`state_path` keyed by the params and the ``inputs`` files, each epoch
    logged with DVCLive to ``plots/NAME/`` (:class:`gclf.live.EpochLog`, rank 0 only); the
    ``distiller`` (:func:`gclf.train.distill.make_distiller`) when distillation is on."""
    from gclf.live import EpochLog
    from gclf.train.augment import training_augment
    from gclf.train.losses import make_loss

    rank, _ = init_distributed()

    return fit(
        model,
        train,
        val,
        make_loss(p.loss, train[1], p.focal.gamma, p.focal.alpha, p.label_smoothing),
        optimizer,
        scheduler,
        cfg,
        training_augment(p.augment, p.data.image_size, train[1]),
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
    from gclf.io import write_json
    from gclf.train.model import save_model

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
