"""The training loop shared by the three stages (paper Sec. 3.2 VQ-HBR, Sec. 3.3 pre-training, Sec. 4).

* Mixed precision through ONE code path: ``torch.autocast(device_type)`` with bf16 (default where
  supported) or fp16 + ``GradScaler`` on CUDA, and autocast disabled (fp32) on CPU.
* :func:`train_one_epoch`: per-step lr from the schedule, gradient accumulation with ``DDP.no_sync``
  between boundaries, gradient clipping, smoothed meters, TensorBoard scalars. The stage supplies
  ``step(model, batch) -> (loss, {name: value})``.
* :func:`gather_predictions`: exact (un-padded) concatenation of per-rank outputs for metrics.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable

import numpy as np
import torch
import torch.distributed as dist

from sentences.loader import batch_indices, describe_sample
from utils.dist import get_world_size, is_dist_avail_and_initialized, seed_all
from utils.logging import MetricLogger, TensorboardLogger
from utils.optim import adjust_learning_rate


class Amp:
    """Autocast settings. ``enabled`` only on CUDA; fp16 adds a live GradScaler."""

    def __init__(self, device: torch.device, mode: str = "bf16"):
        self.device_type = device.type
        use = device.type == "cuda" and mode != "none"
        if use and mode == "bf16" and not torch.cuda.is_bf16_supported():
            mode = "fp16"  # pre-Ampere GPUs: bf16 would be emulated, fall back to fp16 + scaler
        self.enabled = use
        self.dtype = torch.float16 if mode == "fp16" else torch.bfloat16
        self.scaler = torch.amp.GradScaler(device.type, enabled=use and mode == "fp16")
        self.name = mode if use else "fp32"

    def autocast(self):
        return torch.autocast(device_type=self.device_type, dtype=self.dtype, enabled=self.enabled)


def reseed_epoch(seed: int, epoch: int, rank: int) -> None:
    """Seed torch / numpy / python from (seed, epoch, rank) at the start of every epoch.

    Why: masking, dropout and the loader's worker seeds then depend only on the epoch, so a run killed
    and resumed at an epoch boundary draws exactly what the uninterrupted run draws, on every rank
    (a checkpoint written by rank 0 holds only rank 0's RNG state)."""
    seed_all(int(seed) + 1_000_003 * (int(epoch) + 1) + 7919 * int(rank))


def train_one_epoch(
    model: torch.nn.Module,
    loader,
    optimizer: torch.optim.Optimizer,
    amp: Amp,
    epoch: int,
    step_fn: Callable,
    lr_values: np.ndarray,
    niter_per_ep: int,
    update_freq: int = 1,
    clip_grad: float | None = None,
    tb: TensorboardLogger | None = None,
    header: str = "",
) -> dict:
    """One epoch of ``niter_per_ep`` optimizer steps of ``update_freq`` micro-batches each.

    ``step_fn(model, batch)`` runs the forward under autocast and returns ``(loss, metrics)``.
    Returns the rank-averaged global average of every meter (MAE style), plus ``lr``.
    """
    logger = MetricLogger()
    params = [p for group in optimizer.param_groups for p in group["params"]]
    optimizer.zero_grad(set_to_none=True)
    n_micro = niter_per_ep * update_freq
    lr = float("nan")
    for i, batch in enumerate(logger.log_every(loader, header or f"Epoch [{epoch}]", total=n_micro)):
        if i >= n_micro:
            break
        step = epoch * niter_per_ep + i // update_freq
        if i % update_freq == 0:
            lr = adjust_learning_rate(optimizer, step, lr_values)
        boundary = (i + 1) % update_freq == 0
        # Between accumulation boundaries skip DDP's gradient all-reduce (forward AND backward inside).
        sync = contextlib.nullcontext() if boundary or not hasattr(model, "no_sync") else model.no_sync()
        with sync:
            with amp.autocast():
                loss, metrics = step_fn(model, batch)
            loss_value = float(loss.detach())
            if not math.isfinite(loss_value):
                raise FloatingPointError(nonfinite_loss_message(loss_value, epoch, step, loader, i, batch))
            amp.scaler.scale(loss / update_freq).backward()
        grad_norm = None
        if boundary:
            amp.scaler.unscale_(optimizer)
            if clip_grad:
                grad_norm = float(torch.nn.utils.clip_grad_norm_(params, clip_grad))
            amp.scaler.step(optimizer)
            amp.scaler.update()
            optimizer.zero_grad(set_to_none=True)
        logger.update(loss=loss_value, **metrics)
        if grad_norm is not None:
            logger.update(grad_norm=grad_norm)
        if tb is not None and boundary:
            tb.set_step(step)
            tb.update(head="train", loss=loss_value, lr=lr, grad_norm=grad_norm, **metrics)
    logger.synchronize_between_processes()
    out = logger.global_averages()
    out["lr"] = lr
    return out


def nonfinite_loss_message(loss_value: float, epoch: int, step: int, loader, i: int, batch) -> str:
    """The error of a NaN/inf loss: the records of the batch, and those whose input or label is not finite
    (then the data is at fault, not the optimisation)."""
    head = f"loss is {loss_value} at epoch {epoch}, step {step} (batch {i} of the epoch); stopping."
    try:
        names = [describe_sample(loader.dataset, j) for j in batch_indices(loader, i)]
    except Exception:  # noqa: BLE001 - naming the records must never hide the error itself
        names = []
    tensors = [
        v for v in (batch if isinstance(batch, (list, tuple)) else [batch]) if isinstance(v, torch.Tensor)
    ]
    bad_rows: set[int] = set()
    for v in tensors:
        if v.is_floating_point() and v.ndim >= 1 and v.shape[0] == len(names):
            bad_rows |= {
                int(r) for r in (~torch.isfinite(v.reshape(v.shape[0], -1)).all(dim=1)).nonzero()[:, 0]
            }
    if bad_rows:
        bad = [names[r] for r in sorted(bad_rows)]
        return (f"{head} {len(bad)} of the batch's {len(names)} samples hold NaN/inf input or labels: "
                + "; ".join(bad[:20]) + (" ..." if len(bad) > 20 else "")
                + ". Re-tokenise with QRSTokenizer.py --nan_policy interpolate|zero|skip (it names such "
                "records in {split}_nonfinite_records.csv) or remove them.")  # fmt: skip
    where = f" Its samples: {'; '.join(names[:20])}{' ...' if len(names) > 20 else ''}." if names else ""
    return (f"{head} The batch's inputs are finite, so the optimisation diverged (lower --lr, or set "
            f"--clip_grad).{where}")  # fmt: skip


def gather_predictions(indices: list[int], *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """All-gather per-rank ``(indices, arrays...)`` and return the arrays ordered by sample index."""
    local = (np.asarray(indices, dtype=np.int64),) + tuple(np.asarray(a) for a in arrays)
    if is_dist_avail_and_initialized() and get_world_size() > 1:
        parts: list = [None] * get_world_size()
        dist.all_gather_object(parts, local)
    else:
        parts = [local]
    idx = np.concatenate([p[0] for p in parts])
    order = np.argsort(idx, kind="stable")
    return tuple(np.concatenate([p[k] for p in parts])[order] for k in range(1, len(local)))


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model


def wrap_ddp(module: torch.nn.Module, info) -> torch.nn.Module:
    """DistributedDataParallel when running under torchrun with several processes, else the module."""
    if not info.distributed:
        return module
    return torch.nn.parallel.DistributedDataParallel(
        module, device_ids=[info.local_rank] if info.device.type == "cuda" else None
    )
