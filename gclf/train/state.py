"""Resumable training: what the epoch loop carries from one epoch to the next, saved after every
epoch with the model, optimiser, scheduler, loss scaler and EMA, so that a killed run goes on as
if uninterrupted; and the best epoch's weights, which the run returns."""

from __future__ import annotations

import copy
import hashlib
import math
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.optim.swa_utils import AveragedModel

from gclf.io import atomic_write


def state_path(name: str) -> str:
    """Where the training stage ``name`` keeps its resumable state between epochs."""
    return f".cache/{name}.state.pt"


def resume_key(params: dict, files: list[str]) -> str:
    """A fingerprint of everything a run depends on (params and the bytes of its input files):
    a saved state with another key belongs to another run and is not resumed."""
    digest = hashlib.sha1(repr(sorted(params.items())).encode())
    for path in files:
        digest.update(Path(path).read_bytes())
    return digest.hexdigest()


def new_state() -> dict:
    """What the epoch loop carries from one epoch to the next; all of it is saved for a resume. A
    plain dict of plain values: ``torch.load(weights_only=True)`` reads nothing else back."""
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


def track_best(state: dict, score: float, epoch: int, eval_model: nn.Module) -> None:
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


def best_model(model: nn.Module, state: dict) -> nn.Module:
    """A CPU copy of ``model`` holding the best epoch's weights (the last ones if no epoch ran)."""
    best = copy.deepcopy(model).cpu()
    if state["best_state"] is not None:
        best.load_state_dict(state["best_state"])
    return best.eval()


@dataclass(frozen=True)
class Stepped:
    """What changes as the run trains, besides the loop's own state, and is saved with it: the
    weights, the optimiser's moments, the schedule's step, the float16 loss scale (a fresh one would
    skip steps while it re-learns the scale), the EMA and the distillation projection."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    ema: AveragedModel | None = None
    projection: nn.Module | None = None


def save_state(path: str | Path, key: str, stepped: Stepped, state: dict) -> None:
    """Everything a killed run needs to go on after this epoch as if uninterrupted, under ``key``."""
    saved = {
        "key": key,
        "model": stepped.model.state_dict(),
        "optimizer": stepped.optimizer.state_dict(),
        "scheduler": stepped.scheduler.state_dict(),
        "scaler": stepped.scaler.state_dict(),
        "ema": stepped.ema.state_dict() if stepped.ema is not None else {},
        "state": state,
    }
    if stepped.projection is not None:
        saved["projection"] = stepped.projection.state_dict()
    atomic_write(path, lambda tmp: torch.save(saved, tmp))


def _read_state(path: str | Path | None, key: str, rank: int, world: int) -> dict | None:
    """What :func:`save_state` left at ``path`` for the same ``key``, or None. Under ``torchrun`` rank 0
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


def resume(path: str | Path | None, key: str, stepped: Stepped, rank: int = 0, world: int = 1) -> dict | None:
    """The loop state saved at ``path`` for the same ``key``, with ``stepped`` restored in place; None
    when there is nothing to resume."""
    saved = _read_state(path, key, rank, world)
    if saved is None:
        return None
    stepped.model.load_state_dict(saved["model"])
    stepped.optimizer.load_state_dict(saved["optimizer"])
    stepped.scheduler.load_state_dict(saved["scheduler"])
    stepped.scaler.load_state_dict(saved["scaler"])
    if stepped.ema is not None:
        stepped.ema.load_state_dict(saved["ema"])
    if stepped.projection is not None:
        stepped.projection.load_state_dict(saved["projection"])
    return saved["state"]
