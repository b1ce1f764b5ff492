"""MIMIC-IV-ECG pre-training data: raw WFDB -> MIMIC-IV/batch_k/{train,val}_data.npy (docs/preprocessing.md).

Paper Sec. 4.1: HeartLang is pre-trained on the ~800 000 MIMIC-IV-ECG recordings. Each record
(12 leads, 500 Hz, 5000 samples) goes through ``signal.mimic_chain`` and becomes (12, 1000) float32
at 100 Hz. No labels, no per-record normalisation.

Streaming and resuming:
* records are read in ``record_list.csv`` order by a process pool and written row by row
  (``ChunkedNpyWriter``), so memory is bounded by a small write buffer, not by the data set;
* record i belongs to batch ``i // batch_size``; inside a batch, as in the original, sklearn's
  ``train_test_split(range(n), test_size=0.1, random_state=0)`` picks the val records and the row
  order of both splits (``split_batch``), so the assignment never depends on what was skipped or on a
  previous run;
* a batch is built in ``batch_k.tmp/`` (its ``DONE.json`` says "running" until the batch is complete) and
  renamed to ``batch_k/`` only after every file, including the completed ``DONE.json``, is written: a rerun
  skips complete batches and rebuilds half-written ones (``utils.artifacts.Step``, :func:`batch_step`).

Usage: ``python mimic_preprocess.py --dataset_path RAW --output_path datasets/ecg_datasets/MIMIC-IV``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from datasets.preprocess.config import MimicConfig
from datasets.preprocess.npy_writer import ChunkedNpyWriter
from datasets.preprocess.records import (
    SkipLog,
    default_num_workers,
    parallel_map,
    read_rows_csv,
    read_wfdb,
    resolve_inside,
    write_rows_csv,
    write_summary,
)
from datasets.preprocess.signal import STANDARD_LEADS, TARGET_LEN, SignalError, mimic_chain
from utils.artifacts import Step, remove_path, write_json
from utils.integrity import files_identity

EXPECTED_FS = 500.0
EXPECTED_LEN = 5000
ROW_SHAPE = (len(STANDARD_LEADS), TARGET_LEN)
# Test hook: abort the run (as a crash would) after this many records of the current run.
ABORT_ENV = "HEARTLANG_MIMIC_ABORT_AFTER_RECORDS"
DONE_FILE = "DONE.json"  # a batch's completion record (the stamp under "stamp")
BATCH_OUTPUTS = ("train_data.npy", "val_data.npy", "records.csv", "skipped.csv")
#: What defines the arrays beyond their bytes (read by the QRS tokenizer).
SPECS = {f"{s}_data.npy": {"dtype": "float32", "shape": "(N, 12, 1000)", "unit": "mV", "fs": 100}
         for s in ("train", "val")}  # fmt: skip


class SimulatedCrash(RuntimeError):
    """Raised by the ABORT_ENV test hook."""


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("MIMIC-IV-ECG preprocessing", add_help=True)
    p.add_argument(
        "--dataset_path", required=True, type=Path, help="MIMIC-IV-ECG root holding record_list.csv"
    )
    p.add_argument("--output_path", required=True, type=Path, help="e.g. datasets/ecg_datasets/MIMIC-IV")
    p.add_argument("--record_list", default=None, type=Path, help="default: <dataset_path>/record_list.csv")
    p.add_argument(
        "--batch_size",
        default=100100,
        type=int,
        help="records per batch_k folder (default: %(default)s, as the original)",
    )
    p.add_argument(
        "--max_records", default=None, type=int, help="only the first N records of the list (default: all)"
    )
    p.add_argument(
        "--num_workers",
        default=default_num_workers(),
        type=int,
        help="processes reading records (default: all cores)",
    )
    p.add_argument(
        "--val_fraction",
        default=0.1,
        type=float,
        help="train_test_split's test_size in each batch (default: %(default)s)",
    )
    p.add_argument(
        "--seed",
        default=0,
        type=int,
        help="train_test_split's random_state in each batch (default: %(default)s, as the original)",
    )
    return p


def process_record(path: str) -> tuple[np.ndarray | None, str, str]:
    """One raw record -> ``(array (12, 1000) float32, "", "")`` or ``(None, reason, detail)``."""
    try:
        sig, names, fs, _ = read_wfdb(path)
        if fs != EXPECTED_FS:
            raise SignalError("wrong_fs", f"{path}: fs {fs:g} Hz, expected {EXPECTED_FS:g}")
        if sig.shape[1] != EXPECTED_LEN or sig.shape[0] < len(STANDARD_LEADS):
            raise SignalError(
                "wrong_shape", f"{path}: {sig.shape[0]} leads x {sig.shape[1]} samples, expected 12 x 5000"
            )
        return mimic_chain(sig, names, str(path)), "", ""
    except SignalError as exc:
        return None, exc.reason, exc.detail or str(path)


def split_batch(n: int, seed: int = 0, val_fraction: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """``(train rows, val rows)`` of a batch of ``n`` records, as positions in the batch, in the order the
    rows are written; depends only on its arguments.

    # Official behaviour: the original splits every batch folder with sklearn's
    # train_test_split(test_size=0.1, random_state=0): the same random_state in every batch, ceil(0.1 n)
    # val records, and both splits in the shuffled order train_test_split returns (not in list order).
    A batch of a single record cannot be split (train_test_split refuses it) and goes to train, as do all
    records with ``val_fraction == 0``.
    """
    if n < 2 or val_fraction == 0:
        return np.arange(n, dtype=np.int64), np.zeros(0, dtype=np.int64)
    from sklearn.model_selection import train_test_split

    train, val = train_test_split(np.arange(n, dtype=np.int64), test_size=val_fraction, random_state=seed)
    return np.asarray(train, dtype=np.int64), np.asarray(val, dtype=np.int64)


def check_args(args: MimicConfig) -> None:
    """Refuse impossible settings before any record is read (docs/robustness.md)."""
    if not 0.0 <= args.val_fraction < 1.0:
        raise SystemExit(f"--val_fraction must be in [0, 1), got {args.val_fraction}")
    if args.max_records is not None and args.max_records < 0:
        raise SystemExit(f"--max_records must be >= 0 (or omitted for all records), got {args.max_records}")
    if args.batch_size <= 0:
        raise SystemExit(f"--batch_size must be positive, got {args.batch_size}")
    if args.num_workers < 1:
        raise SystemExit(f"--num_workers must be >= 1, got {args.num_workers}")


def load_record_paths(args: MimicConfig) -> list[str]:
    """Record paths (no extension) from record_list.csv, each checked to stay inside --dataset_path."""
    record_list = args.record_list or args.dataset_path / "record_list.csv"
    if not record_list.is_file():
        raise SystemExit(f"record list {record_list} not found (expected MIMIC-IV-ECG's record_list.csv)")
    try:
        df = pd.read_csv(record_list, dtype=str, nrows=args.max_records, keep_default_na=False)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise SystemExit(f"{record_list}: not a CSV with a header row and a 'path' column ({exc})") from None
    if "path" not in df.columns:
        raise SystemExit(
            f"{record_list}: no 'path' column in the header {list(df.columns)[:8]} "
            "(MIMIC-IV-ECG's record_list.csv starts with subject_id,study_id,file_name,ecg_time,path)"
        )
    if len(df) == 0 and args.max_records != 0:
        raise SystemExit(f"{record_list}: header only, no record rows")
    paths = df["path"].str.strip()
    empty = np.flatnonzero(paths.eq("").to_numpy())
    if empty.size:
        raise SystemExit(
            f"{record_list}: empty 'path' cells at rows {(empty + 2)[:10].tolist()} (1 = header)"
        )
    bad = []
    for i, p in enumerate(paths.tolist()):
        try:
            resolve_inside(args.dataset_path, p, f"{record_list}, row {i + 2}")
        except ValueError as exc:
            bad.append(str(exc))
    if bad:
        raise SystemExit(f"{len(bad)} record path(s) refused:\n  " + "\n  ".join(bad[:10]))
    return [str(args.dataset_path / p) for p in paths.tolist()]


RECORD_SUFFIXES = (".hea", ".dat", ".mat")


def raw_files(paths: list[str]) -> list[str]:
    """The WFDB files of records ``paths`` (header and signal files that exist), the batch's inputs."""
    return [p + s for p in paths for s in RECORD_SUFFIXES if os.path.exists(p + s)]


