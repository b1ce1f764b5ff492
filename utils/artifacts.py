"""The one artifact rule: every file the pipeline writes is a finished artifact or absent (docs/robustness.md).

A step that writes files declares ONCE what it makes, as a :class:`Step`: its name, its output folder, its
completion record (a JSON file in that folder), its settings, the identities of its inputs, the files it
owns and what defines them (``specs``: dtype, unit, scale). Then

* :meth:`Step.decide` says ``reuse`` (same settings and inputs, every output intact and unmodified since the
  record was written), ``redo`` (with the reasons, printed by the caller) or refuses (``on_change="refuse"``:
  :class:`StaleOutputError` naming every difference);
* :meth:`Step.begin` marks the folder as being written (the record says ``"state": "running"``) and removes
  every output of the earlier run, so a rerun with other inputs never leaves one of its files behind;
* :meth:`Step.complete` writes the record LAST: the settings, inputs, specs and the identity (size, mtime,
  ``.npy`` shape/dtype) of every output.

A step that READS another step's output calls :func:`require_complete` on that folder: it refuses (naming the
folder and what is wrong) a folder whose producer did not finish (an interrupted rerun left it half old, half
new) or whose files changed since the producer completed. A folder without any record was not written by
this pipeline (hand-made arrays, an older version): it is read as it is, and :func:`require_complete` says so.

Writes: :func:`atomic_path` (a temp name created exclusively in the target's own folder, ``os.replace``-d
into place only when the block ends without error), and on it :func:`save_npy`, :func:`write_text`,
:func:`write_json`, :func:`copy_file`, :func:`temp_sibling` (the ``.npy`` row writer's file). A symlink at an
output path is replaced by the new file, never written through; an interrupted or full-disk write leaves the
old file (or nothing) under the final name, and only a hidden ``.<name>.*.tmp`` beside it, which the next
:meth:`Step.begin` removes.

Training runs (engine) use the same two calls: ``Step("pretrain", output_dir, "run.json", settings, inputs,
keep_outputs=True)``; :meth:`Step.begin` when training starts (checkpoints are kept for resuming),
:meth:`Step.complete` after the last epoch, :func:`run_fingerprint` for the digest checkpoints carry, and
``require_complete(output_dir, ["run.json"], what="--eval")`` (or :func:`finished`) before ``--eval`` reports
the metrics of a run (a run killed after a few epochs is refused, naming what is missing).

Standard library and numpy only (no torch): the data stages import it.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from utils.arrays import naming_write_errors
from utils.integrity import (
    _FILE_MODE,
    StaleOutputError,
    damaged_outputs,
    diff_settings,
    digest,
    file_identity,
    make_stamp,
    npy_identity,
    stale_reasons,
)

RUNNING, COMPLETE = "running", "complete"


class IncompleteInputError(StaleOutputError):
    """A step's input folder was not completed by its producer, or changed after it completed."""


# ------------------------------------------------------------------------------------------- writes
def temp_sibling(path: str | os.PathLike) -> Path:
    """A new, empty, hidden file ``.<name>.XXXX.tmp`` in ``path``'s folder (created exclusively: never an
    existing file or a planted symlink), with the permissions a plain ``open`` would give."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, _FILE_MODE)
    os.close(fd)
    return Path(tmp)


@contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temp path beside ``path``; when the block ends without error it replaces ``path``
    (``os.replace``: a symlink at ``path`` is replaced, not followed), otherwise it is removed."""
    tmp = temp_sibling(path)
    try:
        with naming_write_errors(path):  # a failed write (full disk) names ``path``, not the temp file
            yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def save_npy(path: str | os.PathLike, arr: np.ndarray) -> Path:
    """``np.save(path, arr)`` (the same bytes), all or nothing."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, arr)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = 1, **kw: Any) -> Path:
    """``json.dumps(obj, indent=indent, **kw) + "\\n"``, all or nothing."""
    return write_text(path, json.dumps(obj, indent=indent, **kw) + "\n")


def copy_file(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """``shutil.copy2(src, dst)`` (content and times), all or nothing; a symlink at ``dst`` is replaced."""
    with atomic_path(dst) as tmp:
        shutil.copy2(src, tmp)
    return Path(dst)


def remove_path(path: str | os.PathLike) -> None:
    """Remove a file, a symlink (never what it points to) or a folder; nothing if absent."""
    p = Path(path)
    if p.is_symlink() or p.is_file():
        p.unlink()
    elif p.is_dir():
        shutil.rmtree(p)


def remove_temps(folder: str | os.PathLike, names: Iterable[str] = ("*",)) -> None:
    """Remove the hidden temp files (``.<name>.*.tmp``) that an interrupted write of ``names`` left."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    for p in folder.iterdir():
        if p.name.startswith(".") and p.name.endswith(".tmp"):
            if any(fnmatch.fnmatch(p.name, f".{n}.*.tmp") for n in names):
                remove_path(p)


