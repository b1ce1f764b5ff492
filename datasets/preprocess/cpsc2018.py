"""CPSC2018 (ICBEB 2018) downstream data (docs/preprocessing.md; paper Sec. 4.1, Table 1).

Reads both published forms, found recursively under ``--dataset_path``:
* ICBEB 2018: ``A0001.mat`` (struct ``ECG``, data in mV, standard lead order) + ``REFERENCE.csv``;
* PhysioNet/CinC 2020: WFDB ``A0001.hea`` + ``A0001.mat`` with SNOMED-CT codes in ``#Dx:``.
Labels come from the header Dx codes when they map to a class, otherwise from ``REFERENCE.csv``
(``--reference``, or the first REFERENCE.csv under the dataset path); a record with neither is
skipped as ``no_label``. Classes: AF, I-AVB, LBBB, Normal, PAC, PVC, RBBB, STD, STE.

Signal: first 2500 samples (5 s at 500 Hz), zero-padded to 5000, record-wise min-max to [-3, 3],
FFT-resampled to 1000 samples. No band-pass.

    python -m datasets.preprocess.cpsc2018 --dataset_path RAW --output_path datasets/ecg_datasets/CPSC2018
"""

from __future__ import annotations

import argparse
import csv
from collections import Counter
from pathlib import Path

import numpy as np

from datasets.preprocess.config import DownstreamConfig
from datasets.preprocess.downstream import RecordRef, add_common_args, build
from datasets.preprocess.labels import CPSC_CLASSES, CPSC_REFERENCE_NUMBERS, CPSC_SNOMED
from datasets.preprocess.records import read_header_dx, validate_dx
from datasets.preprocess.signal import TARGET_LEN, check_record, minmax_scale, resample_fft

KEEP_SAMPLES = 2500  # 5 s at 500 Hz
PADDED_LEN = 5000


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("CPSC2018 preprocessing")
    add_common_args(p, "datasets/ecg_datasets/CPSC2018", paper_prefix="icbeb")
    p.add_argument(
        "--reference", type=Path, default=None, help="ICBEB REFERENCE.csv (default: found under dataset_path)"
    )
    return p


def cpsc_chain(sig: np.ndarray, fs: float = 500.0) -> np.ndarray:
    """(12, T) at ``fs`` (500 Hz in CPSC2018) -> (12, 1000): first 5 s, zero-pad to 10 s, min-max [-3, 3],
    resample. ``fs`` only sets how many samples 5 s and 10 s are (2500 / 5000 at 500 Hz)."""
    keep, padded = int(round(KEEP_SAMPLES * fs / 500.0)), int(round(PADDED_LEN * fs / 500.0))
    # Official behaviour: only the first 5 s of a (6-60 s) record are kept, zero-padded to 10 s.
    x = np.zeros((sig.shape[0], padded), dtype=np.float64)
    n = min(keep, sig.shape[1])
    x[:, :n] = check_record(sig[:, :n])  # the shared rule on the part that is used (flat first 5 s: skipped)
    # Official behaviour: min-max is taken over the zero-padded record, so the padding becomes the
    # scaled value of 0 mV (not -3 and not 0), and only the first half holds the ECG.
    x = minmax_scale(x, -3.0, 3.0)
    return resample_fft(x, TARGET_LEN)


def find_records(root: Path) -> tuple[list[RecordRef], list[str]]:
    """WFDB records (a .hea) and ICBEB .mat files (a .mat without .hea), sorted by name; duplicates reported."""
    refs, dups, seen = [], [], set()
    heas = {p.with_suffix("") for p in root.rglob("*.hea")}
    candidates = [RecordRef(p.name, str(p), "wfdb") for p in sorted(heas)]
    candidates += [
        RecordRef(p.stem, str(p), "icbeb_mat")
        for p in sorted(root.rglob("*.mat"))
        if p.with_suffix("") not in heas
    ]
    for ref in sorted(candidates, key=lambda r: (r.name, r.kind)):
        if ref.name in seen:
            dups.append(ref.path)
            continue
        seen.add(ref.name)
        refs.append(ref)
    return refs, dups


def read_reference(path: Path | None) -> dict[str, list[str]]:
    """REFERENCE.csv (Recording, First_label, Second_label, Third_label; numbers 1-9) -> {record: classes}."""
    if path is None:
        return {}
    out = {}
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            nums = [row[k] for k in ("First_label", "Second_label", "Third_label") if row.get(k, "").strip()]
            try:
                out[row["Recording"].strip()] = sorted({CPSC_REFERENCE_NUMBERS[int(float(v))] for v in nums})
            except (KeyError, ValueError) as exc:
                raise ValueError(f"{path}: record {row.get('Recording')}: bad label {nums} ({exc})") from exc
    return out


def collect_labels(
    refs: list[RecordRef], reference: dict[str, list[str]]
) -> tuple[dict[str, list[str]], dict]:
    """Header Dx codes first (CinC 2020), REFERENCE.csv as fallback; returns labels and where they came from."""
    labels, origin, unmapped = {}, Counter(), Counter()
    wfdb_refs = [r for r in refs if r.kind == "wfdb"]
    header_codes, invalid = validate_dx(
        {r.name: read_header_dx(r.path) or [] for r in wfdb_refs},  # unreadable: the signal read reports it
        {r.name: r.path for r in wfdb_refs},
    )
    for ref in refs:
        from_header: list[str] = []
        if ref.kind == "wfdb":
            codes = header_codes[ref.name]
            from_header = sorted({CPSC_SNOMED[c] for c in codes if c in CPSC_SNOMED})
            unmapped.update(c for c in codes if c not in CPSC_SNOMED)
        if from_header:
            labels[ref.name] = from_header
            origin["header_dx"] += 1
        elif reference.get(ref.name):
            labels[ref.name] = reference[ref.name]
            origin["reference_csv"] += 1
    info = {"label_origin": dict(origin), "unmapped_dx_codes": dict(unmapped), "invalid_dx_codes": invalid}
    return labels, info


def run(args: DownstreamConfig) -> dict:
    refs, dups = find_records(args.dataset_path)
    ref_path = args.reference or next(iter(sorted(args.dataset_path.rglob("REFERENCE.csv"))), None)
    labels, info = collect_labels(refs, read_reference(ref_path))
    info["reference_csv"] = str(ref_path) if ref_path else None
    info["duplicate_records_ignored"] = dups
    info["class_order"] = list(CPSC_CLASSES)
    return build(args, "CPSC2018", refs, labels, CPSC_CLASSES, cpsc_chain, info)


def main(argv: list[str] | None = None) -> dict:
    return run(DownstreamConfig.from_args(get_args_parser().parse_args(argv)))


if __name__ == "__main__":
    main()
