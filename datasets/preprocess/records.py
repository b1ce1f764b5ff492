"""Reading raw ECG records and reporting what was skipped (docs/preprocessing.md).

Shared by every source: WFDB records (``.hea`` + ``.dat`` or ``.mat``), ICBEB 2018 MATLAB files,
header comment parsing (``#Dx:`` / ``# Dx:``), a skip log written as CSV, a summary written as JSON,
and a process-pool ``parallel_map`` that streams results in input order.
"""

from __future__ import annotations

import csv
import json
import multiprocessing as mp
import os
import threading
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import wfdb
from scipy.io import loadmat

from datasets.preprocess.signal import SignalError
from utils.artifacts import atomic_path, write_json


def read_wfdb(path: str | os.PathLike) -> tuple[np.ndarray, list[str], float, list[str]]:
    """Read a WFDB record (path without extension).

    Returns ``(sig (n_leads, T) float64 physical units, lead names, fs, header comments)``.
    Any read failure becomes ``SignalError("unreadable")`` naming the file and the cause.
    """
    try:
        rec = wfdb.rdrecord(str(path))
    except Exception as exc:  # wfdb raises many types (ValueError, OSError, struct errors)
        raise SignalError("unreadable", f"{path}: {type(exc).__name__}: {exc}") from exc
    if rec.p_signal is None:
        raise SignalError("unreadable", f"{path}: no physical signal")
    return np.asarray(rec.p_signal, dtype=np.float64).T, list(rec.sig_name), float(rec.fs), list(rec.comments)


def read_icbeb_mat(path: str | os.PathLike) -> np.ndarray:
    """ICBEB 2018 ``.mat`` (struct ``ECG`` with fields sex, age, data) -> data (12, T) float64 in mV.

    The leads are stored in the standard order I, II, III, aVR, aVL, aVF, V1-V6.
    """
    try:
        content = loadmat(str(path))
    except Exception as exc:
        raise SignalError(
            "unreadable", f"{path}: not a readable MATLAB file ({type(exc).__name__}: {exc})"
        ) from exc
    if "ECG" not in content:
        names = sorted(k for k in content if not k.startswith("__"))
        hea = Path(path).with_suffix(".hea")
        if "val" in names:  # a WFDB signal stored as .mat (CinC 2020, CSN): its header carries rate and leads
            raise SignalError(
                "missing_file", f"{path}: a WFDB .mat signal (variable 'val') without its header {hea}; the "
                "header gives the sampling rate, gains and lead names: put it beside the .mat",
            )  # fmt: skip
        raise SignalError(
            "unreadable", f"{path}: not an ICBEB 2018 record (no struct 'ECG'; variables {names}) and no WFDB "
            f"header {hea} beside it",
        )  # fmt: skip
    try:
        data = np.asarray(content["ECG"][0][0]["data"], dtype=np.float64)
    except Exception as exc:
        raise SignalError("unreadable", f"{path}: struct ECG has no numeric field 'data' ({exc})") from exc
    if data.ndim != 2 or data.shape[0] != 12:
        raise SignalError("wrong_shape", f"{path}: data field has shape {data.shape}, expected (12, T)")
    return data


def header_field(comments: Sequence[str], key: str) -> str | None:
    """Value of a header comment ``key: value`` (``#Dx:`` and ``# Dx:`` both work); None if absent."""
    key_l = key.lower()
    for line in comments:
        text = line.lstrip("#").strip()
        if ":" not in text:
            continue
        k, v = text.split(":", 1)
        if k.strip().lower() == key_l:
            return v.strip()
    return None


def parse_dx(comments: Sequence[str]) -> list[str]:
    """SNOMED-CT codes of the ``Dx`` header comment, e.g. ``# Dx: 284470004,427084000`` -> list of str.

    A blank or missing Dx line gives an empty list (the shared CinC 2020 copy has blank Dx lines).
    """
    value = header_field(comments, "Dx")
    if not value:
        return []
    return [c.strip() for c in value.split(",") if c.strip()]


def read_header_dx(path: str | os.PathLike) -> list[str] | None:
    """``parse_dx`` of a WFDB header (``path`` without extension); None if the header cannot be read.

    Only the labels are read here; an unreadable record is reported when its signal is read.
    """
    try:
        return parse_dx(wfdb.rdheader(str(path)).comments)
    except Exception:  # wfdb raises many types (ValueError, OSError, parse errors)
        return None


