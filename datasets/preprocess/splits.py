"""Train/val/test splits for CPSC2018 and CSN, and label-stratified subsampling (docs/preprocessing.md).

``iterative_stratification`` is the multi-label iterative stratification of Sechidis, Tsoumakas and
Vlahavas (2011), written from the paper. The fine-tuning code reuses it for
``--split_ratio`` with ``--sampling_method iterative`` through ``stratified_subset``.

Split files (``read_split_csv``) are CSVs with one row per record and one 0/1 column per class:
our ``record,<classes>`` format (written by every run, so a run can be repeated exactly) and the
paper's published CPSC2018 (``icbeb_*.csv``) and CSN (``chapman_*.csv``) files as they are, recognised
from the header. ``resolve_split_files`` turns ``--split_files paper`` into the published files.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from utils.artifacts import atomic_path

SPLIT_NAMES = ("train", "val", "test")
DEFAULT_FRACTIONS = (0.7, 0.1, 0.2)


def iterative_stratification(
    labels: np.ndarray, fractions: Sequence[float], seed: int = 0
) -> list[np.ndarray]:
    """Split rows of a multi-hot matrix into folds whose label proportions match ``fractions``.

    labels: (N, C) 0/1; fractions: (K,) summing to 1. Returns K sorted int64 index arrays that
    partition ``range(N)``. Deterministic for a given seed.

    Sechidis et al. 2011: take the label with the fewest examples still unassigned (rare labels
    first, so they are spread before the common ones fill the folds); give each of its examples to
    the fold that still wants most of that label, ties broken by the fold that wants most examples
    overall, then at random. Rows without any label go to the fold that wants most examples.
    """
    y = np.asarray(labels).astype(bool)
    if y.ndim != 2:
        raise ValueError(f"labels must be (N, C), got shape {y.shape}")
    frac = np.asarray(fractions, dtype=np.float64)
    if frac.ndim != 1 or (frac < 0).any() or not np.isclose(frac.sum(), 1.0):
        raise ValueError(f"fractions must be non-negative and sum to 1, got {list(fractions)}")
    rng = np.random.default_rng(seed)
    n, _ = y.shape
    k = frac.size
    want_total = frac * n
    want_label = frac[:, None] * y.sum(axis=0)[None, :].astype(np.float64)  # (K, C)
    fold_of = np.full(n, -1, dtype=np.int64)
    remaining = y.copy()

    def choose(scores: np.ndarray) -> int:
        best = np.flatnonzero(scores == scores.max())
        if best.size > 1:  # tie: most examples still wanted, then random
            tot = want_total[best]
            best = best[tot == tot.max()]
        return int(best[rng.integers(best.size)]) if best.size > 1 else int(best[0])

    while True:
        counts = remaining.sum(axis=0)
        live = np.flatnonzero(counts > 0)
        if live.size == 0:
            break
        fewest = live[counts[live] == counts[live].min()]
        label = int(fewest[rng.integers(fewest.size)])
        rows = np.flatnonzero(remaining[:, label])
        rng.shuffle(rows)
        for r in rows.tolist():
            f = choose(want_label[:, label])
            fold_of[r] = f
            want_label[f] -= y[r]
            want_total[f] -= 1
            remaining[r] = False
    unlabeled = np.flatnonzero(fold_of < 0)
    rng.shuffle(unlabeled)
    for r in unlabeled.tolist():
        f = choose(want_total)
        fold_of[r] = f
        want_total[f] -= 1
    return [np.flatnonzero(fold_of == f).astype(np.int64) for f in range(k)]


def stratified_subset(labels: np.ndarray, ratio: float, seed: int = 0) -> np.ndarray:
    """Sorted indices of about ``ratio * N`` rows whose label proportions follow the full set.

    labels: (N, C) multi-hot. Used for fine-tuning on 1 % / 10 % of the training labels.
    """
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"ratio must be in (0, 1], got {ratio}")
    if ratio == 1.0:
        return np.arange(len(labels), dtype=np.int64)
    return iterative_stratification(labels, [ratio, 1.0 - ratio], seed)[0]


def write_split_csv(path: Path, records: Sequence[str], labels: np.ndarray, classes: Sequence[str]) -> None:
    """One row per record: ``record,<class 1>,...,<class C>`` with 0/1 entries."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["record", *classes])
        for name, row in zip(records, np.asarray(labels)):
            w.writerow([name, *(int(v) for v in row)])


