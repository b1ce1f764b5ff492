"""Train/val/test splits for CPSC2018 and CSN, and label-stratified subsampling (DESIGN.md sections 1, 4).

``iterative_stratification`` is the multi-label iterative stratification of Sechidis, Tsoumakas and
Vlahavas (2011), written from the paper. The fine-tuning code reuses it for
``--split_ratio`` with ``--sampling_method iterative`` through ``stratified_subset``.

Split files are CSVs with one row per record: ``record`` then one 0/1 column per class. The same
format is accepted as the published split files and written by our own runs, so a run can be
repeated exactly from its split files.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Sequence

import numpy as np

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
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["record", *classes])
        for name, row in zip(records, np.asarray(labels)):
            w.writerow([name, *(int(v) for v in row)])


def read_split_csv(path: Path) -> tuple[list[str], np.ndarray, list[str]]:
    """Read a split file: first column the record name, every other column a 0/1 class column.

    Returns ``(records, labels (N, C) int64, classes)``. Record names are reduced to their stem
    (``WFDBRecords/01/016/JS00666.mat`` -> ``JS00666``) so published files in either form work.
    """
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    if not rows:
        raise ValueError(f"split file {path} is empty")
    header, body = rows[0], rows[1:]
    classes = [c.strip() for c in header[1:]]
    if not classes:
        raise ValueError(f"split file {path} has no label columns after the record column")
    records, labels = [], []
    for i, row in enumerate(body, start=2):
        if not row:
            continue
        try:
            labels.append([int(float(v)) for v in row[1:]])
        except ValueError as exc:
            raise ValueError(f"split file {path}, line {i}: label columns must be 0/1 ({exc})") from exc
        if len(labels[-1]) != len(classes):
            raise ValueError(
                f"split file {path}, line {i}: {len(labels[-1])} labels for {len(classes)} classes"
            )
        records.append(Path(row[0].strip()).stem if "/" in row[0] or "." in row[0] else row[0].strip())
    return records, np.asarray(labels, dtype=np.int64).reshape(len(records), len(classes)), classes
