"""Memory-mapped datasets of tokenised ECG sentences (paper Sec. 3.1 words/sentences, Sec. 4 data).

A ``*_QRS`` folder holds, per split:
``{split}_data.npy`` (N, 256, 96) float32 words, ``{split}_data_in_chans.npy`` (N, 256) int lead ids,
``{split}_data_in_times.npy`` (N, 256) int second ids and, for downstream sets,
``{split}_labels.npy`` (N, C) multi-hot. Arrays are opened with ``mmap_mode="r"`` so a data set larger
than RAM still trains: only the rows of a batch are read. MIMIC-IV pre-training data is split over
``batch_0, batch_1, ...`` sub-folders; :func:`build_sentence_dataset` concatenates them lazily.
"""

from __future__ import annotations

import bisect
import json
import re
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset


def _load(path: Path) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; run QRSTokenizer.py (and copy the labels) first")
    return np.load(path, mmap_mode="r")


class SentenceDataset(Dataset):
    """One folder, one split. Item: ``(x (256, 96) float32, in_chans (256,) long, in_times (256,) long,
    label)``; label is a (C,) float32 multi-hot tensor, or ``-1`` when the split has no labels."""

    def __init__(self, root: str | Path, split: str, with_labels: bool = True):
        self.root = Path(root)
        self.split = split
        self.data = _load(self.root / f"{split}_data.npy")
        self.chans = _load(self.root / f"{split}_data_in_chans.npy")
        self.times = _load(self.root / f"{split}_data_in_times.npy")
        n = self.data.shape[0]
        if (
            self.data.ndim != 3
            or self.chans.shape != self.data.shape[:2]
            or self.times.shape != self.data.shape[:2]
        ):
            raise ValueError(
                f"{self.root}/{split}: inconsistent shapes data {self.data.shape}, "
                f"in_chans {self.chans.shape}, in_times {self.times.shape}; expected (N, L, W), (N, L), (N, L)"
            )
        self.labels = None
        if with_labels:
            self.labels = _load(self.root / f"{split}_labels.npy")
            if self.labels.shape[0] != n:
                raise ValueError(
                    f"{self.root}/{split}_labels.npy has {self.labels.shape[0]} rows, data has {n}"
                )

    def __len__(self) -> int:
        return self.data.shape[0]

    def __getitem__(self, i: int):
        # np.array copies the one row out of the memory map (torch cannot wrap read-only mmaps).
        x = torch.from_numpy(np.array(self.data[i], dtype=np.float32))
        c = torch.from_numpy(np.array(self.chans[i], dtype=np.int64))
        t = torch.from_numpy(np.array(self.times[i], dtype=np.int64))
        y = torch.from_numpy(np.array(self.labels[i], dtype=np.float32)) if self.labels is not None else -1
        return x, c, t, y


class ConcatSentenceDataset(Dataset):
    """Lazy concatenation of several :class:`SentenceDataset` (MIMIC-IV ``batch_k`` folders)."""

    def __init__(self, parts: list[SentenceDataset]):
        if not parts:
            raise ValueError("ConcatSentenceDataset needs at least one part")
        self.parts = parts
        self.offsets = np.cumsum([0] + [len(p) for p in parts]).tolist()

    def __len__(self) -> int:
        return self.offsets[-1]

    def __getitem__(self, i: int):
        if i < 0:
            i += len(self)
        k = bisect.bisect_right(self.offsets, i) - 1
        return self.parts[k][i - self.offsets[k]]


def batch_folders(root: Path) -> list[Path]:
    """``batch_0, batch_1, ..., batch_10`` sorted numerically (not as strings)."""
    found = [p for p in root.iterdir() if p.is_dir() and re.fullmatch(r"batch_\d+", p.name)]
    return sorted(found, key=lambda p: int(p.name.split("_")[1]))


def build_sentence_dataset(root: str | Path, split: str, with_labels: bool = True) -> Dataset:
    """A folder with ``{split}_data.npy`` or with ``batch_k/`` sub-folders (concatenated in k order)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"--dataset_dir {root} does not exist")
    if (root / f"{split}_data.npy").is_file():
        return SentenceDataset(root, split, with_labels)
    folders = [p for p in batch_folders(root) if (p / f"{split}_data.npy").is_file()]
    if not folders:
        raise FileNotFoundError(f"{root}: neither {split}_data.npy nor batch_k/{split}_data.npy found")
    return ConcatSentenceDataset([SentenceDataset(p, split, with_labels) for p in folders])


def load_class_names(root: str | Path, num_classes: int) -> list[str]:
    """Class names written next to the arrays by the preprocessing (``classes.json`` / ``classes.txt``
    / ``label_names.json``), else ``class_0 .. class_{C-1}``."""
    root = Path(root)
    for name in ("classes.json", "label_names.json", "classes.txt"):
        path = root / name
        if path.is_file():
            text = path.read_text()
            names = (
                json.loads(text) if name.endswith(".json") else [s for s in text.splitlines() if s.strip()]
            )
            if isinstance(names, dict):
                names = names.get("classes", list(names))
            if len(names) == num_classes:
                return [str(n) for n in names]
    return [f"class_{c}" for c in range(num_classes)]


def subsample_indices(labels: np.ndarray, ratio: float, method: str, seed: int) -> np.ndarray:
    """Indices (sorted) of the ``ratio`` share of a training set used by ``--split_ratio``.

    ``random``: a seeded draw without replacement of ``max(1, round(N * ratio))`` rows.
    ``stratified``: multi-label iterative stratification (Sechidis et al. 2011) from
    ``datasets.preprocess.splits.iterative_stratification``, keeping every label's share.
    """
    n = len(labels)
    if not 0 < ratio <= 1:
        raise ValueError(f"--split_ratio must be in (0, 1], got {ratio}")
    if ratio >= 1:
        return np.arange(n)
    if method == "random":
        rng = np.random.default_rng(seed)
        size = max(1, int(round(n * ratio)))
        return np.sort(rng.choice(n, size=size, replace=False))
    if method == "stratified":
        from datasets.preprocess.splits import iterative_stratification

        parts = iterative_stratification(np.asarray(labels), [ratio, 1.0 - ratio], seed)
        return np.sort(np.asarray(parts[0], dtype=np.int64))
    raise ValueError(f"--sampling_method must be 'random' or 'stratified', got {method!r}")