def batch_step(k: int, paths: list[str], args: MimicConfig, config: dict) -> Step:
    """The declaration of ``batch_k``: the run settings, this batch's raw files (size/mtime, taken now: an
    edit after this call is seen by the next run), its outputs; its record is ``DONE.json``'s stamp."""
    settings = {
        **config,
        "batch": k,
        "batch_paths_sha256": hashlib.sha256("\n".join(paths).encode()).hexdigest(),
    }
    inputs = {"raw_records": files_identity(raw_files(paths), args.dataset_path)}
    folder = args.output_path / f"batch_{k}"
    return Step("mimic_preprocess", folder, DONE_FILE, settings, inputs, BATCH_OUTPUTS, SPECS, nest="stamp")


def batch_problems(k: int, paths: list[str], args: MimicConfig, config: dict) -> list[str]:
    """Why the complete-looking ``batch_k`` cannot be kept: damaged outputs (named), other settings or
    changed raw files; [] when it is intact and made from the same inputs with the same settings."""
    decision = batch_step(k, paths, args, config).decide()
    return [] if decision.reuse else list(decision.reasons) or ["not built yet"]


def run_config(args: MimicConfig, paths: list[str]) -> dict:
    """What defines the output; a rerun into the same folder must match it."""
    digest = hashlib.sha256("\n".join(paths).encode()).hexdigest()
    return {
        "batch_size": args.batch_size,
        "val_fraction": args.val_fraction,
        "seed": args.seed,
        "split": "sklearn train_test_split(test_size=val_fraction, random_state=seed) per batch",
        "n_records": len(paths),
        "record_paths_sha256": digest,
        "chain": "fill_nonfinite(+-6) > resample_fft(1000) > reorder_leads > butter(5, 0.67-40 Hz) filtfilt",
    }


