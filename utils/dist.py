"""Distributed set-up in one place (torchrun env vars, NCCL on CUDA, gloo on CPU).

The same code path serves ``torchrun --nproc_per_node=N script.py`` and a plain
``python script.py``: without the torchrun environment we run as rank 0 of a
world of size 1 and never create a process group, so no collective is called.
"""

from __future__ import annotations

import builtins
import datetime
import os
import random
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from utils.procs import die_with_launcher


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    distributed: bool


def is_dist_avail_and_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_dist_avail_and_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_dist_avail_and_initialized() else 1


def is_main_process() -> bool:
    return get_rank() == 0


def barrier() -> None:
    if is_dist_avail_and_initialized():
        dist.barrier()


def print0(*args, **kwargs) -> None:
    """print() on rank 0 only (``force=True`` prints on every rank)."""
    force = kwargs.pop("force", False)
    if force or is_main_process():
        builtins.print(*args, **kwargs)


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError as exc:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from exc


DEFAULT_TIMEOUT_S = 1800
TIMEOUT_ENV = "HEARTLANG_DIST_TIMEOUT"


def collective_timeout_s(timeout_s: float | None = None) -> float:
    """Seconds a collective (all-reduce, barrier) waits for the other ranks before the run fails.

    ``timeout_s`` when given, else the environment variable ``HEARTLANG_DIST_TIMEOUT``, else 1800 (30 min:
    torch's default for gloo; NCCL's own would be 10 min). A rank that dies is noticed at once (its
    connections close); this bounds the wait for a rank that hangs, and for the ranks that wait while
    rank 0 computes the pre-training target cache (docs/distributed.md).
    """
    if timeout_s is None:
        raw = os.environ.get(TIMEOUT_ENV, "")
        if raw.strip() == "":
            return float(DEFAULT_TIMEOUT_S)
        try:
            timeout_s = float(raw)
        except ValueError as exc:
            raise ValueError(f"environment variable {TIMEOUT_ENV}={raw!r} is not a number of seconds") from exc
    if not timeout_s > 0:
        raise ValueError(f"the collective timeout must be > 0 seconds, got {timeout_s} ({TIMEOUT_ENV})")
    return float(timeout_s)


def init_distributed_mode(device: str | None = None, timeout_s: float | None = None) -> DistInfo:
    """Initialise from torchrun's RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT.

    ``RANK`` is the global rank (the only one that decides who writes); ``LOCAL_RANK`` only picks the GPU
    of this node. ``timeout_s``: see :func:`collective_timeout_s` (None: ``HEARTLANG_DIST_TIMEOUT`` or 1800).
    ``device``: "cuda", "cpu" or None (CUDA when available). Returns a :class:`DistInfo`; nothing else
    is written anywhere (the original README's ``--world_size`` flag only plans a --dry_run: torchrun sets the
    real size). Under torchrun every worker asks Linux to be terminated when its launcher dies, so a
    ``kill -9`` of torchrun leaves no orphan training (docs/robustness.md).
    """
    use_cuda = torch.cuda.is_available() if device in (None, "", "auto") else str(device).startswith("cuda")
    if use_cuda and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was requested but CUDA is not available on this machine")

    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    distributed = world_size > 1
    timeout = datetime.timedelta(seconds=collective_timeout_s(timeout_s))
    die_with_launcher()  # under torchrun (also with one process); the entry scripts already did, this is cheap

    if use_cuda:
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")

    if distributed and not is_dist_avail_and_initialized():
        for var in ("MASTER_ADDR", "MASTER_PORT"):
            if var not in os.environ:
                raise RuntimeError(f"WORLD_SIZE={world_size} but {var} is not set: launch with torchrun")
        backend = "nccl" if use_cuda else "gloo"
        dist.init_process_group(
            backend=backend,
            init_method="env://",
            world_size=world_size,
            rank=rank,
            timeout=timeout,
            **({"device_id": dev} if use_cuda else {}),
        )
        dist.barrier()
        print0(
            f"distributed: {world_size} processes ({backend}), "
            f"collective timeout {timeout.total_seconds():g} s ({TIMEOUT_ENV})"
        )

    info = DistInfo(
        rank=rank, world_size=world_size, local_rank=local_rank, device=dev, distributed=distributed
    )
    return info


def destroy_distributed() -> None:
    if is_dist_avail_and_initialized():
        dist.barrier()
        dist.destroy_process_group()


def broadcast_object(obj, src: int = 0):
    """Rank ``src``'s ``obj`` on every rank (pickled); a no-op in a single process. Lets one rank do what
    every rank would otherwise repeat (e.g. hash a checkpoint: N processes would read it N times)."""
    if not (is_dist_avail_and_initialized() and get_world_size() > 1):
        return obj
    box = [obj if get_rank() == src else None]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_reduce_sum_(tensor: torch.Tensor) -> torch.Tensor:
    """In-place sum over ranks; a no-op (no collective) in a single process."""
    if is_dist_avail_and_initialized() and get_world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_mean(value):
    """Mean over ranks of a Python number or a tensor (returned as the same kind)."""
    if not (is_dist_avail_and_initialized() and get_world_size() > 1):
        return value
    if isinstance(value, torch.Tensor):
        out = value.detach().clone().float()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out / get_world_size()
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    t = torch.tensor(float(value), dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return (t / get_world_size()).item()


def seed_all(s: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA) with ``s``."""
    random.seed(s)
    np.random.seed(s % (2**32))
    torch.manual_seed(s)


def seed_everything(seed: int, rank: int | None = None) -> int:
    """Seed python, numpy and torch with ``seed + rank`` (different data order / dropout per rank)."""
    rank = get_rank() if rank is None else rank
    s = int(seed) + int(rank)
    seed_all(s)
    return s
