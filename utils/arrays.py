"""Opening ``.npy`` data files with errors that name the file and say what is wrong with it.

``np.load`` on a truncated file ends in ``mmap length is greater than file size`` without the file's name;
:func:`open_npy` names it and compares the header's shape with the bytes present. :func:`scan_range`
gives the min / max of a large (memory-mapped) array in row chunks, for value-range checks.

Writing: an ``OSError`` from a write (a full disk: ``[Errno 28] No space left on device``) names no file;
:func:`naming_write_errors` adds it (``utils.artifacts`` writes every output under it), and :func:`create_npy`
checks the free space before it allocates a memory-mapped ``.npy`` (a write into a memory map on a full
disk is a SIGBUS crash without any message, so the check comes first).
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import shutil
from pathlib import Path

import numpy as np


class DataFileError(ValueError):
    """A data file that cannot be used as it is; the message names the file and the rule."""


def npy_header(path: str | os.PathLike) -> tuple[tuple[int, ...], np.dtype, int]:
    """``(shape, dtype, data offset)`` from a ``.npy`` header, without reading the data."""
    with open(path, "rb") as fh:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
        else:
            shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
        return tuple(shape), np.dtype(dtype), fh.tell()


def npy_problem(path: str | os.PathLike, exc: BaseException | None = None) -> str | None:
    """Why ``path`` is not a usable ``.npy`` file (None when nothing is found)."""
    path = Path(path)
    size = path.stat().st_size
    try:
        shape, dtype, offset = npy_header(path)
    except Exception as err:  # noqa: BLE001 - described, not raised
        why = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
        return f"not a .npy array file ({size} bytes; {why})"
    if dtype.hasobject:
        return f"holds Python objects (dtype {dtype}); data files hold numbers (np.save of a numeric array)"
    need = offset + math.prod(shape) * dtype.itemsize
    if size < need:
        return (
            f"truncated: its header says shape {shape} {dtype} ({need} bytes), the file has {size} bytes "
            "(an interrupted copy or write, or a full disk?); rerun the step that wrote it"
        )
    if exc is not None:
        return f"unreadable: {type(exc).__name__}: {exc}"
    return None


def open_npy(path: str | os.PathLike, mmap_mode: str | None = "r") -> np.ndarray:
    """``np.load(path, mmap_mode)``; a file that is not a readable ``.npy`` array raises
    :class:`DataFileError` naming it and the reason (truncated, not a .npy file, Python objects)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        return np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - re-raised naming the file
        raise DataFileError(f"{path}: {npy_problem(path, exc)}") from None


def scan_range(array: np.ndarray, rows: int = 1 << 16) -> tuple[float, float] | None:
    """``(min, max)`` of ``array`` read ``rows`` rows at a time (memory maps stay out of RAM); None if empty."""
    if array.size == 0:
        return None
    lo, hi = math.inf, -math.inf
    for start in range(0, array.shape[0], rows):
        block = np.asarray(array[start : start + rows])
        lo, hi = min(lo, block.min().item()), max(hi, block.max().item())
    return lo, hi


def first_where(array: np.ndarray, bad, rows: int = 1 << 16) -> tuple[int, ...] | None:
    """Index of the first element for which ``bad(block) -> bool array`` holds, scanning row chunks."""
    for start in range(0, array.shape[0], rows):
        block = np.asarray(array[start : start + rows])
        hit = np.argwhere(bad(block))
        if hit.size:
            idx = tuple(int(v) for v in hit[0])
            return (idx[0] + start, *idx[1:])
    return None


def _size(nbytes: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if nbytes < 1024 or unit == "TiB":
            return f"{nbytes:.0f} {unit}" if unit == "bytes" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    return ""


def _full_disk_hint(path: Path) -> str:
    folder = next((p for p in (path.parent, *path.parents) if p.exists()), Path("."))
    free = shutil.disk_usage(folder).free
    return f" ({_size(free)} free on the device holding {folder}: free space or write elsewhere)"


@contextlib.contextmanager
def naming_write_errors(path: str | os.PathLike):
    """Re-raise an ``OSError`` that names no file (a failed write) as one naming ``path``, with the free
    space of its device when the disk is full."""
    path = Path(path)
    try:
        yield
    except OSError as exc:
        if exc.filename is not None:
            raise
        hint = _full_disk_hint(path) if exc.errno in (errno.ENOSPC, errno.EDQUOT) else ""
        raise OSError(exc.errno, f"{exc.strerror or exc} while writing {path}{hint}", str(path)) from exc


def check_free_space(path: str | os.PathLike, nbytes: int) -> None:
    """Refuse to allocate ``nbytes`` for ``path`` when its device has less free space (ENOSPC naming it)."""
    path = Path(path)
    folder = next((p for p in (path.parent, *path.parents) if p.exists()), Path("."))
    free = shutil.disk_usage(folder).free
    if nbytes > free:
        raise OSError(
            errno.ENOSPC,
            f"writing {path} needs {_size(nbytes)}, the device holding {folder} has {_size(free)} free: "
            "free space or write elsewhere",
            str(path),
        )


def create_npy(path: str | os.PathLike, dtype, shape: tuple[int, ...]) -> np.memmap:
    """A new memory-mapped ``.npy`` (``np.lib.format.open_memmap`` mode ``w+``), after checking that its
    device has room for all of it."""
    check_free_space(path, math.prod(shape) * np.dtype(dtype).itemsize + 4096)
    with naming_write_errors(path):
        return np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=tuple(shape))


LABEL_VALUES = (0, 1)  # multi-hot: one column per class


def check_labels(labels: np.ndarray, path: Path) -> None:
    """Labels are multi-hot: a numeric (N, C) or (N,) array of 0 and 1 only. Anything else (class indices,
    -1 for "unknown", NaN, probabilities) is refused naming the file, the first bad row and the values found,
    before training (sklearn's ROC-AUC would otherwise fail after an epoch with a ``multi_class`` error)."""
    if not (np.issubdtype(labels.dtype, np.number) or labels.dtype == np.bool_):
        raise DataFileError(f"{path}: labels of dtype {labels.dtype}; expected numbers 0/1 (multi-hot)")
    if labels.ndim not in (1, 2):
        raise DataFileError(
            f"{path}: labels of shape {labels.shape}; expected (N, C) multi-hot (or (N,) 0/1)"
        )
    bad = first_where(labels, lambda b: (b != 0) & (b != 1))  # NaN is != 0 and != 1
    if bad is not None:
        found = np.unique(np.asarray(labels[bad[0] : bad[0] + 4096]))
        where = f"row {bad[0]}" + (f", column {bad[1]}" if len(bad) > 1 else "")
        raise DataFileError(
            f"{path}: label values must be {LABEL_VALUES[0]} or {LABEL_VALUES[1]} (multi-hot, one column per "
            f"class); {where} holds {np.asarray(labels[bad]).item()!r} (values near it: {found[:10].tolist()}). "
            "Class indices must be turned into one column per class; rows of unknown label left out"
        )