# The paper's published split files (CPSC2018: icbeb_*, CSN: chapman_*), as in the original HeartLang
# repository at this commit (which took them from the MERL benchmark), with their SHA-256.
PAPER_SPLITS_COMMIT = "a08afd8117e813fee212a1ac283db4a7140a4669"
PAPER_SPLITS_SHA256 = {
    "icbeb_train.csv": "013fa62513598e7a141d5ea810f73b6b75cdddbab25e11bcbbcdf84a18f000de",
    "icbeb_val.csv": "17fc4f6f95aa818e147ff3b6d5c314c9ae4301989469a0488aaa19638d3e44c8",
    "icbeb_test.csv": "ef85abba57aedba8bf857cf843457b5732f68adfd27b0f45af408870d4210a7f",
    "chapman_train.csv": "8cb268dd4a1e87ea527c4ad57f23baafc4ba72c08edf0ffe2d13cbf6aa299572",
    "chapman_val.csv": "2f611e3447008d36eaa10a33675127d57c90a156894577167a7932057a7ef8a8",
    "chapman_test.csv": "a51df50676226bd7697845fc15036356a56af9379c3efaa917f1dbff274d1236",
}
PAPER_SPLITS_ENV = "HEARTLANG_PAPER_SPLITS"
PAPER_SPLITS_FETCH = "bash scripts/fetch_paper_splits.sh"
REPO_ROOT = Path(__file__).resolve().parents[2]

# Published formats recognised from the header: (record column, label columns start after this column).
# icbeb_*.csv:   patient_id, ecg_id, filename, validation, age, sex, scp_codes, <9 labels>
# chapman_*.csv: ecg_path, age, diagnose, <38 labels>; the record is the file name of ecg_path.
PUBLISHED_FORMATS = {
    "icbeb": ("filename", "scp_codes"),
    "chapman": ("ecg_path", "diagnose"),
}


def split_file_format(header: Sequence[str]) -> tuple[str, int, int]:
    """``(format name, record column index, first label column index)`` of a split file header."""
    cols = [c.strip() for c in header]
    for name, (record_col, last_meta) in PUBLISHED_FORMATS.items():
        if record_col in cols and last_meta in cols:
            return name, cols.index(record_col), cols.index(last_meta) + 1
    return "simple", 0, 1


def _record_name(cell: str) -> str:
    cell = cell.strip()
    return Path(cell).stem if "/" in cell or "." in cell else cell


def read_split_csv(path: Path) -> tuple[list[str], np.ndarray, list[str]]:
    """Read a split file in one of three formats, recognised from the header:

    * ``icbeb`` (the paper's CPSC2018 files): record in ``filename``; labels = the columns after
      ``scp_codes`` (AFIB, VPC, NORM, 1AVB, CRBBB, STE, PAC, CLBBB, STD), in that order;
    * ``chapman`` (the paper's CSN files): record = file name of ``ecg_path``
      (``/chapman/WFDBRecords/08/089/JS08246.mat`` -> ``JS08246``); labels = the 38 columns after
      ``diagnose``, in that order;
    * ``simple`` (ours, written by every run): first column the record, every other column a class.

    Returns ``(records, labels (N, C) int64, classes)``. A record given as a path or with an
    extension is reduced to its stem. Label cells must be 0 or 1; a record listed twice is refused.
    """
    path = Path(path)
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    if not rows:
        raise ValueError(f"split file {path} is empty")
    header, body = rows[0], rows[1:]
    fmt, rec_col, first_label = split_file_format(header)
    classes = [c.strip() for c in header[first_label:]]
    if not classes:
        raise ValueError(f"split file {path} ({fmt} format) has no label columns after column {first_label}")
    records, labels, line_of = [], [], {}
    for i, row in enumerate(body, start=2):
        if not row:
            continue
        if len(row) != len(header):
            raise ValueError(f"split file {path}, line {i}: {len(row)} columns, the header has {len(header)}")
        try:
            y = [int(float(v)) for v in row[first_label:]]
        except ValueError as exc:
            raise ValueError(f"split file {path}, line {i}: label columns must be 0/1 ({exc})") from exc
        if any(v not in (0, 1) for v in y):
            raise ValueError(
                f"split file {path}, line {i}: label columns must be 0/1, got {row[first_label:]}"
            )
        name = _record_name(row[rec_col])
        if not name:
            raise ValueError(f"split file {path}, line {i}: empty record name in column {header[rec_col]!r}")
        if name in line_of:
            raise ValueError(f"split file {path}: record {name} listed twice (lines {line_of[name]} and {i})")
        line_of[name] = i
        records.append(name)
        labels.append(y)
    return records, np.asarray(labels, dtype=np.int64).reshape(len(records), len(classes)), classes