# ------------------------------------------------------------------------------------ identities
def output_identity(path: str | os.PathLike, root: str | os.PathLike) -> dict:
    """:func:`npy_identity` for ``.npy`` files (size, mtime, shape, dtype), else :func:`file_identity`."""
    return npy_identity(path, root) if str(path).endswith(".npy") else file_identity(path, root)


def output_problems(root: str | os.PathLike, outputs: Sequence[dict]) -> list[str]:
    """Recorded outputs that are missing, damaged (size, ``.npy`` header) or rewritten since they were
    recorded (another mtime); one message per file, naming it; [] = every file is as recorded."""
    root = Path(root)
    bad = damaged_outputs(root, list(outputs))
    damaged = {m.split(": ", 1)[0] for m in bad}
    out = [f"damaged output {m}" for m in bad]
    for rec in outputs:
        path = root / rec["name"]
        if str(path) in damaged or "mtime_ns" not in rec:
            continue
        now = path.stat().st_mtime_ns
        if now != rec["mtime_ns"]:
            out.append(
                f"output {path} was rewritten after the step completed (mtime_ns {rec['mtime_ns']} -> {now}; "
                "a copy that did not keep file times looks the same: copy with cp -p or rsync -t)"
            )
    return out


def run_fingerprint(settings: Mapping, inputs: Mapping) -> str:
    """The digest a training run's checkpoints carry: SHA-256 of its settings and input identities."""
    return digest({"settings": dict(settings), "inputs": dict(inputs)})


# ---------------------------------------------------------------------------------------- records
def read_record(path: str | os.PathLike, nest: str | None = None) -> tuple[dict | None, dict | None]:
    """``(record, stamp)`` of the completion record at ``path`` (``stamp`` = ``record[nest]`` when the stamp
    is nested, else the record itself); ``(None, None)`` when there is none. A damaged record is an error."""
    path = Path(path)
    if not path.is_file():
        return None, None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise StaleOutputError(f"{path} is damaged ({exc}); delete the outputs beside it and rerun") from exc
    if not isinstance(record, dict):
        raise StaleOutputError(f"{path} is not a completion record (a JSON object); delete it and rerun")
    stamp = record.get(nest) if nest else record
    return record, stamp if isinstance(stamp, dict) else None


def record_state(stamp: dict | None) -> str | None:
    """``running`` / ``complete`` (records written before states existed were written last: complete)."""
    if stamp is None:
        return None
    return stamp.get("state", COMPLETE)


@dataclass(frozen=True)
class Decision:
    """What :meth:`Step.decide` found: ``action`` is ``reuse`` or ``redo``; ``reasons`` say why a redo
    (empty for a reuse and for a first run into an empty folder, ``fresh``)."""

    action: str
    reasons: tuple[str, ...] = ()
    fresh: bool = False

    @property
    def reuse(self) -> bool:
        return self.action == "reuse"

    def explain(self) -> str:
        return "; ".join(self.reasons)


