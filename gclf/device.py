"""Where the stages run: the torch device and CPU threads, and the ``torchrun`` process group.

Its own module so that the inference stages (threshold_sweep, evaluate) do not import the
training loop, and in ``dvc.yaml`` do not depend on it.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from gclf.errors import UserError


def select_device(name: str, threads: int) -> torch.device:
    """``auto`` picks CUDA when present; ``threads`` (0 = all cores) caps CPU threads. Under
    ``torchrun`` it joins the process group first, so each rank gets its own GPU."""
    init_distributed()
    if threads > 0:
        torch.set_num_threads(threads)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device: cuda, but no CUDA device is visible here; use device: auto or cpu")
    if name == "cuda" and dist.is_initialized():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device(name)


def init_distributed() -> tuple[int, int]:
    """(rank, world size); joins the process group when started by ``torchrun``."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    return (dist.get_rank(), world) if world > 1 else (0, 1)
