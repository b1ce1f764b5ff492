"""MIMIC-IV-ECG-like raw records at scale (tens of thousands or more), for scale and crash/resume rehearsals.

Same layout and file format as :func:`datasets.synthetic.cohort.generate_mimic_like` and the real
MIMIC-IV-ECG: ``<out>/files/p<first 4 digits>/p<subject>/s<study>/<study>.{hea,dat}`` (500 Hz, 5000
samples, format 16, 200 adc units / mV, leads I, II, III, aVR, aVF, aVL, V1-V6) plus ``record_list.csv``,
with subjects spread over p1000-p1999 as in the real release. What differs is speed: instead of simulating
every record (~0.1 s each), a pool of ``pool_size`` simulated records is drawn once and record ``i`` is pool
record ``i % pool_size`` with its own per-lead gain (0.8-1.25) and 10 uV of white noise, written straight
as WFDB bytes (no ``wfdb.wrsamp``): thousands of records per second. Each record's noise comes from its
own generator seeded with ``(seed, i)``, so the files are byte-identical for a seed whatever
``num_workers`` is. No labels (pre-training data).

Which preprocessing ``batch_k`` folder a record lands in is decided by ``mimic_preprocess.py
--batch_size`` (record ``i`` -> batch ``i // batch_size``); a rehearsal uses a small batch size so that
a few tens of thousands of records give several batch folders, as the real 800,035 do with 100,100.

CLI: ``python -m datasets.synthetic.scale --output_dir DIR --n_records N [--seed S] [--num_workers W]``.
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import numpy as np

from datasets.preprocess.records import parallel_map
from datasets.synthetic.cohort import MIMIC_LEADS
from datasets.synthetic.labels import sample_statements
from datasets.synthetic.signal import LEADS, simulate_ecg
from utils.integrity import atomic_file

FS, N_SAMPLES, GAIN = 500, 5000, 200.0
RECORD_LIST_COLUMNS = ("subject_id", "study_id", "file_name", "ecg_time", "path")


def signal_pool(seed: int, pool_size: int) -> np.ndarray:
    """``pool_size`` simulated 10 s records, (pool_size, 12, 5000) float32 mV in the MIMIC lead order."""
    order = [LEADS.index(name) for name in MIMIC_LEADS]
    pool = np.empty((pool_size, 12, N_SAMPLES), dtype=np.float32)
    for j in range(pool_size):
        codes, rhythm, _ = sample_statements(np.random.default_rng([seed, 2, j, 0]))
        signal, _ = simulate_ecg(codes, rhythm, np.random.default_rng([seed, 2, j, 1]), fs=FS, mains_hz=60.0)
        pool[j] = signal[order]
    return pool


def record_rows(n_records: int, seed: int) -> list[tuple[int, int, int, str, str]]:
    """``record_list.csv`` rows: (subject_id, study_id, file_name, ecg_time, path), 1-3 studies per subject."""
    rng = np.random.default_rng([seed, 3])
    n_studies = rng.choice([1, 1, 1, 2, 3], size=n_records)  # at least n_records subjects drawn
    n_studies = n_studies[: int(np.searchsorted(np.cumsum(n_studies), n_records)) + 1]
    n_studies[-1] -= int(n_studies.sum()) - n_records
    subjects = 10_000_000 + np.sort(rng.choice(10_000_000, len(n_studies), replace=False))
    studies = 40_000_000 + rng.choice(10_000_000, n_records, replace=False)
    minutes = rng.integers(0, 80 * 365 * 24 * 60, size=n_records)
    epoch = np.datetime64("2110-01-01T00:00")
    rows, k = [], 0
    for subject, count in zip(subjects.tolist(), n_studies.tolist()):
        for _ in range(count):
            sid = int(studies[k])
            when = str(epoch + np.timedelta64(int(minutes[k]), "m")).replace("T", " ") + ":00"
            rows.append((subject, sid, sid, when, f"files/p{str(subject)[:4]}/p{subject}/s{sid}/{sid}"))
            k += 1
    return rows


def wfdb_header(name: str, digital: np.ndarray, ecg_time: str) -> str:
    """Header text of a format-16 record ``name`` whose samples are ``digital`` (12, n) int16."""
    date, clock = ecg_time.split(" ")
    y, m, d = date.split("-")
    lines = [f"{name} {digital.shape[0]} {FS} {digital.shape[1]} {clock} {d}/{m}/{y}"]
    checksums = digital.astype(np.int64).sum(axis=1) % 65536
    for lead, first, check in zip(MIMIC_LEADS, digital[:, 0].tolist(), checksums.tolist()):
        lines.append(f"{name}.dat 16 {GAIN}(0)/mV 16 0 {first} {check} 0 {lead}")
    return "\n".join(lines) + "\n"


def _write_records(task: tuple) -> int:
    """Write the records of one chunk; returns the bytes written."""
    out_dir, seed, start, rows, pool = task
    written = 0
    for i, row in enumerate(rows, start):
        rng = np.random.default_rng([seed, 4, i])
        gains = rng.uniform(0.8, 1.25, size=(12, 1)).astype(np.float32)
        mv = pool[i % len(pool)] * gains + rng.standard_normal((12, N_SAMPLES), dtype=np.float32) * 0.01
        digital = np.clip(np.rint(mv * GAIN), -32767, 32767).astype(np.int16)
        path = Path(out_dir) / row[4]
        path.parent.mkdir(parents=True, exist_ok=True)
        data = digital.T.astype("<i2").tobytes()
        path.with_suffix(".dat").write_bytes(data)
        header = wfdb_header(path.name, digital, row[3])
        path.with_suffix(".hea").write_text(header)
        written += len(data) + len(header)
    return written


def generate_mimic_scale(
    out_dir, n_records: int, seed: int = 0, num_workers: int = 1, pool_size: int = 32, chunk: int = 250
) -> int:
    """Write ``n_records`` MIMIC-IV-ECG-like raw records and ``record_list.csv`` under ``out_dir``.

    Returns the bytes written. Memory stays at the pool (1.5 MB per pool record) plus one record per
    worker, whatever ``n_records`` is."""
    if n_records <= 0:
        raise ValueError(f"n_records must be positive, got {n_records}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = record_rows(n_records, seed)
    pool = signal_pool(seed, pool_size)
    tasks = [(str(out_dir), seed, s, rows[s : s + chunk], pool) for s in range(0, n_records, chunk)]
    total = sum(parallel_map(_write_records, tasks, num_workers, chunksize=1))
    with atomic_file(out_dir / "record_list.csv") as fh:  # the index last and whole: a killed run leaves none
        writer = csv.writer(fh)
        writer.writerow(RECORD_LIST_COLUMNS)
        writer.writerows(rows)
    return total + (out_dir / "record_list.csv").stat().st_size


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser("MIMIC-IV-ECG-like raw records at scale (fast, pool-based)")
    parser.add_argument("--output_dir", required=True, help="writes DIR/files/... and DIR/record_list.csv")
    parser.add_argument("--n_records", type=int, required=True, help="number of records to write (required)")
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="random seed of the pool and the per-record noise (default: %(default)s)",
    )
    parser.add_argument(
        "--num_workers", type=int, default=2, help="processes writing records (default: %(default)s)"
    )
    parser.add_argument(
        "--pool_size", type=int, default=32, help="distinct simulated signals (default: %(default)s)"
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    args = get_args_parser().parse_args(argv)
    t0 = time.perf_counter()
    size = generate_mimic_scale(args.output_dir, args.n_records, args.seed, args.num_workers, args.pool_size)
    seconds = time.perf_counter() - t0
    print(
        f"{args.n_records} MIMIC-IV-ECG-like records, {size / 1e9:.2f} GB in {seconds:.1f} s -> {args.output_dir}"
    )


if __name__ == "__main__":
    main()
