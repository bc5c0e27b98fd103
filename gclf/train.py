"""The training loop both phases share, their optimisers and schedules, and resumable state.

One loop, read top to bottom in :func:`fit`: per epoch, seed, shuffle, train (AMP on CUDA),
validate on the EMA or live weights, keep the best, checkpoint, maybe stop early. It runs as one
process on CPU or GPU, or under ``torchrun`` (DDP: each rank trains on its shard of the data;
rank 0 writes files; see :mod:`gclf.device`).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import math
import os
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
from tqdm import tqdm

from gclf.data.dataset import ImageDataset
from gclf.device import init_distributed
from gclf.errors import UserError
from gclf.io import atomic_write
from gclf.metrics import binary_metrics
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


def layer_decay_groups(model: nn.Module, lr: float, weight_decay: float, layer_decay: float) -> list[dict]:
    """AdamW groups with layer-wise LR decay over the backbone's stages (timm's coarse grouping).

    The head gets ``lr``; each stage below it ``layer_decay`` times the one above. Biases and
    normalisation weights (1-D) get no weight decay.
    """
    stage_of = {}
    stages = group_parameters(model.backbone, model.backbone.group_matcher(coarse=True))
    for stage, names in stages.items():
        stage_of.update({f"backbone.{n}": stage for n in names})
    top = max(stages) + 1
    groups: dict[tuple[int, bool], dict] = {}
    for name, p in model.named_parameters():
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
):
    """Phase 2: AdamW with LLRD, and a one-cycle or warm-up + cosine schedule stepped per batch,
    or ReduceLROnPlateau stepped per epoch (``plateau_args``: factor, patience, monitor)."""
    groups = layer_decay_groups(model, lr, weight_decay, layer_decay)
    optimizer = torch.optim.AdamW(groups, lr=lr)
    if schedule == "plateau":  # with weight_decay 0 this is the seed project's Adam + ReduceLROnPlateau
        return optimizer, plateau(optimizer, *plateau_args)
    total_steps = max(total_steps, 1)
    if schedule == "onecycle":
        # OneCycleLR needs a warm-up of at least one step
        pct = max(warmup_fraction, 1.0 / total_steps)
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


def _seed_epoch(seed: int, epoch: int) -> torch.Generator:
    """Seed every RNG from (seed, epoch): a resumed run draws what an uninterrupted one drew."""
    torch.manual_seed(seed * 100_003 + epoch)
    return torch.Generator().manual_seed(seed * 100_003 + epoch)


def _loader(dataset: ImageDataset, labels: torch.Tensor, cfg: FitConfig, epoch: int, rank: int, world: int):
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
        dataset, cfg.batch_size, sampler=sampler, num_workers=cfg.num_workers, drop_last=len(dataset) > cfg.batch_size
    )


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
    scaler: torch.amp.GradScaler,
    amp_dtype: torch.dtype,
    ema: AveragedModel | None,
    cfg: FitConfig,
    epoch: int,
    device: torch.device,
    desc: str,
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """One pass over ``loader``: per batch, resize to the epoch's size, forward through ``ddp`` (under
    autocast on CUDA), backward (scaled for float16), clip, step the optimiser, update the EMA and
    step ``batch_scheduler`` (None when the schedule steps per epoch).

    Returns the logits and labels of the images trained on, and their summed loss.
    """
    model.train()
    if cfg.freeze_backbone:
        model.backbone.eval()
    cuda = device.type == "cuda"
    logits_seen, labels_seen, losses = [], [], []
    for x, y in tqdm(loader, desc=f"{desc} epoch {epoch + 1}/{cfg.epochs}", leave=False, disable=None):
        x = x.to(device, non_blocking=True, memory_format=torch.channels_last)
        if cfg.epoch_sizes and cfg.epoch_sizes[epoch] != x.shape[-1]:
            x = F.interpolate(x, size=cfg.epoch_sizes[epoch], mode="bilinear", antialias=True)
        y = y.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=cuda):
            logits = ddp(x).float()
        loss = loss_fn(logits, y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if cfg.grad_clip:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
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
    path: str | Path, key: str, model, optimizer, scheduler, ema: AveragedModel | None, state: dict
) -> None:
    """Everything a killed run needs to go on after this epoch as if uninterrupted, under ``key``."""
    saved = {
        "key": key,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "ema": ema.state_dict() if ema is not None else {},
        "state": state,
    }
    atomic_write(path, lambda tmp: torch.save(saved, tmp))


def _resume(path: str | Path | None, key: str, model, optimizer, scheduler, ema: AveragedModel | None) -> dict | None:
    """The loop state :func:`_save_state` left at ``path`` for the same ``key``, with the model,
    optimiser, scheduler and EMA restored in place; None when there is nothing to resume."""
    if not path or not Path(path).exists():
        return None
    saved = torch.load(path, map_location="cpu", weights_only=True)
    if saved.get("key") != key:  # another run's state: start afresh (it is overwritten after epoch 1)
        return None
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    if ema is not None:
        ema.load_state_dict(saved["ema"])
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
    transforms: Sequence[Callable],
    device: torch.device,
    state_path: str | Path | None = None,
    state_key: str = "",
    desc: str = "train",
) -> FitResult:
    """Train ``model`` on uint8 images + float labels; validate each epoch; return the best weights.

    ``transforms`` augments training images, one transform per class label (0, 1).
    ``state_path`` holds a checkpoint written after every epoch (model, optimiser, scheduler,
    EMA, best weights, history); a run started with the same ``state_key`` resumes after the
    last finished epoch and ends as an uninterrupted run would. It is removed on success.
    """
    rank, world = init_distributed()
    model.to(device)
    cuda = device.type == "cuda"
    # Channels-last convolutions: on this 2-core CPU 1.6x the training throughput of NCHW
    # (EfficientNet-B0, 64 px, batch 64); on GPUs the layout tensor cores want.
    model.to(memory_format=torch.channels_last)
    amp_dtype = torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=cuda and amp_dtype == torch.float16)
    ddp = nn.parallel.DistributedDataParallel(model) if world > 1 else model
    ema = (
        AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True)
        if cfg.ema_decay
        else None
    )
    per_batch = not isinstance(scheduler, ReduceLROnPlateau)  # one-cycle, cosine; a plateau steps per epoch
    sign = -1.0 if cfg.monitor == "val_loss" else 1.0  # higher score is better
    dataset = ImageDataset(train[0], train[1], transforms)
    state = _resume(state_path, state_key, model, optimizer, scheduler, ema)
    if state is None:
        state = _new_state()
    else:
        print(f"{desc}: resuming after epoch {state['epoch']} from {state_path}")

    for epoch in range(state["epoch"], cfg.epochs):
        loader = _loader(dataset, train[1], cfg, epoch, rank, world)
        start = time.perf_counter()
        logits, labels, loss_sum = _train_epoch(
            model,
            ddp,
            loader,
            loss_fn,
            optimizer,
            scheduler if per_batch else None,
            scaler=scaler,
            amp_dtype=amp_dtype,
            ema=ema,
            cfg=cfg,
            epoch=epoch,
            device=device,
            desc=desc,
        )
        state["train_s"] += time.perf_counter() - start
        state["train_images"] += len(labels) * world
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
        if state_path and rank == 0:
            _save_state(state_path, state_key, model, optimizer, scheduler, ema, state)
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
    )


def resume_key(params: dict, files: list[str]) -> str:
    """A fingerprint of everything a run depends on (params and the bytes of its input files):
    a saved state with another key belongs to another run and is not resumed."""
    digest = hashlib.sha1(repr(sorted(params.items())).encode())
    for path in files:
        digest.update(Path(path).read_bytes())
    return digest.hexdigest()


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
) -> FitResult:
    """:func:`fit` with what both phases share: the loss and augmentation from params ``p``, and
    a resumable state in ``.cache/NAME.state.pt`` keyed by the params and the ``inputs`` files."""
    from gclf.augment import class_transforms
    from gclf.losses import make_loss

    return fit(
        model,
        train,
        val,
        make_loss(p.loss, train[1], p.focal.gamma, p.focal.alpha, p.label_smoothing),
        optimizer,
        scheduler,
        cfg,
        class_transforms(p.augment, p.data.image_size, train[1]),
        device,
        state_path=f".cache/{name}.state.pt",
        state_key=resume_key(dataclasses.asdict(p), inputs),
        desc=name,
    )


def save_phase(name: str, result: FitResult, meta: dict, monitor: str) -> None:
    """Write a phase's outputs: ``models/NAME.pt``, ``metrics/NAME.json`` (best epoch's validation
    scores; deterministic), ``metrics/speed/NAME.json`` (timing; varies run to run),
    ``plots/NAME.tsv`` (per-epoch history for ``dvc plots``) and ``plots/NAME.png``. Under
    ``torchrun`` only rank 0 writes: every rank holds the same result."""
    from gclf.io import write_json
    from gclf.model import save_model
    from gclf.plots import training_curves_png, write_table

    if dist.is_initialized() and dist.get_rank() != 0:
        return
    save_model(f"models/{name}.pt", result.model, meta)
    best = next((r for r in result.history if r["epoch"] == result.best_epoch), {})
    write_json(
        f"metrics/{name}.json",
        {
            "best_epoch": result.best_epoch,
            "epochs_run": len(result.history),
            "monitor": monitor,
            **{k: v for k, v in best.items() if k.startswith("val_")},
        },
    )
    write_json(
        f"metrics/speed/{name}.json",
        {
            "train_images_per_s": result.train_images_per_s,
            "train_wall_s": result.train_wall_s,
        },
        digits=1,
    )
    # Written even for 0 epochs, so no curve of an earlier run stays behind under this run's name.
    write_table(f"plots/{name}.tsv", result.history, empty_header=("epoch",))
    training_curves_png(f"plots/{name}.png", result.history, name)