def paper_split_places() -> list[tuple[str, Path]]:
    """Where ``--split_files paper`` looks, in order: ``$HEARTLANG_PAPER_SPLITS``, the folder filled by
    ``scripts/fetch_paper_splits.sh`` (``datasets/paper_splits/``, not in git), and the shared data folder
    beside the repository (``../shared/data/splits``, the development setup)."""
    places = []
    if os.environ.get(PAPER_SPLITS_ENV):
        places.append((f"${PAPER_SPLITS_ENV}", Path(os.environ[PAPER_SPLITS_ENV])))
    places.append(("fetched copy", REPO_ROOT / "datasets" / "paper_splits"))
    places.append(("shared data", REPO_ROOT.parent / "shared" / "data" / "splits"))
    return places


def resolve_split_files(values: Sequence[str | Path], paper_prefix: str | None) -> tuple[list[Path], str]:
    """``--split_files`` -> (train, val, test) paths and a description of where they came from.

    ``values`` is either three paths or the single word ``paper``: the paper's published files
    ``<paper_prefix>_{train,val,test}.csv`` from the first of :func:`paper_split_places` that holds all
    three (``$HEARTLANG_PAPER_SPLITS``, when set, is the only place looked in). Paper files are checked
    against their published SHA-256.
    """
    values = [str(v) for v in values]
    if values != ["paper"]:
        if len(values) != 3:
            raise SystemExit(
                f"--split_files takes TRAIN.csv VAL.csv TEST.csv or the word 'paper', got {values}"
            )
        paths = [Path(v) for v in values]
        for p in paths:
            if not p.is_file():
                raise SystemExit(f"--split_files: {p} does not exist")
        return paths, "split_files " + " ".join(map(str, paths))
    if paper_prefix is None:
        raise SystemExit(
            "--split_files paper: this data set has no published paper split (CPSC2018 and CSN do)"
        )
    from utils.integrity import sha256_file

    names = [f"{paper_prefix}_{s}.csv" for s in SPLIT_NAMES]
    places = paper_split_places()
    if os.environ.get(PAPER_SPLITS_ENV):
        places = places[:1]  # an explicit setting is never silently replaced by another copy
    for label, folder in places:
        if all((folder / n).is_file() for n in names):
            paths = [folder / n for n in names]
            for p in paths:
                got = sha256_file(p)
                if got != PAPER_SPLITS_SHA256[p.name]:
                    raise SystemExit(
                        f"--split_files paper: {p} is not the published file (SHA-256 {got}, expected "
                        f"{PAPER_SPLITS_SHA256[p.name]}); refetch it with {PAPER_SPLITS_FETCH}"
                    )
            return paths, f"paper splits ({label}: {folder}, HeartLang commit {PAPER_SPLITS_COMMIT[:7]})"
    looked = "\n".join(f"  {label}: {folder}" for label, folder in places)
    raise SystemExit(
        f"--split_files paper: {', '.join(names)} not found in\n{looked}\n"
        f"Fetch them with `{PAPER_SPLITS_FETCH}` (into datasets/paper_splits/) or set {PAPER_SPLITS_ENV} "
        "to a folder holding them."
    )