def resolve_inside(root: str | os.PathLike, rel: str, where: str) -> Path:
    """``root / rel`` for a path read from an index file (record_list.csv, filename_lr, ...).

    The path must be relative and must not climb out of ``root`` with ``..`` (checked on the text,
    so a data folder that is itself a symbolic link inside the root still works): an index file must
    not make the preprocessing read files elsewhere. Raises ``ValueError`` naming ``where`` (file and
    row) and the rule otherwise.
    """
    rel_s = str(rel).strip()
    if not rel_s or os.path.isabs(rel_s):
        raise ValueError(f"{where}: path {rel_s!r} must be relative to the dataset root {root}")
    norm = os.path.normpath(rel_s)
    if norm == ".." or norm.startswith(".." + os.sep):
        raise ValueError(
            f"{where}: path {rel_s!r} leaves the dataset root {root} (paths must stay inside it)"
        )
    return Path(root) / rel_s


def split_dx_codes(codes: Sequence[str]) -> tuple[list[str], list[str]]:
    """``(valid, invalid)``: SNOMED-CT codes are positive integers (6-18 digits, e.g. 426783006);
    anything else in a Dx line (a name, a typo, ``59118001.0``) is invalid and must not become a class."""
    valid = [c for c in codes if c.isdigit() and 6 <= len(c) <= 18 and not c.startswith("0")]
    return valid, [c for c in codes if c not in valid]


def validate_dx(codes: dict[str, list[str]], headers: dict[str, str]) -> tuple[dict, dict]:
    """``(valid, invalid)`` per record of the header Dx codes ``codes`` (record -> codes). Invalid
    codes (not SNOMED-CT numbers, see :func:`split_dx_codes`) never become labels or class columns;
    they are printed naming the header file and returned for the summary."""
    valid, invalid = {}, {}
    for name, cs in codes.items():
        valid[name], bad = split_dx_codes(cs)
        if bad:
            invalid[name] = bad
    if invalid:
        shown = "; ".join(f"{headers.get(n, n)}.hea: {b}" for n, b in list(invalid.items())[:5])
        print(
            f"WARNING: {len(invalid)} record(s) have Dx codes that are not SNOMED-CT numbers (ignored as "
            f"labels, listed under invalid_dx_codes in summary.json): {shown}"
            + (" ..." if len(invalid) > 5 else "")
        )
    return valid, invalid


class SkipLog:
    """Collects skipped records (path, reason, detail) and writes them as CSV."""

    def __init__(self) -> None:
        self.rows: list[dict[str, str]] = []

    def add(self, record: str, reason: str, detail: str = "", **extra: Any) -> None:
        self.rows.append({"record": str(record), "reason": reason, "detail": detail, **extra})

    def extend(self, rows: Iterable[dict[str, str]]) -> None:
        self.rows.extend(rows)

    def counts(self) -> dict[str, int]:
        return dict(sorted(Counter(r["reason"] for r in self.rows).items()))

    def write(self, path: Path) -> None:
        write_rows_csv(path, self.rows, ["record", "reason", "detail"])


def write_rows_csv(path: Path, rows: list[dict[str, Any]], base_fields: Sequence[str]) -> None:
    fields = list(base_fields) + sorted({k for r in rows for k in r} - set(base_fields))
    # All or nothing, never written through a symlink at ``path``.
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def read_rows_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def write_summary(path: Path, summary: dict[str, Any]) -> None:
    """Print a human-readable summary and write it as JSON (atomically) next to the outputs."""
    write_json(path, summary, indent=2, sort_keys=False)
    print(f"==== summary ({path}) ====")
    print(json.dumps(summary, indent=2))


def parallel_map(
    fn: Callable[[Any], Any], items: Sequence[Any], num_workers: int, chunksize: int = 8
) -> Iterator[Any]:
    """``map(fn, items)`` over a process pool, yielded in input order; ``num_workers <= 1`` runs inline.

    ``Pool.imap`` alone would submit every item at once and buffer all results if the consumer
    (the writer) falls behind; a semaphore bounds the items in flight to a few chunks per worker,
    so memory stays bounded whatever the number of records.
    """
    if num_workers <= 1 or len(items) <= 1:
        yield from map(fn, items)
        return
    inflight = threading.Semaphore(num_workers * chunksize * 4)
    stop = threading.Event()

    def throttled() -> Iterator[Any]:
        for item in items:
            inflight.acquire()
            if stop.is_set():  # consumer gone: let the pool's feeder thread finish
                return
            yield item

    with mp.get_context("fork").Pool(num_workers) as pool:
        try:
            for result in pool.imap(fn, throttled(), chunksize=chunksize):
                inflight.release()
                yield result
        finally:
            stop.set()
            inflight.release()  # wake the feeder if it waits, so the pool can shut down


def default_num_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))
