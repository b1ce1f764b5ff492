"""What the labels of a sentence data set mean (paper Sec. 4 downstream tasks): the class names written beside
them, and the label-fraction subsets of ``--split_ratio`` / ``--sampling_method`` (the original's draws,
reproduced exactly). The multi-hot 0/1 rule of the label rows is ``utils.arrays.check_labels`` (the tokenizer
checks it when it copies the labels, the loaders when they read them).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np

from utils.arrays import DataFileError


def load_class_names(root: str | Path, num_classes: int) -> list[str]:
    """Class names written next to the arrays by the preprocessing (``classes.json`` / ``classes.txt``
    / ``label_names.json``), else ``class_0 .. class_{C-1}``."""
    root = Path(root)
    for name in ("classes.json", "label_names.json", "classes.txt"):
        path = root / name
        if path.is_file():
            text = path.read_text()
            try:
                names = (
                    json.loads(text)
                    if name.endswith(".json")
                    else [s for s in text.splitlines() if s.strip()]
                )
            except json.JSONDecodeError as exc:
                raise DataFileError(f"{path}: not valid JSON ({exc}); it lists the class names") from None
            if isinstance(names, dict):
                names = names.get("classes", list(names))
            if len(names) == num_classes:
                return [str(n) for n in names]
    return [f"class_{c}" for c in range(num_classes)]


# --sampling_method choices (the fine-tuning parser imports this list).
SAMPLING_METHODS = ("random", "stratified", "iterative")


def subsample_indices(labels: np.ndarray, ratio: float, method: str, seed: int) -> np.ndarray:
    """Training rows kept by ``--split_ratio ratio --sampling_method method --seed seed``, as int64 indices
    into the training set, in the order the training subset holds them.

    ``random`` and ``stratified`` are the original's draws. It seeds Python, NumPy and torch globally
    with ``--seed`` and draws right away; local generators seeded the same way give the same rows
    without depending on (or disturbing) any other use of the global generators:

    * ``random``: ``random.sample(range(N), int(N * ratio))`` (Python's Mersenne Twister); the rows
      stay in draw order.
    * ``stratified``: rows grouped by the arg-max of their multi-hot label (an all-zero row counts as
      class 0); for each class c in index order, ``np.random.choice(rows_c, max(1, int(n_c * ratio)),
      replace=False)``; the per-class draws are concatenated and then ``np.random.shuffle``-d, all
      from one NumPy generator. Classes with no row are skipped.
    * ``iterative`` (not in the original; the corrected variant): multi-label iterative stratification
      (Sechidis et al. 2011, ``datasets.preprocess.splits.stratified_subset``), which keeps the share
      of every label, not only of the arg-max class; rows in increasing order.

    ``ratio == 1`` keeps every row in dataset order for every method.
    """
    labels = np.asarray(labels)
    n = len(labels)
    if method not in SAMPLING_METHODS:
        raise ValueError(f"--sampling_method must be one of {list(SAMPLING_METHODS)}, got {method!r}")
    if not 0 < float(ratio) <= 1:  # also refuses NaN
        raise ValueError(f"--split_ratio must be in (0, 1], got {ratio!r}")
    if ratio == 1:
        return np.arange(n, dtype=np.int64)
    if method == "random":
        # Official behaviour: int() truncates (not round()) and the rows keep random.sample's order.
        size = int(n * ratio)
        if size == 0:
            raise ValueError(
                f"--split_ratio {ratio} of {n} training rows keeps int({n} * {ratio}) = 0 rows with "
                "--sampling_method random; use a larger ratio"
            )
        return np.asarray(random.Random(seed).sample(range(n), size), dtype=np.int64)
    if labels.ndim != 2 or labels.shape[1] == 0:
        raise ValueError(
            f"--sampling_method {method} needs (N, C) multi-hot labels, got shape {labels.shape}"
        )
    if method == "stratified":
        # Official behaviour: stratified by the arg-max class only (multi-label rows count for their
        # first positive class), max(1, int(n_c * ratio)) rows per class, then one shuffle.
        rs = np.random.RandomState(seed)
        cls = labels.argmax(axis=1)
        parts = []
        for c in range(labels.shape[1]):
            rows = np.flatnonzero(cls == c)
            if rows.size:
                parts.append(rs.choice(rows, max(1, int(rows.size * ratio)), replace=False))
        keep = np.concatenate(parts)
        rs.shuffle(keep)
        return keep.astype(np.int64)
    from datasets.preprocess.splits import stratified_subset

    keep = stratified_subset(labels, ratio, seed)
    if keep.size == 0:
        raise ValueError(
            f"--split_ratio {ratio} of {n} training rows keeps no row with --sampling_method iterative"
        )
    return keep.astype(np.int64)
