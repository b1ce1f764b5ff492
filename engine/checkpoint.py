"""Training state in checkpoints (docs/training.md "Checkpoints"): save, resume, RNG.

``build_state`` -> ``{model, optimizer, scaler, epoch, args, model_config, header, rng, ...}``; ``save_checkpoint``
/ ``save_epoch_checkpoints`` write it on rank 0 through a temp file + ``os.replace`` (a crash mid-write leaves the
previous file loadable). Everything loads with ``torch.load(weights_only=True)`` (args as a plain dict, numpy RNG
state as a tensor). ``header`` (modeling.checkpoint.make_header: model name, model config, recipe) is what
``modeling.load_model`` reads; ``args`` (every resolved flag) is kept for people and older readers.

Resume: ``find_latest_checkpoint`` / ``auto_resume`` (model strictly, optimizer, scaler, RNG state). Reading a
file and loading a model are modeling/checkpoint.py's.
"""

from __future__ import annotations

import errno
import os
import random
import re
import shutil
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from modeling.checkpoint import check_finite_state, load_state_dict_strict, read_checkpoint, state_dict_of
from utils.dist import is_main_process
from utils.integrity import NonFiniteError, atomic_file, check_finite
from utils.logging import to_plain

_PERIODIC = re.compile(r"^checkpoint-(\d+)\.pth$")