def check_or_write_config(out: Path, config: dict) -> None:
    path = out / "preprocess_config.json"
    if path.is_file():
        try:
            old = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise SystemExit(
                f"{path}: unreadable ({exc}); it records the settings of the batches beside it: restore it, or use "
                "a new --output_path or delete the folder to start over"
            ) from None
        if not isinstance(old, dict):
            raise SystemExit(f"{path}: not a settings record (a JSON object); use a new --output_path")
        if old != config:
            diff = {k: (old.get(k), v) for k, v in config.items() if old.get(k) != v}
            raise SystemExit(
                f"{out} holds batches made with other settings {diff} (old, new); "
                "use a new --output_path or delete the folder to start over"
            )
        return
    write_json(path, config, indent=2)


def build_batch(
    k: int,
    paths: list[str],
    args: MimicConfig,
    pbar,
    abort_after: int | None,
    done_so_far: list[int],
    config: dict,
) -> None:
    """Write ``batch_k`` for ``paths`` (this batch's records) atomically."""
    step = batch_step(k, paths, args, config)  # before reading: a later edit of a raw file is seen
    final, tmp = step.folder, args.output_path / f"batch_{k}.tmp"
    remove_path(tmp)  # left by a crash: never trusted
    step = step.at(tmp)
    step.begin()  # DONE.json says "running" until complete()
    train_rows, val_rows = split_batch(len(paths), args.seed, args.val_fraction)
    writers = {
        "train": ChunkedNpyWriter(tmp / "train_data.npy", len(train_rows), ROW_SHAPE),
        "val": ChunkedNpyWriter(tmp / "val_data.npy", len(val_rows), ROW_SHAPE),
    }
    # Records are read in the order their rows are written (train rows, then val rows), so the
    # stream stays sequential and memory stays bounded.
    order = [(paths[i], "train") for i in train_rows] + [(paths[i], "val") for i in val_rows]
    ordered_paths = [path for path, _ in order]
    skipped, manifest = SkipLog(), []
    for i, (arr, reason, detail) in enumerate(parallel_map(process_record, ordered_paths, args.num_workers)):
        path, split = order[i]
        if arr is None:
            skipped.add(path, reason, detail, batch=str(k))
        else:
            manifest.append({"split": split, "index": len(writers[split]), "record": path})
            writers[split].append(arr)
        pbar.update(1)
        done_so_far[0] += 1
        if abort_after is not None and done_so_far[0] >= abort_after:
            raise SimulatedCrash(f"{ABORT_ENV}={abort_after} reached in batch {k}")
    counts = {split: w.close() for split, w in writers.items()}
    write_rows_csv(tmp / "records.csv", manifest, ["split", "index", "record"])
    skipped.write(tmp / "skipped.csv")
    done = {
        "batch": k,
        "records_in": len(paths),
        **{f"{s}_out": n for s, n in counts.items()},
        "skipped": skipped.counts(),
    }
    step.complete(extra=done)  # last: the record of every output file
    remove_path(final)  # an outdated or half-written batch_k (a symlink there is removed, not followed)
    os.rename(tmp, final)


