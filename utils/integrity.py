"""Run integrity, shared by every stage: a result is a fact (docs/robustness.md).

* :func:`digest`, :func:`sha256_file`, :func:`file_identity`: identities of settings, files, folders.
* :func:`diff_settings`: the human-readable differences between two settings dicts.
* :func:`write_stamp` / :func:`read_stamp`: a JSON record of what made an output, written atomically
  next to it; an output whose stamp no longer matches its inputs is redone or refused, never reused.
* :func:`files_identity`, :func:`npy_identity`, :func:`make_stamp`, :func:`stale_reasons`,
  :func:`damaged_outputs`, :func:`stamp_problems`: the data stages' "already done" check (same inputs and settings, outputs
  intact) - preprocessing batches and tokenised splits.
* :class:`OutputDirLock`: one writer per output folder (an ``fcntl`` lock the kernel releases when
  the holder dies, so a stale lock is detected without guessing).
* :func:`check_finite`: NaN/inf refused with a message naming what holds them.
* :func:`provenance`: UTC time, git commit (+ dirty flag), checkpoint path and SHA-256 for result rows.

Imports the standard library and numpy only (torch only inside :func:`check_finite`, for a tensor): the
data stages import it. The artifact rule built on these primitives is :mod:`utils.artifacts`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import socket
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from utils.arrays import naming_write_errors

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
def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()


@contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "w", fsync: bool = False):
    """Write ``path`` all or nothing: yields a temp file opened beside it (``mode`` "w" text UTF-8 or "wb");
    when the block ends without error the temp file replaces ``path`` (``os.replace``, after an fsync when
    ``fsync``), otherwise it is removed and ``path`` keeps its old content."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, _FILE_MODE)  # mkstemp gives 0600; a replaced file gets what open() would give
    try:
        with naming_write_errors(path), os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8") as fh:
            yield fh  # a failed write (full disk) names ``path``
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_json_atomic(path: str | os.PathLike, record: Any) -> Path:
    with atomic_file(path) as fh:
        json.dump(record, fh, indent=1, sort_keys=True, default=str)
        fh.write("\n")
    return Path(path)


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


# ------------------------------------------------------------------------------- output stamps (data)
#: Inputs with more files than this are stamped by count + digest only (a MIMIC batch: 100 100 records).
LIST_LIMIT = 2000


def files_identity(paths, root: str | os.PathLike | None = None, list_limit: int = LIST_LIMIT) -> dict:
    """Identity of a group of input files: ``{count, digest[, files]}``. A missing file counts as
    ``{"name", "missing": True}``; the per-file list is kept when there are at most ``list_limit``
    files, so a change can be named; above that only the digest tells that something changed."""
    ids = []
    for p in paths:
        try:
            ids.append(file_identity(p, root))
        except FileNotFoundError:
            ids.append(
                {"name": str(Path(p).relative_to(root)) if root is not None else str(p), "missing": True}
            )
    out = {"count": len(ids), "digest": digest(ids)}
    if len(ids) <= list_limit:
        out["files"] = ids
    return out


def npy_identity(path: str | os.PathLike, root: str | os.PathLike | None = None) -> dict:
    """:func:`file_identity` of a ``.npy`` plus the ``shape`` and ``dtype`` of its header."""
    out = file_identity(path, root)
    with open(path, "rb") as fh:
        major, _ = np.lib.format.read_magic(fh)
        read_header = (
            np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        )
        shape, _, dtype = read_header(fh)  # the header only, no data read
    out.update(shape=list(shape), dtype=str(np.dtype(dtype)))
    return out


def make_stamp(stage: str, settings: dict, inputs: dict, outputs: list[dict], **extra: Any) -> dict:
    """What made an output: ``{stage, settings, inputs: {group: identity}, outputs: [identity], utc}``."""
    return {"stage": stage, "settings": settings, "inputs": inputs, "outputs": outputs, "utc": utc_now(),
            **extra}  # fmt: skip


def _input_changes(group: str, old: Any, new: Any) -> list[str]:
    if canonical_json(old) == canonical_json(new):
        return []
    if isinstance(old, dict) and isinstance(new, dict) and "digest" in old and "digest" in new:
        if old["digest"] == new["digest"]:
            return []
        if "files" in old and "files" in new:
            a = {f["name"]: f for f in old["files"]}
            b = {f["name"]: f for f in new["files"]}
            names = [f"{n} (removed)" for n in sorted(set(a) - set(b))]
            names += [f"{n} (new)" for n in sorted(set(b) - set(a))]
            names += [n for n in sorted(set(a) & set(b)) if canonical_json(a[n]) != canonical_json(b[n])]
            return [f"input {group}: {len(names)} file(s) changed: {', '.join(names[:5])}"
                    + (" ..." if len(names) > 5 else "")]  # fmt: skip
        return [f"input {group}: {old['count']} -> {new['count']} files, identity (size/mtime) differs"]
    if isinstance(old, dict) and isinstance(new, dict) and "name" in new:
        return [f"input {group}: {new['name']} changed (size {old.get('size')} -> {new.get('size')}, "
                f"mtime_ns {old.get('mtime_ns')} -> {new.get('mtime_ns')})"]  # fmt: skip
    return [f"input {group}: {_short(old)} -> {_short(new)}"]


