"""Several processes (``torchrun``): process group, ranks and the few collectives fit needs.

Every function is a no-op, or the identity, in a single process, so the training loop reads the
same with one process or many.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist

__all__ = ["init", "is_distributed", "rank_world", "all_sum", "agree", "gather", "STOPS"]


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank_world() -> tuple[int, int]:
    return (dist.get_rank(), dist.get_world_size()) if is_distributed() else (0, 1)


def init(device: torch.device | None) -> None:
    """Under ``torchrun`` (``WORLD_SIZE > 1``) initialise the default process group once:
    NCCL when training on CUDA, Gloo otherwise."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available() or dist.is_initialized():
        return
    cuda = torch.cuda.is_available() and (device is None or device.type == "cuda")
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if cuda else "gloo")


def all_sum(*values: float | int, device: torch.device) -> list[float]:
    """Sum scalars over ranks (one collective for all of them)."""
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    if is_distributed():
        dist.all_reduce(t)
    return t.tolist()


STOPS = (None, "epochs", "max_steps", "time_budget", "callback")


def agree(stop: str | None, device: torch.device) -> str | None:
    """The same stop decision on every rank (the "largest" one any rank made)."""
    t = torch.tensor([STOPS.index(stop)], dtype=torch.int64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return STOPS[int(t.item())]


def gather(obj, world: int) -> list:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank."""
    if world == 1:
        return [obj]
    out = [None] * world
    dist.all_gather_object(out, obj)
    return out