def run(args: MimicConfig) -> dict:
    t0 = time.time()
    check_args(args)
    paths = load_record_paths(args)
    config = run_config(args, paths)
    check_or_write_config(args.output_path, config)
    n_batches = (len(paths) + args.batch_size - 1) // args.batch_size
    abort_after = int(os.environ[ABORT_ENV]) if os.environ.get(ABORT_ENV) else None
    resumed, redone = [], {}
    for k in range(n_batches):
        if not (args.output_path / f"batch_{k}" / DONE_FILE).is_file():
            continue
        chunk = paths[k * args.batch_size : (k + 1) * args.batch_size]
        problems = batch_problems(k, chunk, args, config)
        if problems:
            redone[k] = problems
            print(f"batch_{k}: redone: " + "; ".join(problems), file=sys.stderr)
        else:
            resumed.append(k)
    print(
        f"MIMIC-IV-ECG: {len(paths)} records -> {n_batches} batch(es) of <= {args.batch_size}; "
        f"{len(resumed)} already complete; {args.num_workers} worker(s)"
    )
    done_so_far = [0]
    with tqdm(total=len(paths), desc="MIMIC-IV", unit="rec", dynamic_ncols=True) as pbar:
        for k in range(n_batches):
            chunk = paths[k * args.batch_size : (k + 1) * args.batch_size]
            if k in resumed:
                pbar.update(len(chunk))
                continue
            build_batch(k, chunk, args, pbar, abort_after, done_so_far, config)
    return summarize(args.output_path, n_batches, len(paths), resumed, time.time() - t0, redone)


def summarize(
    out: Path, n_batches: int, n_in: int, resumed: list[int], seconds: float, redone: dict | None = None
) -> dict:
    skipped, per_batch = SkipLog(), []
    for k in range(n_batches):
        done = json.loads((out / f"batch_{k}" / DONE_FILE).read_text())
        per_batch.append({key: v for key, v in done.items() if key != "stamp"})
        skipped.extend(read_rows_csv(out / f"batch_{k}" / "skipped.csv"))
    skipped.write(out / "skipped_records.csv")
    summary = {
        "source": "MIMIC-IV-ECG",
        "records_in": n_in,
        "records_out": {s: sum(b[f"{s}_out"] for b in per_batch) for s in ("train", "val")},
        "skipped": len(skipped.rows),
        "skipped_by_reason": skipped.counts(),
        "skipped_report": str(out / "skipped_records.csv"),
        "batches": per_batch,
        "batches_resumed": resumed,
        "batches_redone": {str(k): v for k, v in (redone or {}).items()},
        "seconds": round(seconds, 2),
    }
    write_summary(out / "summary.json", summary)
    return summary


def main(argv: list[str] | None = None) -> dict:
    return run(MimicConfig.from_args(get_args_parser().parse_args(argv)))


if __name__ == "__main__":
    main()
