"""CSN / Chapman-Shaoxing-Ningbo downstream data (docs/preprocessing.md; paper Sec. 4.1, Table 1).

Input: the WFDB records (``.hea`` + ``.mat``, 500 Hz, 10 s) of PhysioNet ``ecg-arrhythmia`` or its
CinC 2021 re-publication, found recursively under ``--dataset_path``. Labels are the SNOMED-CT
codes of the ``#Dx:`` / ``# Dx:`` header line. Class columns are SNOMED codes:
* ``--classes_file``: a list of codes (one per line, or the first column of a CSV with a header;
  e.g. the 38 of the published split), in that order;
* otherwise every code present in at least ``--min_class_count`` records, sorted as strings.
Codes outside the class list are ignored; a record left with no label is skipped (``no_label``).
``class_names.json`` gives a readable name for the common codes (labels.SNOMED_NAMES).

Signal: record-wise min-max to [-3, 3] -> FFT resampling to 1000 samples (100 Hz) -> Butterworth
band-pass 0.67-40 Hz (order 5, filtfilt), the same filter as MIMIC-IV-ECG.

    python -m datasets.preprocess.csn --dataset_path RAW --output_path datasets/ecg_datasets/CSN
"""

from __future__ import annotations

import argparse
import csv
from collections import Counter
from pathlib import Path

import numpy as np

from datasets.preprocess.config import DownstreamConfig
from datasets.preprocess.downstream import RecordRef, add_common_args, build
from datasets.preprocess.labels import SNOMED_NAMES
from datasets.preprocess.records import read_header_dx, split_dx_codes, validate_dx
from datasets.preprocess.signal import TARGET_LEN, SignalError, bandpass, minmax_scale, resample_fft

EXPECTED_LEN = 5000


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("CSN (Chapman-Shaoxing-Ningbo) preprocessing")
    add_common_args(p, "datasets/ecg_datasets/CSN", paper_prefix="chapman")
    p.add_argument(
        "--classes_file",
        type=Path,
        default=None,
        help="SNOMED codes to use as classes, in order (default: every code in the data, see --min_class_count)",
    )
    p.add_argument(
        "--min_class_count",
        type=int,
        default=1,
        help="without --classes_file: keep codes with at least this many records (default: %(default)s)",
    )
    return p


def csn_chain(sig: np.ndarray, fs: float = 500.0) -> np.ndarray:
    """(12, 10 s) at ``fs`` (5000 samples at 500 Hz in CSN) -> (12, 1000): min-max [-3, 3], resample to
    100 Hz, band-pass 0.67-40 Hz."""
    expected = int(round(EXPECTED_LEN * fs / 500.0))
    if sig.shape[1] != expected:
        raise SignalError("wrong_shape", f"{sig.shape[1]} samples, expected {expected} (10 s at {fs:g} Hz)")
    x = minmax_scale(sig, -3.0, 3.0)
    x = resample_fft(x, TARGET_LEN)
    return bandpass(x)


def find_records(root: Path) -> list[RecordRef]:
    """Every WFDB header under ``root``, sorted by record name (then path)."""
    heas = sorted(root.rglob("*.hea"), key=lambda p: (p.stem, str(p)))
    return [RecordRef(p.stem, str(p.with_suffix("")), "wfdb") for p in heas]


def read_classes_file(path: Path) -> list[str]:
    """One SNOMED code per line, or a CSV whose first column (after a header) holds the codes."""
    lines = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
    if lines and "," in lines[0]:
        rows = list(csv.reader(lines))
        first = rows[0][0].strip()
        body = rows[1:] if not first.isdigit() else rows
        return [r[0].strip() for r in body if r and r[0].strip()]
    return lines


def read_codes(refs: list[RecordRef]) -> tuple[dict[str, list[str]], list[str]]:
    """{record name: Dx codes} from the headers; names of records whose header cannot be read."""
    codes, bad = {}, []
    for ref in refs:
        dx = read_header_dx(ref.path)
        if dx is None:  # reported again (as unreadable) when the signal is read
            bad.append(ref.name)
        codes[ref.name] = dx or []
    return codes, bad


def run(args: DownstreamConfig) -> dict:
    refs = find_records(args.dataset_path)
    dup = [n for n, c in Counter(r.name for r in refs).items() if c > 1]
    if dup:
        raise SystemExit(f"record names found twice under {args.dataset_path}: {dup[:10]}")
    codes, bad_headers = read_codes(refs)
    codes, invalid = validate_dx(codes, {r.name: r.path for r in refs})
    freq = Counter(c for cs in codes.values() for c in set(cs))
    if args.classes_file:
        classes = read_classes_file(args.classes_file)
        _, not_snomed = split_dx_codes(classes)
        if not_snomed or len(set(classes)) != len(classes) or not classes:
            raise SystemExit(
                f"{args.classes_file}: classes must be distinct SNOMED-CT codes (numbers); "
                f"got {not_snomed[:5] or 'duplicates or no code'}"
            )
    else:
        classes = sorted(c for c, n in freq.items() if n >= args.min_class_count)
    keep = set(classes)
    labels = {name: sorted(set(cs) & keep, key=classes.index) for name, cs in codes.items()}
    info = {
        "code_counts": dict(sorted(freq.items())),
        "codes_not_in_classes": sorted(set(freq) - keep),
        "unreadable_headers": bad_headers,
        "invalid_dx_codes": invalid,
    }
    return build(args, "CSN", refs, labels, classes, csn_chain, info, class_names=SNOMED_NAMES)


def main(argv: list[str] | None = None) -> dict:
    return run(DownstreamConfig.from_args(get_args_parser().parse_args(argv)))


if __name__ == "__main__":
    main()