@dataclass(frozen=True)
class Step:
    """The declaration of one step that writes files into ``folder``.

    ``record``: the completion record's file name (in ``folder``); ``nest``: key of the stamp inside it when
    the record carries more (``DONE.json``, tokenizer summaries: ``"stamp"``). ``settings``: what defines the
    result; ``inputs``: ``{group: identity}`` of what it reads (:func:`utils.integrity.files_identity`,
    ``file_identity``, or another step's record digest). ``outputs``: the file names (relative to ``folder``,
    glob patterns allowed) the step owns: :meth:`begin` removes them all, with those of the earlier run's
    record. ``specs``: what defines an output beyond its bytes (``{"train_data.npy": {"dtype": "float32",
    "unit": "mV"}}``), recorded and compared. ``on_change``: ``redo`` or ``refuse``. ``keep_outputs``: a
    training run resumes from its checkpoints, so :meth:`begin` removes nothing.
    """

    name: str
    folder: Path
    record: str
    settings: Mapping = field(default_factory=dict)
    inputs: Mapping = field(default_factory=dict)
    outputs: tuple[str, ...] = ()
    specs: Mapping = field(default_factory=dict)
    nest: str | None = None
    on_change: str = "redo"
    keep_outputs: bool = False

    @property
    def record_path(self) -> Path:
        return Path(self.folder) / self.record

    def at(self, folder: str | os.PathLike) -> Step:
        """The same declaration for another folder (e.g. the temp folder a batch is built in)."""
        return replace(self, folder=Path(folder))

    def stamp(self, outputs: Sequence[dict] = (), state: str = COMPLETE) -> dict:
        extra = {"specs": dict(self.specs)} if self.specs else {}
        return make_stamp(
            self.name, dict(self.settings), dict(self.inputs), list(outputs), state=state, **extra
        )

    def read(self) -> tuple[dict | None, dict | None]:
        return read_record(self.record_path, self.nest)

    def existing_outputs(self) -> list[Path]:
        folder = Path(self.folder)
        if not folder.is_dir():
            return []
        found = []
        for pattern in self.outputs:
            found += [p for p in sorted(folder.glob(pattern)) if p.is_file() or p.is_symlink()]
        return found

    # -------------------------------------------------------------------------------------- decide
    def decide(self, force: bool = False) -> Decision:
        """Reuse, redo (reasons) or refuse (``on_change="refuse"``: :class:`StaleOutputError`)."""
        _, old = self.read()
        if old is None:
            if not self.existing_outputs() and not self.record_path.exists():
                return Decision("redo", fresh=True)
            return Decision("redo", tuple(stale_reasons(None, self.stamp())))
        if record_state(old) == RUNNING:
            return Decision("redo", (f"an earlier run did not finish ({self.record} says running since "
                                     f"{old.get('utc', '?')}: interrupted)",))  # fmt: skip
        reasons = output_problems(self.folder, old.get("outputs", []))
        if not reasons:
            reasons = stale_reasons(old, self.stamp())
            if "specs" in old:  # records written before specs existed: their outputs had today's specs
                reasons += [f"spec {d}" for d in diff_settings(old["specs"], dict(self.specs))]
        if reasons and self.on_change == "refuse":
            raise StaleOutputError(
                f"{self.folder} holds outputs of {self.name} made otherwise:\n  "
                + "\n  ".join(reasons)
                + "\nUse another output folder, or delete this one to start over."
            )
        if force:
            return Decision("redo", ("redo requested",))
        return Decision("redo", tuple(reasons)) if reasons else Decision("reuse")

    # -------------------------------------------------------------------------------- begin / end
    def begin(self, extra: Mapping | None = None) -> None:
        """Mark ``folder`` as being written (record state ``running``) and remove every output of an
        earlier run (the files its record names, the declared ``outputs``, leftover temp files)."""
        folder = Path(self.folder)
        folder.mkdir(parents=True, exist_ok=True)
        try:
            _, old = self.read()
        except StaleOutputError:
            old = None  # a damaged record names no outputs: the declared ones are removed below
        self._write_record(self.stamp(state=RUNNING), extra)
        if self.keep_outputs:
            return
        for rec in (old or {}).get("outputs", []):
            name = rec.get("name") if isinstance(rec, dict) else None
            if name and (folder / name).resolve(strict=False).is_relative_to(folder.resolve()):
                remove_path(folder / name)
        for p in self.existing_outputs():
            remove_path(p)
        remove_temps(folder, [Path(n).name for n in self.outputs] or ["*"])

    def complete(self, outputs: Iterable[str] | None = None, extra: Mapping | None = None) -> dict:
        """Write the completion record (last): the stamp with the identity of every output file
        (``outputs``: names relative to ``folder``; default every existing declared output)."""
        folder = Path(self.folder)
        names = (
            list(outputs)
            if outputs is not None
            else [str(p.relative_to(folder)) for p in self.existing_outputs()]
        )
        ids = [output_identity(folder / n, folder) for n in names]
        stamp = self.stamp(ids)
        self._write_record(stamp, extra)
        return stamp

    def _write_record(self, stamp: dict, extra: Mapping | None) -> None:
        record = {**(extra or {}), self.nest: stamp} if self.nest else {**stamp, **(extra or {})}
        write_json(self.record_path, record, default=str)


