"""Shared pieces of the three training stages (paper Sec. 3.2 VQ-HBR, Sec. 3.3 pre-training, Sec. 4 fine-tuning).

* Mixed precision through ONE code path: ``torch.autocast(device_type)`` with bf16 (default where
  supported) or fp16 + ``GradScaler`` on CUDA, and autocast disabled (fp32) on CPU.
* Data loaders over a ``DistributedSampler`` for training (also for one process, so 1..N ranks see the
  same order logic) and a :class:`ShardSampler` for evaluation, workers, pinned memory on GPU.
* :func:`train_one_epoch`: per-step lr from the cosine schedule, gradient accumulation with
  ``DDP.no_sync`` between boundaries, gradient clipping, smoothed meters, TensorBoard scalars.
  The stage supplies ``step_fn(model, batch) -> (loss, {name: value})``.
* :func:`gather_predictions`: exact (un-padded) concatenation of per-rank outputs for metrics.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from utils.checkpoint import auto_resume
from utils.dist import DistInfo, get_world_size, is_dist_avail_and_initialized, seed_all
from utils.logging import MetricLogger, TensorboardLogger
from utils.optim import adjust_learning_rate, cosine_scheduler, create_optimizer


def add_common_args(parser) -> None:
    """Flags shared by the three stages (seed names and their defaults where the seed has them)."""
    g = parser.add_argument_group("run")
    g.add_argument("--output_dir", default="", help="checkpoints, log.txt and args.json go here")
    g.add_argument("--log_dir", default=None, help="TensorBoard folder")
    g.add_argument("--device", default=None, help="cuda | cpu (default: cuda when available)")
    g.add_argument("--seed", default=0, type=int)
    g.add_argument("--resume", default="", help="checkpoint to resume from (default: newest in output_dir)")
    g.add_argument("--auto_resume", action="store_true", default=True)
    g.add_argument("--no_auto_resume", action="store_false", dest="auto_resume")
    g.add_argument("--save_ckpt", action="store_true", default=True)
    g.add_argument("--no_save_ckpt", action="store_false", dest="save_ckpt")
    g.add_argument("--save_ckpt_freq", default=20, type=int)
    g.add_argument("--num_workers", default=4, type=int)
    g.add_argument("--pin_mem", action="store_true", default=True, help="pinned host memory (GPU only)")
    g.add_argument("--no_pin_mem", action="store_false", dest="pin_mem")
    g.add_argument("--world_size", default=1, type=int, help="informative; torchrun sets the real value")
    g.add_argument("--local_rank", default=-1, type=int)
    g.add_argument("--dist_on_itp", action="store_true")
    g.add_argument("--dist_url", default="env://")
    g.add_argument("--amp", default="bf16", choices=["bf16", "fp16", "none"], help="GPU mixed precision")
    g.add_argument("--max_steps_per_epoch", default=0, type=int, help="debug: cap optimizer steps per epoch")
    v = parser.add_argument_group("corrected variants (default off = the original's behaviour)")
    v.add_argument("--padding_attention_mask", action="store_true",
                   help="padding words (lead id 0) are masked out of attention; the original attends to them")  # fmt: skip
    o = parser.add_argument_group("optimizer")
    o.add_argument("--opt", default="adamw", type=str, help="only adamw")
    o.add_argument("--opt_eps", default=1e-8, type=float)
    o.add_argument("--opt_betas", default=None, type=float, nargs="+")
    o.add_argument("--clip_grad", default=None, type=float, help="max grad norm (None: no clipping)")
    o.add_argument(
        "--momentum", default=0.9, type=float, help="unused by AdamW; kept for the seed's interface"
    )
    o.add_argument("--weight_decay", default=0.05, type=float)
    o.add_argument("--lr", default=5e-4, type=float)
    o.add_argument("--warmup_lr", default=1e-6, type=float, help="lr at the first warm-up step")
    o.add_argument("--min_lr", default=1e-5, type=float)
    o.add_argument("--warmup_epochs", default=5, type=int)
    o.add_argument("--warmup_steps", default=-1, type=int, help="overrides --warmup_epochs when > 0")
    o.add_argument("--epochs", default=100, type=int)
    o.add_argument("--batch_size", default=64, type=int, help="per process")


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


def make_loader(dataset: Dataset, args, info: DistInfo, train: bool) -> DataLoader:
    """Training: a DistributedSampler over ``dataset`` (shuffled and seeded by ``args.seed``).
    Evaluation: a :class:`ShardSampler` (every sample exactly once over the ranks, for exact metrics)."""
    if train:
        sampler = DistributedSampler(
            dataset,
            num_replicas=info.world_size,
            rank=info.rank,
            shuffle=True,
            seed=args.seed,
            drop_last=True,
        )
    else:
        sampler = ShardSampler(len(dataset), info.rank, info.world_size)
    # Training drops the last partial batch, except when a rank has less than one batch in all: a
    # 1 % label fraction (e.g. 70 PTB-XL form records with --batch_size 256) must still train.
    drop_last = train and len(sampler) >= args.batch_size
    return DataLoader(
        dataset,
        batch_size=args.batch_size,
        sampler=sampler,
        num_workers=args.num_workers,
        pin_memory=bool(args.pin_mem and info.device.type == "cuda"),
        drop_last=drop_last,
        persistent_workers=False,
    )


class ShardSampler(Sampler):
    """Evaluation sampler: rank r takes indices r, r + W, ... with NO padding, so gathered
    predictions cover every sample exactly once (DistributedSampler would duplicate some)."""

    def __init__(self, n: int, rank: int, world_size: int):
        self.indices = list(range(rank, n, world_size))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def steps_per_epoch(loader: DataLoader, update_freq: int, max_steps: int = 0) -> int:
    steps = len(loader) // update_freq
    if max_steps > 0:
        steps = min(steps, max_steps)
    if steps == 0:
        raise ValueError(
            f"an epoch has {len(loader)} batches per process, fewer than --update_freq {update_freq}: "
            "lower --batch_size or add data"
        )
    return steps


def reseed_epoch(seed: int, epoch: int, rank: int) -> None:
    """Seed torch / numpy / python from (seed, epoch, rank) at the start of every epoch.

    Why: masking, dropout and the loader's worker seeds then depend only on the epoch, so a run killed
    and resumed at an epoch boundary draws exactly what the uninterrupted run draws, on every rank
    (a checkpoint written by rank 0 holds only rank 0's RNG state)."""
    seed_all(int(seed) + 1_000_003 * (int(epoch) + 1) + 7919 * int(rank))


def train_one_epoch(
    model: torch.nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    amp: Amp,
    epoch: int,
    args,
    step_fn: Callable,
    lr_values: np.ndarray,
    niter_per_ep: int,
    tb: TensorboardLogger | None = None,
    header: str = "",
    params_to_clip=None,
) -> dict:
    """One epoch of ``niter_per_ep`` optimizer steps of ``update_freq`` micro-batches each.

    ``step_fn(model, batch)`` runs the forward under autocast and returns ``(loss, metrics)``.
    Returns the rank-averaged global average of every meter (MAE style), plus ``lr``.
    """
    update_freq = max(int(getattr(args, "update_freq", 1)), 1)
    logger = MetricLogger()
    params = (
        params_to_clip if params_to_clip is not None else [p for p in model.parameters() if p.requires_grad]
    )
    optimizer.zero_grad(set_to_none=True)
    n_micro = niter_per_ep * update_freq
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
                raise FloatingPointError(f"loss is {loss_value} at epoch {epoch}, step {step}; stopping")
            amp.scaler.scale(loss / update_freq).backward()
        grad_norm = None
        if boundary:
            amp.scaler.unscale_(optimizer)
            if args.clip_grad:
                grad_norm = float(torch.nn.utils.clip_grad_norm_(params, args.clip_grad))
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


def print_run_header(args, info: DistInfo, n_train: int, niter_per_ep: int, amp: Amp, print0) -> None:
    """Effective batch and lr printed at start (MAE style)."""
    update_freq = max(int(getattr(args, "update_freq", 1)), 1)
    eff = args.batch_size * update_freq * info.world_size
    print0(
        f"device {info.device} x {info.world_size} process(es), precision {amp.name}; "
        f"{n_train} training samples, {niter_per_ep} optimizer steps per epoch"
    )
    print0(
        f"batch {args.batch_size} per process x update_freq {update_freq} x world {info.world_size} "
        f"= effective batch {eff}; lr {args.lr:.3e} (min {args.min_lr:.3e}, warm-up {args.warmup_epochs} ep)"
    )


def setup_optimization(args, model: torch.nn.Module, niter_per_ep: int, amp: Amp, layer_decay: float = 1.0):
    """AdamW (layer-decay groups), the per-step lr schedule, and auto-resume: shared by the three stages.

    Returns ``(optimizer, lr_values, start_epoch, checkpoint)``; ``checkpoint`` is the resumed dict
    (stage extras such as the best validation AUC) or None when training starts from scratch.
    """
    optimizer = create_optimizer(args, model, layer_decay=layer_decay)
    lr_values = cosine_scheduler(
        args.lr, args.min_lr, args.epochs, niter_per_ep, args.warmup_epochs, args.warmup_lr, args.warmup_steps
    )
    start_epoch, ckpt = (
        auto_resume(args.output_dir, model, optimizer, amp.scaler, resume=args.resume or None)
        if args.auto_resume or args.resume
        else (0, None)
    )
    return optimizer, lr_values, start_epoch, ckpt


def wrap_ddp(module: torch.nn.Module, info: DistInfo) -> torch.nn.Module:
    """DistributedDataParallel when running under torchrun with several processes, else the module."""
    if not info.distributed:
        return module
    return torch.nn.parallel.DistributedDataParallel(
        module, device_ids=[info.local_rank] if info.device.type == "cuda" else None
    )
