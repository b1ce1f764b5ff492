"""Run integrity, shared by every stage: a result is a fact (docs/robustness.md).

* :func:`digest`, :func:`sha256_file`, :func:`file_identity`: identities of settings, files, folders.
* :func:`diff_settings`: the human-readable differences between two settings dicts.
* :func:`write_stamp` / :func:`read_stamp`: a JSON record of what made an output, written atomically
  next to it; an output whose stamp no longer matches its inputs is redone or refused, never reused.
* :class:`OutputDirLock`: one writer per output folder (an ``fcntl`` lock the kernel releases when
  the holder dies, so a stale lock is detected without guessing).
* :func:`set_parent_death_signal`: a torchrun worker dies with its launcher (Linux ``prctl``).
* :func:`check_finite`: NaN/inf refused with a message naming what holds them.
* :func:`provenance`: UTC time, git commit (+ dirty flag), checkpoint path and SHA-256 for result rows.

Imports the standard library, numpy and torch only.
"""

from __future__ import annotations

import ctypes
import datetime as dt
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class StaleOutputError(RuntimeError):
    """An output exists but was made from other inputs or settings."""


class BusyOutputDirError(RuntimeError):
    """Another live process holds the output folder."""


class NonFiniteError(ValueError):
    """NaN or inf where only finite numbers are valid."""


# ----------------------------------------------------------------------------------------- identities
def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def digest(obj: Any) -> str:
    """SHA-256 (hex) of the canonical JSON of ``obj``."""
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def file_identity(path: str | os.PathLike, root: str | os.PathLike | None = None) -> dict:
    """``{name, size, mtime_ns}`` of a file (``name`` relative to ``root`` when given): cheap, and changes
    whenever the file is rewritten or truncated."""
    p = Path(path)
    st = p.stat()
    name = str(p.relative_to(root)) if root is not None else str(p)
    return {"name": name, "size": int(st.st_size), "mtime_ns": int(st.st_mtime_ns)}


def folder_identity(root: str | os.PathLike, pattern: str = "**/*.npy") -> list[dict]:
    """Sorted :func:`file_identity` of every file under ``root`` matching ``pattern``."""
    root = Path(root)
    return [file_identity(p, root) for p in sorted(root.glob(pattern)) if p.is_file()]


def diff_settings(old: dict, new: dict) -> list[str]:
    """``["seed: 0 -> 1", "finetune: (absent) -> ckpt.pth", ...]`` for every key whose value differs."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, "(absent)"), new.get(key, "(absent)")
        if canonical_json(a) != canonical_json(b):
            out.append(f"{key}: {_short(a)} -> {_short(b)}")
    return out


def _short(v: Any, n: int = 80) -> str:
    s = v if isinstance(v, str) else canonical_json(v)
    return s if len(s) <= n else s[: n - 3] + "..."


# --------------------------------------------------------------------------------------------- stamps
def write_json_atomic(path: str | os.PathLike, record: Any) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(record, fh, indent=1, sort_keys=True, default=str)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


write_stamp = write_json_atomic


def read_stamp(path: str | os.PathLike) -> dict | None:
    """The stamp at ``path``, or None when there is none. A damaged stamp is an error naming the file."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise StaleOutputError(f"{path} is damaged ({exc}); delete the outputs beside it and rerun") from exc


# ----------------------------------------------------------------------------------------------- lock
class OutputDirLock:
    """Exclusive lock on ``<folder>/.lock`` for the life of this object (``with`` or acquire/release).

    The kernel drops an ``flock`` when its process dies (also on ``kill -9``), so a lock file left by a
    dead process is simply re-locked; a live holder makes :meth:`acquire` raise
    :class:`BusyOutputDirError` naming its pid, host, start time and command."""

    def __init__(self, folder: str | os.PathLike):
        self.path = Path(folder) / ".lock"
        self._fh = None

    def acquire(self) -> OutputDirLock:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+", encoding="utf-8")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "(unknown holder)"
            fh.close()
            raise BusyOutputDirError(
                f"{self.path.parent} is in use by another run ({holder}). Wait for it to finish or stop it "
                "(two writers would interleave logs and overwrite each other's checkpoints), or choose "
                "another --output_dir."
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(
            canonical_json({"pid": os.getpid(), "host": socket.gethostname(), "started_utc": utc_now(),
                            "argv": " ".join(sys.argv)})  # fmt: skip
        )
        fh.flush()
        self._fh = fh
        return self

    def release(self) -> None:
        if self._fh is not None:
            self._fh.close()  # closing drops the flock; the file stays (harmless, re-lockable)
            self._fh = None

    def __enter__(self) -> OutputDirLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def set_parent_death_signal(sig: int = signal.SIGTERM) -> bool:
    """Ask Linux to send ``sig`` to this process when its parent (the torchrun launcher) dies, so a
    ``kill -9`` of torchrun does not leave an orphan worker training. Returns False where unsupported
    (other OS) or when the parent is already gone (then the signal is sent at once)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        parent = os.getppid()
        if libc.prctl(1, int(sig), 0, 0, 0) != 0:  # 1 = PR_SET_PDEATHSIG
            return False
    except OSError:
        return False
    if os.getppid() != parent:  # the launcher died between fork and prctl
        os.kill(os.getpid(), sig)
    return True


# --------------------------------------------------------------------------------------------- finite
def check_finite(x: np.ndarray | torch.Tensor, what: str) -> None:
    """Raise :class:`NonFiniteError` naming ``what``, the count and the first position of NaN/inf."""
    if isinstance(x, torch.Tensor):
        if not x.is_floating_point() or bool(torch.isfinite(x).all()):
            return
        bad = (~torch.isfinite(x)).nonzero()
        n, first = int(bad.shape[0]), tuple(int(v) for v in bad[0])
    else:
        a = np.asarray(x)
        if not np.issubdtype(a.dtype, np.floating) or np.isfinite(a).all():
            return
        bad = np.argwhere(~np.isfinite(a))
        n, first = len(bad), tuple(int(v) for v in bad[0])
    raise NonFiniteError(f"{what}: {n} non-finite value(s) (NaN/inf), first at index {first}")


# ----------------------------------------------------------------------------------------- provenance
def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def git_state(root: str | os.PathLike = PROJECT_ROOT) -> dict:
    """``{"git_commit": sha or "unknown", "git_dirty": bool | None}`` of the code that runs."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()  # fmt: skip
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                capture_output=True, text=True, timeout=10, check=True).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": "unknown", "git_dirty": None}
    return {"git_commit": sha, "git_dirty": bool(status.strip())}


def provenance(checkpoint: str | os.PathLike | None = None) -> dict:
    """What makes a result row traceable: UTC time, code version, and the checkpoint's path and SHA-256."""
    out = {"utc": utc_now(), **git_state()}
    if checkpoint:
        out["checkpoint"] = str(checkpoint)
        out["checkpoint_sha256"] = sha256_file(checkpoint) if Path(checkpoint).is_file() else ""
    return out