# ------------------------------------------------------------------------------------------ readers
def find_record(folder: str | os.PathLike, names: Sequence[str]) -> Path | None:
    """The first of ``names`` that exists in ``folder`` (a step's completion record), else None."""
    for n in names:
        if (Path(folder) / n).is_file():
            return Path(folder) / n
    return None


def require_complete(
    folder: str | os.PathLike,
    records: Sequence[str],
    files: Sequence[str] | None = None,
    what: str = "this step",
    nests: Mapping[str, str] | None = None,
) -> dict | None:
    """Check, before reading ``folder``, that the step which wrote it completed on the files there now.

    ``records``: the completion record names that producer may have written (the first found is used);
    ``files``: the files about to be read (default: every recorded output). Returns the producer's stamp,
    or None when the folder holds no record (not written by this pipeline: read as it is). Raises
    :class:`IncompleteInputError` naming the folder and what is wrong: the producer is still running or
    was interrupted, a file is missing, damaged or rewritten after completion, or was never written by it.
    """
    folder = Path(folder)
    path = find_record(folder, records)
    if path is None:
        return None
    nest = (nests or {}).get(path.name)
    _, stamp = read_record(path, nest)
    producer = (stamp or {}).get("stage", "the step that wrote it")
    how = f"rerun {producer} into {folder} (it redoes only what is incomplete), then rerun {what}"
    if stamp is None:
        raise IncompleteInputError(f"{folder}: {path.name} holds no stamp of the step that wrote it; {how}")
    if record_state(stamp) == RUNNING:
        raise IncompleteInputError(
            f"{folder} is not a finished output of {producer}: {path.name} says it is still being written "
            f"(since {stamp.get('utc', '?')}); an interrupted run leaves a folder half old, half new. "
            f"{what} refuses to read it: {how}"
        )
    recorded = {
        rec["name"]: rec for rec in stamp.get("outputs", []) if isinstance(rec, dict) and "name" in rec
    }
    wanted = list(files) if files is not None else list(recorded)
    problems = [
        f"{folder / n}: not written by {producer} (not in {path.name})" for n in wanted if n not in recorded
    ]
    problems += output_problems(folder, [recorded[n] for n in wanted if n in recorded])
    if problems:
        raise IncompleteInputError(
            f"{folder} is not what {producer} completed ({path.name}, {stamp.get('utc', '?')}):\n  "
            + "\n  ".join(problems)
            + f"\n{what} refuses to read it: {how}"
        )
    return stamp


def finished(folder: str | os.PathLike, record: str, nest: str | None = None) -> tuple[bool, str]:
    """``(True, "")`` when ``folder``'s record says complete and its outputs are as recorded, else
    ``(False, why)`` (no record, still running / interrupted, an output changed)."""
    try:
        stamp = require_complete(folder, [record], nests={record: nest} if nest else None)
    except StaleOutputError as exc:
        return False, str(exc)
    return (False, f"{Path(folder) / record} is missing") if stamp is None else (True, "")