def rng_state() -> dict:
    """Python, numpy and torch (CPU, CUDA) RNG states of this process."""
    np_state = np.random.get_state()
    state = {
        "python": list(random.getstate()[1]) + [random.getstate()[0]],
        "python_gauss": random.getstate()[2],
        "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
        "numpy_gauss": [int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    py = state["python"]
    random.setstate((int(py[-1]), tuple(int(v) for v in py[:-1]), state["python_gauss"]))
    has_gauss, cached = state["numpy_gauss"]
    np.random.set_state(
        ("MT19937", state["numpy_keys"].numpy().astype(np.uint32), state["numpy_pos"], int(has_gauss), cached)
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temp file beside ``path``, fsync, then ``os.replace`` (utils.integrity.atomic_file)."""
    with atomic_file(path, "wb", fsync=True) as fh:
        try:
            torch.save(obj, fh)
        except RuntimeError as exc:  # torch's zip writer: "file write failed", no file named
            if "write" not in str(exc).lower():
                raise
            free = shutil.disk_usage(Path(path).parent).free
            raise OSError(
                errno.ENOSPC if free < (64 << 20) else errno.EIO,
                f"writing checkpoint {path} failed ({free / 2**20:.0f} MiB free on its device): "
                f"{str(exc).strip().splitlines()[0][:200]}",
                os.fspath(path),
            ) from exc
    return Path(path)


def save_checkpoint(output_dir: str | os.PathLike, name: str, state: dict) -> Path | None:
    """Save ``state`` as ``output_dir/name`` on rank 0 (other ranks return None)."""
    if not is_main_process():
        return None
    return atomic_torch_save(state, Path(output_dir) / name)


def build_state(
    model_without_ddp: nn.Module,
    epoch: int,
    args=None,
    optimizer: torch.optim.Optimizer | None = None,
    scaler=None,
    model_config: dict | None = None,
    header: dict | None = None,
    **extra,
) -> dict:
    """The checkpoint dict saved by every stage; ``header``: modeling.checkpoint.make_header(...)."""
    state = {"model": model_without_ddp.state_dict(), "epoch": int(epoch), "rng": rng_state()}
    if optimizer is not None:
        state["optimizer"] = optimizer.state_dict()
    if scaler is not None:
        state["scaler"] = scaler.state_dict()
    if args is not None:
        state["args"] = to_plain(args)
    if model_config is not None:
        state["model_config"] = to_plain(model_config)
    if header is not None:
        state["header"] = to_plain(header)
    state.update(extra)
    return state


def save_epoch_checkpoints(
    output_dir, epoch: int, total_epochs: int, save_freq: int, state: dict
) -> list[Path]:
    """``checkpoint.pth`` every epoch, ``checkpoint-{epoch+1}.pth`` every ``save_freq`` epochs and at the end.

    Epochs are 0-based in the loop; file names are 1-based, as in the original scripts
    (``checkpoint-100.pth`` is the state after 100 epochs).
    """
    written = []
    done = epoch + 1
    if save_freq > 0 and (done % save_freq == 0 or done == total_epochs):
        written.append(save_checkpoint(output_dir, f"checkpoint-{done}.pth", state))
    written.append(save_checkpoint(output_dir, "checkpoint.pth", state))
    return [w for w in written if w is not None]


def epoch_of(path: Path) -> int | None:
    try:
        ckpt = read_checkpoint(path, mmap=True)
    except RuntimeError as exc:
        warnings.warn(f"skipping unreadable checkpoint while resuming: {exc}", stacklevel=2)
        return None
    return int(ckpt["epoch"]) if isinstance(ckpt, dict) and "epoch" in ckpt else None


def find_latest_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    """Newest resumable checkpoint in ``output_dir``: the highest stored epoch among
    ``checkpoint.pth`` and ``checkpoint-N.pth`` (``checkpoint-best.pth`` is not a
    resume point). Ties prefer ``checkpoint.pth``; unreadable files are skipped."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return None
    best: tuple[int, int, Path] | None = None
    for path in output_dir.iterdir():
        if path.name == "checkpoint.pth":
            rank = 1
        elif _PERIODIC.match(path.name):
            rank = 0
        else:
            continue
        epoch = epoch_of(path)
        if epoch is None:
            continue
        if best is None or (epoch, rank) > best[:2]:
            best = (epoch, rank, path)
    return None if best is None else best[2]


def check_finite_optimizer_state(
    optimizer_state: Any, source: str, param_names: Mapping[int, str] | None = None
) -> None:
    """Refuse NaN/inf in a stored optimizer state (AdamW moments): resuming from it would end in a NaN loss
    reported as divergence. ``NonFiniteError`` names the file, the parameter and the state entry."""
    state = optimizer_state.get("state", {}) if isinstance(optimizer_state, Mapping) else {}
    for pid, entries in state.items():
        if not isinstance(entries, Mapping):
            continue
        who = (param_names or {}).get(pid, f"#{pid}")
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                check_finite(value, f"checkpoint {source}: optimizer state {key} of parameter {who}")


def check_scaler_state(scaler_state: Any, source: str) -> None:
    """Refuse a stored AMP loss scale that is NaN, inf or not positive: a resumed fp16 run would scale every
    loss by it and skip every step (or divide by zero) without saying why."""
    scale = scaler_state.get("scale") if isinstance(scaler_state, Mapping) else None
    if scale is None:
        return  # a disabled scaler stores no scale
    value = float(scale.item() if isinstance(scale, torch.Tensor) else scale)
    if not (np.isfinite(value) and value > 0):
        raise NonFiniteError(f"checkpoint {source}: AMP loss scale is {value} (must be a positive finite number)")


def _param_names(optimizer: torch.optim.Optimizer, model: nn.Module) -> dict[int, str]:
    """Optimizer state index -> parameter name (the state is keyed by position over the param groups)."""
    name_of = {id(p): n for n, p in model.named_parameters()}
    flat = [p for g in optimizer.param_groups for p in g["params"]]
    return {i: name_of.get(id(p), f"#{i}") for i, p in enumerate(flat)}


def auto_resume(
    output_dir,
    model_without_ddp: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scaler=None,
    resume: str | None = None,
    restore_rng: bool = True,
) -> tuple[int, dict | None]:
    """Resume from ``resume`` (a path) or else from the newest checkpoint in ``output_dir``.

    Returns ``(start_epoch, checkpoint)``: ``start_epoch`` is the 0-based epoch to
    run next (0 when nothing was found), ``checkpoint`` the loaded dict (for
    stage-specific extras such as the best metric) or None. The model loads strictly and
    NaN/inf weights are refused.
    """
    path = Path(resume) if resume else find_latest_checkpoint(output_dir)
    if path is None:
        return 0, None
    ckpt = read_checkpoint(path)
    missing = [k for k in ("model", "epoch") if not isinstance(ckpt, Mapping) or k not in ckpt]
    if missing:
        raise RuntimeError(f"{path} is not a training checkpoint of this project (missing {missing})")
    state_dict = state_dict_of(ckpt, os.fspath(path))
    check_finite_state(state_dict, os.fspath(path))
    load_state_dict_strict(model_without_ddp, state_dict, source=os.fspath(path))
    if optimizer is not None and "optimizer" in ckpt:
        check_finite_optimizer_state(
            ckpt["optimizer"], os.fspath(path), _param_names(optimizer, model_without_ddp)
        )
        optimizer.load_state_dict(ckpt["optimizer"])
    if scaler is not None and "scaler" in ckpt:
        check_scaler_state(ckpt["scaler"], os.fspath(path))
        scaler.load_state_dict(ckpt["scaler"])
    if restore_rng and "rng" in ckpt:
        set_rng_state(ckpt["rng"])
    return int(ckpt["epoch"]) + 1, ckpt
