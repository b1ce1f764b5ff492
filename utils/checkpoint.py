"""Training checkpoints: atomic writes on rank 0, auto-resume, RNG state.

A checkpoint is ``{model, optimizer, scaler, epoch, args, model_config, rng, ...}``
saved with ``torch.save`` to a temporary file in the same folder and moved into
place with ``os.replace`` (atomic on POSIX), so a crash mid-write never leaves a
half-written ``checkpoint*.pth`` behind: the previous file stays loadable.
Everything is loadable with ``torch.load(weights_only=True)`` (no pickled
objects: args are stored as a plain dict, numpy RNG state as a tensor).
"""

from __future__ import annotations

import os
import random
import re
import tempfile
import warnings
from argparse import Namespace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from utils.dist import is_main_process

_PERIODIC = re.compile(r"^checkpoint-(\d+)\.pth$")


def to_plain(value: Any) -> Any:
    """Turn args / configs into types that ``weights_only`` loading accepts."""
    if isinstance(value, Namespace):
        value = vars(value)
    if isinstance(value, dict):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    return str(value)


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
    """``torch.save`` to a temp file beside ``path``, fsync, then ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def save_checkpoint(output_dir: str | os.PathLike, name: str, state: dict) -> Path | None:
    """Save ``state`` as ``output_dir/name`` on rank 0 (other ranks return None)."""
    if not is_main_process():
        return None
    return atomic_torch_save(state, Path(output_dir) / name)


def build_state(
    model_without_ddp: torch.nn.Module,
    epoch: int,
    args=None,
    optimizer: torch.optim.Optimizer | None = None,
    scaler=None,
    model_config: dict | None = None,
    **extra,
) -> dict:
    """The checkpoint dict saved by every stage."""
    state = {"model": model_without_ddp.state_dict(), "epoch": int(epoch), "rng": rng_state()}
    if optimizer is not None:
        state["optimizer"] = optimizer.state_dict()
    if scaler is not None:
        state["scaler"] = scaler.state_dict()
    if args is not None:
        state["args"] = to_plain(args)
    if model_config is not None:
        state["model_config"] = to_plain(model_config)
    state.update(extra)
    return state


def save_epoch_checkpoints(
    output_dir, epoch: int, total_epochs: int, save_freq: int, state: dict
) -> list[Path]:
    """``checkpoint.pth`` every epoch, ``checkpoint-{epoch+1}.pth`` every ``save_freq`` epochs and at the end.

    Epochs are 0-based in the loop; file names are 1-based, as in the seed
    (``checkpoint-100.pth`` is the state after 100 epochs).
    """
    written = []
    done = epoch + 1
    if save_freq > 0 and (done % save_freq == 0 or done == total_epochs):
        p = save_checkpoint(output_dir, f"checkpoint-{done}.pth", state)
        written.append(p)
    p = save_checkpoint(output_dir, "checkpoint.pth", state)
    written.append(p)
    return [w for w in written if w is not None]


def load_file(path: str | os.PathLike, mmap: bool = False) -> dict:
    """``torch.load`` with ``weights_only=True`` on CPU, with a clear error for a bad file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:  # noqa: BLE001 - re-raised with the file name
        raise RuntimeError(f"cannot load checkpoint {path}: {type(exc).__name__}: {exc}") from exc


def _epoch_of(path: Path) -> int | None:
    try:
        ckpt = load_file(path, mmap=True)
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
        epoch = _epoch_of(path)
        if epoch is None:
            continue
        key = (epoch, rank, path)
        if best is None or key[:2] > best[:2]:
            best = key
    return None if best is None else best[2]


_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def strip_prefixes(state_dict: dict) -> dict:
    """Remove DDP's ``module.`` and torch.compile's ``_orig_mod.`` key prefixes, in any nesting order
    (``torch.compile(DDP(m))`` gives ``_orig_mod.module.``). Only leading prefixes are touched."""
    out = {}
    for key, value in state_dict.items():
        changed = True
        while changed:
            changed = False
            for prefix in _WRAPPER_PREFIXES:
                if key.startswith(prefix):
                    key, changed = key[len(prefix) :], True
        out[key] = value
    return out


def auto_resume(
    output_dir,
    model_without_ddp: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scaler=None,
    resume: str | None = None,
    restore_rng: bool = True,
) -> tuple[int, dict | None]:
    """Resume from ``resume`` (a path) or else from the newest checkpoint in ``output_dir``.

    Returns ``(start_epoch, checkpoint)``: ``start_epoch`` is the 0-based epoch to
    run next (0 when nothing was found), ``checkpoint`` the loaded dict (for
    stage-specific extras such as the best metric) or None.
    """
    path = Path(resume) if resume else find_latest_checkpoint(output_dir)
    if path is None:
        return 0, None
    ckpt = load_file(path)
    missing = [k for k in ("model", "epoch") if k not in ckpt]
    if missing:
        raise RuntimeError(f"{path} is not a training checkpoint of this project (missing {missing})")
    result = model_without_ddp.load_state_dict(strip_prefixes(ckpt["model"]), strict=True)
    del result  # strict=True raises on any mismatch
    if optimizer is not None and "optimizer" in ckpt:
        optimizer.load_state_dict(ckpt["optimizer"])
    if scaler is not None and "scaler" in ckpt:
        scaler.load_state_dict(ckpt["scaler"])
    if restore_rng and "rng" in ckpt:
        set_rng_state(ckpt["rng"])
    return int(ckpt["epoch"]) + 1, ckpt
