"""Tokenize a whole array of records in parallel (HeartLang Sec. 3.1, at corpus scale).

``tokenize_array`` turns ``(N, 12, 1000)`` or ``(N, 1000, 12)`` records into the files the
training code reads::

    {split}_data.npy           (N, 256, 96) float32
    {split}_data_in_chans.npy  (N, 256)     int32   (the original's dtype)
    {split}_data_in_times.npy  (N, 256)     int32
    {split}_tokenizer_summary.json           statistics; written last, it marks the split as complete

Records are processed in chunks by a process pool. The main process allocates the output files
(``np.lib.format.open_memmap``); each task reads its rows from the memory-mapped input and writes
its rows straight into the memory-mapped outputs, so the main process moves no signal data and at
most ``2 * num_workers`` chunks are in flight: memory stays flat whatever N is (MIMIC-IV:
~800 000 records). Every record lands at its own index, so the output does not depend on the number of
workers. A split is one ``utils.artifacts.Step`` (:func:`split_step`): its summary says "running" from the
start, the outputs are written under temporary names and renamed only when complete, and the summary with
its stamp is written last.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from datasets.qrs.detect import DEFAULT_DETECTOR, FAST_ENGINE, prepare_detector
from datasets.qrs.summary import MAX_LISTED, REASONS, STATS_DTYPE, format_summary, report_nonfinite, summarize
from datasets.qrs.tokenizer import tokenize_records
from utils.arrays import check_free_space, create_npy, open_npy
from utils.artifacts import Step, temp_sibling
from utils.integrity import check_finite, file_identity

OUTPUT_SUFFIXES = ("_data.npy", "_data_in_chans.npy", "_data_in_times.npy")
SUMMARY_SUFFIX = "_tokenizer_summary.json"
NONFINITE_SUFFIX = "_nonfinite_records.csv"  # every record with NaN/inf input or words, named
STAGE = "qrs_tokenizer"
MAX_SECONDS = 15  # longest record whose second ids (R // fs + 1) fit the models' 16-entry time embedding


def infer_layout(shape: tuple[int, ...], n_leads: int = 12, layout: str = "auto") -> str:
    """Return ``"nct"`` for (N, leads, T) or ``"ntc"`` for (N, T, leads); raise if unclear.

    The lead axis is the one of length ``n_leads``; ``layout`` forces the answer when both or
    neither axis match (e.g. a 12-sample toy signal).
    """
    if len(shape) != 3:
        raise ValueError(f"expected a 3-d array (N, leads, T) or (N, T, leads), got shape {tuple(shape)}")
    if layout in ("nct", "ntc"):
        return layout
    if layout != "auto":
        raise ValueError(f"layout must be 'auto', 'nct' or 'ntc', got {layout!r}")
    a, b = shape[1], shape[2]
    if a == n_leads and b != n_leads:
        return "nct"
    if b == n_leads and a != n_leads:
        return "ntc"
    if a == b == n_leads:
        raise ValueError(f"shape {tuple(shape)} is ambiguous: both axes have {n_leads} entries; pass layout")
    raise ValueError(
        f"shape {tuple(shape)} has no axis of {n_leads} leads; expected (N, {n_leads}, T) or "
        f"(N, T, {n_leads}) (set n_leads / --n_leads for other lead counts)"
    )


def tokenizer_settings(
    used_channels, shape, layout: str, fs, max_len, token_len, nan_policy, detector
) -> dict:
    """The settings that define a tokenised split (the stamp's ``settings``; a rerun compares them)."""
    return {
        "used_channels": [int(c) for c in used_channels],
        "input_shape": [int(v) for v in shape],
        "input_layout": layout,
        "fs": int(fs),
        "max_len": int(max_len),
        "token_len": int(token_len),
        "nan_policy": nan_policy,
        "detector": detector,
    }


def _tokenize_chunk(source, start: int, stop: int, layout: str, out_paths: list, params: dict):
    """Worker: tokenize records [start, stop) and write them straight into the output .npy files.

    source: the input .npy path (memory-mapped here, so the main process moves no signal data)
    or the block ``array[start:stop]`` itself. Returns ``(start, stats (n,), errors)``.
    """
    block = np.load(source, mmap_mode="r")[start:stop] if isinstance(source, str) else source
    chunk = np.asarray(block) if layout == "nct" else np.asarray(block).transpose(0, 2, 1)  # (n, leads, T)
    n = chunk.shape[0]
    data = np.zeros((n, params["max_len"], params["token_len"]), dtype=np.float32)
    lead_ids = np.zeros((n, params["max_len"]), dtype=np.int32)
    time_ids = np.zeros((n, params["max_len"]), dtype=np.int32)
    stats = np.zeros(n, dtype=STATS_DTYPE)
    errors = []
    # One batched R-peak detection for the chunk, then the words record by record.
    for i, (data[i], lead_ids[i], time_ids[i], info) in enumerate(tokenize_records(chunk, **params)):
        stats[i] = (
            info.num_beats,
            info.num_words,
            REASONS.index(info.reason) if info.reason else -1,
            info.truncated,
            info.nonfinite_input,
            min(info.nonfinite_words, np.iinfo(np.int16).max),
            info.flat_leads,
            info.detector_fallback,
        )
        if info.error and len(errors) < MAX_LISTED:
            errors.append((start + i, info.error))
    if params["nan_policy"] != "official":  # the policy promises finite words: hold it to that
        check_finite(
            data, f"{source if isinstance(source, str) else '<array>'} records {start}-{stop - 1} words"
        )
    for path, values in zip(out_paths, (data, lead_ids, time_ids)):
        out = np.load(path, mmap_mode="r+")  # disjoint row ranges per task: no locking needed
        out[start:stop] = values
        out.flush()
        del out
    return start, stats, errors


def output_paths(out_dir: str | os.PathLike, split: str) -> list[Path]:
    """The three array files of one split, in (data, in_chans, in_times) order."""
    return [Path(out_dir) / f"{split}{suffix}" for suffix in OUTPUT_SUFFIXES]


def split_step(
    out_dir: str | os.PathLike, split: str, settings: dict, input_path=None, input_spec=None
) -> Step:
    """The declaration of one tokenised split: settings, the input file's identity (size, mtime), the files
    it owns; its record is ``{split}_tokenizer_summary.json`` (the stamp under ``"stamp"``, written last).
    ``input_spec``: dtype (and unit, when the preprocessing declared one) of the input array."""
    path = None if input_path is None else Path(input_path)
    inputs = {"data": file_identity(path, path.parent) if path is not None else "<in-memory array>"}
    specs = {
        f"{split}_data.npy": {"dtype": "float32", "shape": "(N, max_len, token_len)"},
        f"{split}_data_in_chans.npy": {"dtype": "int32", "meaning": "lead id + 1, 0 = padding"},
        f"{split}_data_in_times.npy": {"dtype": "int32", "meaning": "second + 1, 0 = padding"},
        **({"input": dict(input_spec)} if input_spec else {}),
    }
    outputs = tuple(p.name for p in output_paths(out_dir, split)) + (f"{split}{NONFINITE_SUFFIX}",)
    return Step(
        STAGE, Path(out_dir), f"{split}{SUMMARY_SUFFIX}", settings, inputs, outputs, specs, nest="stamp"
    )


def check_input_dtype(dtype, source: str) -> None:
    """The tokenizer cuts words from floating-point signals in physical units (mV, or the PTB-XL scaler's
    standardised mV), what the preprocessing writes. Integer arrays are refused: ADC counts tokenised as
    if they were millivolts would give words hundreds of times too large, without a word of warning."""
    dtype = np.dtype(dtype)
    if not np.issubdtype(dtype, np.floating):
        raise ValueError(
            f"{source}: {dtype} samples; the tokenizer takes floating-point signals in mV (as the preprocessing "
            "writes them). Integer arrays are usually raw ADC counts: convert them to physical units first "
            "(e.g. (counts - baseline) / adc_gain, as wfdb's p_signal does) and save them as float32."
        )


@dataclass(frozen=True)
class TokenizePlan:
    """What one ``tokenize_array`` call does: the input (``path`` or in-memory ``array``), its layout, the
    leads, the worker settings and the parameters every chunk is tokenised with."""

    path: str | None
    array: Any
    source: str
    layout: str
    n_records: int
    leads: np.ndarray
    params: dict
    num_workers: int
    chunk_size: int

    def task(self, start: int, out_names: list[str]) -> tuple:
        stop = min(start + self.chunk_size, self.n_records)
        src = self.path if self.path is not None else self.array[start:stop]
        return (src, start, stop, self.layout, out_names, self.params)


def plan_tokenize(array, *, used_channels, num_workers, chunk_size, fs, max_len, token_len, nan_policy,
                  detector, n_leads, layout) -> TokenizePlan:  # fmt: skip
    """Check the input (shape, dtype, leads) and fix the work: layout, leads, workers, chunk size."""
    path = str(array) if isinstance(array, (str, os.PathLike)) else None
    source = path or "<array>"
    if path is not None:
        array = open_npy(path)  # never read a whole split into RAM; a truncated file is named
    check_input_dtype(array.dtype, source)
    lay = infer_layout(array.shape, n_leads, layout)
    N = array.shape[0]
    n_in, T = (array.shape[1], array.shape[2]) if lay == "nct" else (array.shape[2], array.shape[1])
    leads = np.arange(n_in) if used_channels is None else np.asarray(list(used_channels), dtype=np.int64)
    if leads.size == 0 or leads.min() < 0 or leads.max() >= n_in:
        raise ValueError(f"{source}: used_channels {leads.tolist()} out of range for {n_in} leads")
    if T > MAX_SECONDS * fs:
        # in_times = R // fs + 1 must stay below the models' 16-entry time embedding (1..15; 0 = padding)
        raise ValueError(
            f"{source}: records of {T} samples = {T / fs:g} s at {fs} Hz give second ids up to {(T - 1) // fs + 1}; "
            f"the models embed second ids 1-{MAX_SECONDS} (records of at most {MAX_SECONDS} s). The preprocessing "
            "writes 10 s at 100 Hz (1000 samples): cut the records to 10 s (or pass the right --fs)"
        )
    chunk_size = max(1, int(chunk_size))
    # No more processes than chunks: a small split is faster in-process than paying pool start-up.
    num_workers = max(1, min(int(num_workers or os.cpu_count() or 1), -(-N // chunk_size)))
    params = dict(used_channels=leads, fs=fs, max_len=max_len, token_len=token_len, nan_policy=nan_policy,
                  detector=detector)  # fmt: skip
    return TokenizePlan(path, array, source, lay, N, leads, params, num_workers, chunk_size)


def _allocate(out_dir: Path, split: str, plan: TokenizePlan) -> list[Path]:
    """The three outputs as (sparse) memory-mappable temp files beside their final names; workers fill them."""
    N, max_len, token_len = plan.n_records, plan.params["max_len"], plan.params["token_len"]
    shapes = [(N, max_len, token_len), (N, max_len), (N, max_len)]
    temps = [temp_sibling(p) for p in output_paths(out_dir, split)]
    dtypes = (np.float32, np.int32, np.int32)
    # room for all three first: a write into a memory map on a full disk is a SIGBUS without a message
    check_free_space(
        temps[0], sum(int(np.prod(shp)) * np.dtype(d).itemsize for d, shp in zip(dtypes, shapes))
    )
    for p, d, shp in zip(temps, dtypes, shapes):
        out = create_npy(p, d, shp)
        del out
    return temps


def _run_chunks(plan: TokenizePlan, temps: list[Path], split: str, progress: bool) -> tuple:
    """Tokenise every chunk (in-process or over a pool) into ``temps``: ``(stats (N,), errors, seconds)``."""
    stats = np.zeros(plan.n_records, dtype=STATS_DTYPE)
    errors: list = []
    names = [str(p) for p in temps]
    starts = list(range(0, plan.n_records, plan.chunk_size))

    def store(result) -> None:
        s, st, err = result
        stats[s : s + len(st)] = st
        errors[:] = sorted(errors + err)[:MAX_LISTED]  # smallest indices: independent of completion order
        bar.update(len(st))

    prepare_detector(plan.params["detector"], plan.params["fs"])  # compile once: forked workers inherit it
    t0 = time.perf_counter()
    with tqdm(total=plan.n_records, unit="rec", desc=f"tokenize {split}", disable=not progress,
              smoothing=0.1) as bar:  # fmt: skip
        if plan.num_workers == 1:
            for s in starts:
                store(_tokenize_chunk(*plan.task(s, names)))
        else:
            with ProcessPoolExecutor(max_workers=plan.num_workers) as pool:
                pending = set()
                for s in starts:  # sliding window: at most 2 chunks per worker in flight
                    pending.add(pool.submit(_tokenize_chunk, *plan.task(s, names)))
                    if len(pending) >= 2 * plan.num_workers:
                        done, pending = wait(pending, return_when=FIRST_COMPLETED)
                        for fut in done:
                            store(fut.result())
                for fut in pending:
                    store(fut.result())
    return stats, errors, time.perf_counter() - t0


def tokenize_array(
    array,
    out_dir: str | os.PathLike,
    split: str = "train",
    used_channels=None,
    num_workers: int | None = None,
    chunk_size: int = 128,
    fs: int = 100,
    max_len: int = 256,
    token_len: int = 96,
    nan_policy: str = "official",
    detector: str = DEFAULT_DETECTOR,
    n_leads: int = 12,
    layout: str = "auto",
    progress: bool = True,
    verbose: bool = True,
    record_names=None,
    input_spec: dict | None = None,
) -> dict:
    """Tokenize ``array`` ((N, leads, T) or (N, T, leads), ndarray or path of a .npy) into ``out_dir``.

    Returns the summary dict (also written to ``{split}_tokenizer_summary.json`` and printed when
    ``verbose``). ``num_workers`` defaults to all cores; 1 runs in-process. ``record_names``: optional
    callable ``indices -> names`` used to name records with NaN/inf (default ``row i``). The summary
    holds a ``stamp`` (settings, the input file's size/mtime, the outputs' sizes/shapes) that a rerun
    checks before it keeps the split. Integer input is refused (:func:`check_input_dtype`).
    """
    plan = plan_tokenize(array, used_channels=used_channels, num_workers=num_workers, chunk_size=chunk_size,
                         fs=fs, max_len=max_len, token_len=token_len, nan_policy=nan_policy, detector=detector,
                         n_leads=n_leads, layout=layout)  # fmt: skip
    out_dir = Path(out_dir)
    settings = tokenizer_settings(plan.leads, plan.array.shape, plan.layout, fs, max_len, token_len, nan_policy,
                                  detector)  # fmt: skip
    spec = {"dtype": str(plan.array.dtype), **(input_spec or {})}
    step = split_step(out_dir, split, settings, plan.path, spec)
    step.begin()  # the summary says "running" until complete(); the earlier run's files are removed
    temps = _allocate(out_dir, split, plan)
    try:
        stats, errors, seconds = _run_chunks(plan, temps, split, progress)
    except BaseException:
        for tmp in temps:
            tmp.unlink(missing_ok=True)
        raise
    finals = output_paths(out_dir, split)
    for tmp, final in zip(temps, finals):  # every task flushed its rows: publish under the final names
        os.replace(tmp, final)
    summary = summarize(stats, errors, max_len)
    csv_path = out_dir / f"{split}{NONFINITE_SUFFIX}"
    report_nonfinite(summary, stats, csv_path, split, plan.source, plan.params["nan_policy"], record_names)
    summary.update(
        split=split,
        source=plan.source,
        input_shape=list(plan.array.shape),
        input_layout=plan.layout,
        # The settings the workers ran with (a rerun compares them to decide whether the split is done).
        **{**plan.params, "used_channels": plan.leads.tolist()},
        detector_engine=FAST_ENGINE if detector == "xqrs_fast" else "wfdb",
        num_workers=plan.num_workers,
        chunk_size=plan.chunk_size,
        seconds=round(seconds, 3),
        records_per_s=round(plan.n_records / seconds, 1) if seconds > 0 else None,
    )
    written = [p.name for p in finals] + [n for n in step.outputs[3:] if (out_dir / n).is_file()]
    summary["stamp"] = step.complete(written, extra=summary)  # last: marks the split done
    if verbose:
        print(format_summary(summary))
    return summary