def stale_reasons(old: dict | None, new: dict) -> list[str]:
    """Why outputs stamped ``old`` are not what the stamp ``new`` describes: each differing setting
    (``"setting seed: 0 -> 1"``) and each changed input group, naming files where it can; [] = same."""
    if old is None:
        return ["no stamp (outputs of an unfinished run or of an older version)"]
    if old.get("stage") != new.get("stage"):
        return [f"stamp of stage {old.get('stage')!r}, expected {new.get('stage')!r}"]
    out = [f"setting {d}" for d in diff_settings(old.get("settings", {}), new.get("settings", {}))]
    old_in, new_in = old.get("inputs", {}), new.get("inputs", {})
    for group in sorted(set(old_in) | set(new_in)):
        out += _input_changes(group, old_in.get(group, "(absent)"), new_in.get(group, "(absent)"))
    return out


def damaged_outputs(root: str | os.PathLike, outputs: list[dict]) -> list[str]:
    """Stamped outputs (identities relative to ``root``) that are missing, have another size than when
    they were stamped (truncated or rewritten), or whose ``.npy`` header disagrees with the stamp or
    with the file size. Returns one message per damaged file, naming it; [] = intact."""
    root = Path(root)
    bad = []
    for rec in outputs:
        path = root / rec["name"]
        if not path.is_file():
            bad.append(f"{path}: missing")
            continue
        size = path.stat().st_size
        if size != rec.get("size"):
            bad.append(
                f"{path}: {size} bytes, {rec.get('size')} when it was completed (truncated or rewritten)"
            )
            continue
        if "shape" in rec:
            try:
                now = npy_identity(path, root)
            except (OSError, ValueError) as exc:
                bad.append(f"{path}: unreadable .npy header ({exc})")
                continue
            if now["shape"] != rec["shape"] or now["dtype"] != rec.get("dtype"):
                bad.append(
                    f"{path}: {now['dtype']} {now['shape']}, stamped {rec.get('dtype')} {rec['shape']}"
                )
    return bad


def stamp_problems(root: str | os.PathLike, old: dict | None, new: dict) -> list[str]:
    """The one "already done?" rule of the data stages: outputs stamped ``old`` (relative to ``root``)
    are kept only when they are intact and ``new`` (this run's settings and inputs) matches.
    Returns the reasons to redo them, each naming a damaged file, a setting or an input; [] = keep."""
    if old is None:
        return stale_reasons(None, new)
    damaged = [f"damaged output {d}" for d in damaged_outputs(root, old.get("outputs", []))]
    return damaged or stale_reasons(old, new)


# ----------------------------------------------------------------------------------------------- lock
class OutputDirLock:
    """Exclusive lock on ``<folder>/.lock`` for the life of this object (``with`` or acquire/release).

    The kernel drops an ``flock`` when its process dies (also on ``kill -9``), so a lock file left by a
    dead process is simply re-locked; a live holder makes :meth:`acquire` raise
    :class:`BusyOutputDirError` naming its pid, host, start time and command. A holder that is dead
    while the lock is still held means processes it forked (data-loader workers inherit the lock's
    file) are still exiting: :meth:`acquire` then retries for up to ``dead_holder_wait_s`` seconds."""

    def __init__(self, folder: str | os.PathLike, dead_holder_wait_s: float = 20.0):
        self.path = Path(folder) / ".lock"
        self.dead_holder_wait_s = dead_holder_wait_s
        self._fh = None

    def acquire(self) -> OutputDirLock:
        import fcntl
        import time

        self.path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.dead_holder_wait_s
        while True:
            fh = open(self.path, "a+", encoding="utf-8")
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                fh.seek(0)
                holder = fh.read().strip() or "(unknown holder)"
                fh.close()
            if _holder_is_dead(holder) and time.monotonic() < deadline:
                time.sleep(0.5)  # its forked children (data-loader workers) still hold the flock
                continue
            raise BusyOutputDirError(
                f"{self.path.parent} is in use by another run ({holder}). Wait for it to finish or stop it "
                "(two writers would interleave logs and overwrite each other's checkpoints), or choose "
                "another --output_dir."
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(
            canonical_json(
                {
                    "pid": os.getpid(),
                    "host": socket.gethostname(),
                    "started_utc": utc_now(),
                    "argv": " ".join(sys.argv),
                }
            )  # fmt: skip
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


def _holder_is_dead(holder: str) -> bool:
    """True when the lock file names a process on this host that no longer exists."""
    try:
        rec = json.loads(holder)
        pid, host = int(rec["pid"]), rec.get("host")
    except (ValueError, TypeError, KeyError):
        return False
    if host != socket.gethostname():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


# --------------------------------------------------------------------------------------------- finite
def check_finite(x, what: str) -> None:
    """Raise :class:`NonFiniteError` naming ``what``, the count and the first position of NaN/inf in ``x``
    (a numpy array or a torch tensor; torch is imported only for a tensor, so the data stages stay torch-free)."""
    torch = sys.modules.get("torch")  # a tensor can only exist when torch is already imported
    if torch is not None and isinstance(x, torch.Tensor):
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
