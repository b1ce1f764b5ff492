"""Memory-mapped datasets of tokenised ECG sentences (paper Sec. 3.1 words/sentences, Sec. 4 data).

A ``*_QRS`` folder holds, per split:
``{split}_data.npy`` (N, 256, 96) float32 words, ``{split}_data_in_chans.npy`` (N, 256) int lead ids,
``{split}_data_in_times.npy`` (N, 256) int second ids and, for downstream sets,
``{split}_labels.npy`` (N, C) multi-hot. Arrays are opened with ``mmap_mode="r"`` so a data set larger
than RAM still trains: only the rows of a batch are read. MIMIC-IV pre-training data is split over
``batch_0, batch_1, ...`` sub-folders; :func:`build_sentence_dataset` concatenates them lazily
(by default without ``batch_1``, as the original; see ``OFFICIAL_SKIPPED_BATCH_FOLDERS``).

Before a split is read, the QRS tokenizer must have completed it on the arrays there now
(``utils.artifacts.require_complete`` on ``{split}_tokenizer_summary.json``): a split whose tokenisation was
interrupted, or whose arrays were rewritten or truncated since, is refused naming the folder and the file.
Arrays without a tokenizer summary (made by hand) are read as they are.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Subset, default_collate

from utils.arrays import DataFileError, check_labels, first_where, open_npy, scan_range
from utils.artifacts import require_complete

#: The tokenizer's completion record of a split (written by datasets/qrs, the stamp under "stamp").
TOKENIZER_RECORD = "{split}_tokenizer_summary.json"
SENTENCE_FILES = ("{split}_data.npy", "{split}_data_in_chans.npy", "{split}_data_in_times.npy")


def _load(path: Path) -> np.ndarray:
    """The memory-mapped array of ``path``; a missing, truncated or non-.npy file is named with the reason."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; run QRSTokenizer.py (and copy the labels) first")
    return open_npy(path)


class SentenceDataset(Dataset):
    """One folder, one split. Item: ``(x (256, 96) float32, in_chans (256,) long, in_times (256,) long,
    label)``; label is a (C,) float32 multi-hot tensor, the (256,) long cached pre-training targets when
    they are attached (:meth:`attach_targets`, engine.targets), or ``-1``."""

    skipped_batch_folders: tuple[str, ...] = ()  # a single folder leaves nothing out

    def __init__(self, root: str | Path, split: str, with_labels: bool = True):
        self.root = Path(root)
        self.split = split
        record = TOKENIZER_RECORD.format(split=split)
        files = [f.format(split=split) for f in SENTENCE_FILES]
        if (self.root / record).is_file() and all((self.root / f).is_file() for f in files):
            require_complete(
                self.root, [record], files, what=f"reading the {split} sentences", nests={record: "stamp"}
            )
        self.data = _load(self.root / f"{split}_data.npy")
        self.lead_ids = _load(self.root / f"{split}_data_in_chans.npy")
        self.time_ids = _load(self.root / f"{split}_data_in_times.npy")
        n = self.data.shape[0]
        if (
            self.data.ndim != 3
            or self.lead_ids.shape != self.data.shape[:2]
            or self.time_ids.shape != self.data.shape[:2]
        ):
            raise DataFileError(
                f"{self.root}/{split}: inconsistent shapes data {self.data.shape}, "
                f"in_chans {self.lead_ids.shape}, in_times {self.time_ids.shape}; expected (N, L, W), (N, L), (N, L)"
            )
        if not np.issubdtype(self.data.dtype, np.floating):
            raise DataFileError(
                f"{self.root}/{split}_data.npy: dtype {self.data.dtype}; words are float samples"
            )
        for name, ids in (("in_chans", self.lead_ids), ("in_times", self.time_ids)):
            if not np.issubdtype(ids.dtype, np.integer):
                raise DataFileError(
                    f"{self.root}/{split}_data_{name}.npy: dtype {ids.dtype}; lead / second ids are integers"
                )
        self._id_ranges: dict[str, tuple[int, int] | None] = {}
        self.labels = None
        if with_labels:
            self.labels = _load(self.root / f"{split}_labels.npy")
            if self.labels.shape[0] != n:
                raise DataFileError(
                    f"{self.root}/{split}_labels.npy has {self.labels.shape[0]} rows, data has {n}"
                )
            check_labels(self.labels, self.root / f"{split}_labels.npy")
        self.targets = None  # (N, L) cached pre-training targets (engine.targets), or None

    def id_range(self, name: str) -> tuple[int, int] | None:
        """``(min, max)`` of ``in_chans`` / ``in_times`` (scanned once, in row chunks); None when empty."""
        if name not in self._id_ranges:
            found = scan_range(self.lead_ids if name == "in_chans" else self.time_ids)
            self._id_ranges[name] = None if found is None else (int(found[0]), int(found[1]))
        return self._id_ranges[name]

    def attach_targets(self, targets: np.ndarray) -> None:
        """Cached pre-training targets (N, L) of this split: the item's 4th element becomes the target row
        (a pre-training split has no labels)."""
        if self.labels is not None:
            raise ValueError(f"{self.root}/{self.split}: a labelled split takes no pre-training targets")
        if tuple(targets.shape) != tuple(self.lead_ids.shape):
            raise ValueError(
                f"{self.root}/{self.split}: targets of shape {tuple(targets.shape)}, sentences {self.lead_ids.shape}"
            )
        self.targets = targets

    def __len__(self) -> int:
        return self.data.shape[0]

    def __getitem__(self, i: int):
        # np.array copies the one row out of the memory map (torch cannot wrap read-only mmaps).
        x = torch.from_numpy(np.array(self.data[i], dtype=np.float32))
        c = torch.from_numpy(np.array(self.lead_ids[i], dtype=np.int64))
        t = torch.from_numpy(np.array(self.time_ids[i], dtype=np.int64))
        if self.labels is not None:
            y = torch.from_numpy(np.array(self.labels[i], dtype=np.float32))
        elif self.targets is not None:
            y = torch.from_numpy(np.array(self.targets[i], dtype=np.int64))
        else:
            y = -1
        return x, c, t, y

    def __getitems__(self, indices: list[int]) -> SentenceBatch:
        """Batch-level read (the DataLoader calls this with a batch's indices): one sorted fancy-index read
        per array instead of one small read per row; the same items as ``[self[i] for i in indices]``, in
        that order, already stacked (:func:`collate_sentences`; benchmarks/loader_bench.py measures it)."""
        return read_batch([self], [0, len(self)], indices)

    def _label_source(self) -> tuple[np.ndarray | None, np.dtype]:
        if self.labels is not None:
            return self.labels, np.dtype(np.float32)
        if self.targets is not None:
            return self.targets, np.dtype(np.int64)
        return None, np.dtype(np.int64)


def read_batch(parts: list[SentenceDataset], offsets: list[int], indices) -> SentenceBatch:
    """Items ``indices`` of the concatenation of ``parts`` (``offsets``: cumulative sizes), stacked: the
    indices are sorted, each part's rows are read in file order with one fancy index per array and written
    to their places in the batch arrays (the requested order)."""
    n_total = offsets[-1]
    idx = np.asarray(indices, dtype=np.int64)
    idx = np.where(idx < 0, idx + n_total, idx)
    if idx.size and (idx.min() < 0 or idx.max() >= n_total):
        raise IndexError(f"index out of range for a data set of {n_total} sentences")
    order = np.argsort(idx, kind="stable")
    sidx = idx[order]
    first = parts[0]
    length, width = first.data.shape[1:]
    y_src, y_dtype = first._label_source()
    x = np.empty((len(idx), length, width), np.float32)
    c = np.empty((len(idx), length), np.int64)
    t = np.empty((len(idx), length), np.int64)
    y = (
        np.empty((len(idx), *y_src.shape[1:]), y_dtype)
        if y_src is not None
        else np.full(len(idx), -1, np.int64)
    )
    bounds = np.searchsorted(sidx, offsets)
    for k, part in enumerate(parts):
        a, b = int(bounds[k]), int(bounds[k + 1])
        if a == b:
            continue
        rows, dest = sidx[a:b] - offsets[k], order[a:b]  # read in file order, write to the batch position
        x[dest] = part.data[rows]
        c[dest] = part.lead_ids[rows]
        t[dest] = part.time_ids[rows]
        src = part._label_source()[0]
        if src is not None:
            y[dest] = src[rows]
    return SentenceBatch(tuple(torch.from_numpy(v) for v in (x, c, t, y)))


class SentenceBatch(Sequence):
    """The items of one batch, stored stacked: ``tensors = (x (B,256,96), c (B,256), t (B,256), y (B,...))``.
    Indexing gives the per-item tuples (as ``__getitem__`` would); :func:`collate_sentences` returns the
    stacked tensors without copying them again."""

    def __init__(self, tensors: tuple):
        self.tensors = tuple(tensors)

    def __len__(self) -> int:
        return len(self.tensors[0])

    def __getitem__(self, k):
        return tuple(v[k] for v in self.tensors)


def collate_sentences(data):
    """DataLoader ``collate_fn``: a :class:`SentenceBatch` as its stacked tensors (a list, like
    ``default_collate`` of tuples), anything else through ``default_collate``."""
    if isinstance(data, SentenceBatch):
        return list(data.tensors)
    return default_collate(data)


class ConcatSentenceDataset(Dataset):
    """Lazy concatenation of several :class:`SentenceDataset` (MIMIC-IV ``batch_k`` folders)."""

    def __init__(self, parts: list[SentenceDataset], skipped_batch_folders: tuple[str, ...] = ()):
        if not parts:
            raise ValueError("ConcatSentenceDataset needs at least one part")
        self.parts = parts
        self.skipped_batch_folders = tuple(skipped_batch_folders)  # batch_k folders left out (names)
        self.offsets = np.cumsum([0] + [len(p) for p in parts]).tolist()

    def __len__(self) -> int:
        return self.offsets[-1]

    def __getitem__(self, i: int):
        if i < 0:
            i += len(self)
        k = bisect.bisect_right(self.offsets, i) - 1
        return self.parts[k][i - self.offsets[k]]

    def __getitems__(self, indices: list[int]) -> SentenceBatch:
        """Batch-level read over the ``batch_k`` parts (:func:`read_batch`), original order kept."""
        return read_batch(self.parts, self.offsets, indices)


def sentence_parts(dataset) -> list[SentenceDataset]:
    """The single-folder datasets behind ``dataset`` (a SentenceDataset, a concatenation, a Subset of them)."""
    if isinstance(dataset, Subset):
        return sentence_parts(dataset.dataset)
    if isinstance(dataset, ConcatSentenceDataset):
        return list(dataset.parts)
    if isinstance(dataset, SentenceDataset):
        return [dataset]
    return []


def check_fits_model(dataset, config, model: str = "the model") -> None:
    """The sentences of ``dataset`` against the model that reads them (``config``: any object with the
    backbone fields ``seq_len``, ``time_window``, ``num_lead_ids``, ``num_time_ids``): words per sentence,
    samples per word, and lead / second ids within the model's embedding tables (0 = padding). A mismatch
    raises :class:`DataFileError` naming the file, the value found and the model's rule, before training,
    instead of a convolution shape error or an IndexError inside the model."""
    for part in sentence_parts(dataset):
        data_file = f"{part.root}/{part.split}_data.npy"
        _, length, width = part.data.shape
        if width != config.time_window:
            raise DataFileError(
                f"{data_file}: words of {width} samples (shape {part.data.shape}), but {model} reads "
                f"{config.time_window}-sample words (time_window); tokenise with --token_len {config.time_window}"
            )
        if length != config.seq_len:
            raise DataFileError(
                f"{data_file}: sentences of {length} words (shape {part.data.shape}), but {model} reads "
                f"{config.seq_len} (seq_len); tokenise with --max_len {config.seq_len}"
            )
        for name, limit, what in (
            ("in_chans", config.num_lead_ids, "lead"),
            ("in_times", config.num_time_ids, "second"),
        ):
            found = part.id_range(name)
            if found is None or (found[0] >= 0 and found[1] < limit):
                continue
            ids = part.lead_ids if name == "in_chans" else part.time_ids
            row, word = first_where(ids, lambda b, lim=limit: (b < 0) | (b >= lim))
            hint = (
                " (records longer than 15 s at 100 Hz give such second ids: cut them to 10 s in preprocessing)"
                if name == "in_times"
                else " (lead ids are the lead index + 1 of the 12 standard leads)"
            )
            raise DataFileError(
                f"{part.root}/{part.split}_data_{name}.npy: {what} id {int(ids[row, word])} at row {row}, word "
                f"{word}; {model} embeds {what} ids 0-{limit - 1} (0 = padding){hint}"
            )


def batch_folders(root: Path) -> list[Path]:
    """``batch_0, batch_1, ..., batch_10`` sorted numerically (not as strings)."""
    found = [p for p in root.iterdir() if p.is_dir() and re.fullmatch(r"batch_\d+", p.name)]
    return sorted(found, key=lambda p: int(p.name.split("_")[1]))


# Official behaviour: the original's pre-training and VQ-HBR scripts list the MIMIC-IV batch folders
# by hand and the list leaves out batch_1 (a slip, but the released weights were trained without it).
# The preprocessing numbers folders from batch_0 (record i -> batch_{i // 100100}), so with the
# ~800 000 records the original trains on batch_0, batch_2, ..., batch_7. Read literally: every folder
# except the one named batch_1, for train and val alike.
OFFICIAL_SKIPPED_BATCH_FOLDERS = ("batch_1",)


def select_batch_folders(
    root: str | Path, split: str, all_batch_folders: bool = False
) -> tuple[list[Path], list[Path]]:
    """``(used, left out)`` ``batch_k`` folders of ``root`` holding ``{split}_data.npy``, in numeric order.

    By default the original's list (every folder except ``batch_1``); ``all_batch_folders=True`` uses
    every folder (the corrected recipe).
    """
    found = [p for p in batch_folders(Path(root)) if (p / f"{split}_data.npy").is_file()]
    if all_batch_folders:
        return found, []
    used = [p for p in found if p.name not in OFFICIAL_SKIPPED_BATCH_FOLDERS]
    return used, [p for p in found if p.name in OFFICIAL_SKIPPED_BATCH_FOLDERS]


def build_sentence_dataset(
    root: str | Path, split: str, with_labels: bool = True, all_batch_folders: bool = False
) -> Dataset:
    """A folder with ``{split}_data.npy``, or with ``batch_k/`` sub-folders (MIMIC-IV) concatenated in k
    order: by default the original's folder list, which leaves out ``batch_1``; ``all_batch_folders``
    uses them all. The returned dataset's ``skipped_batch_folders`` names the folders left out."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"--dataset_dir {root} does not exist")
    if (root / f"{split}_data.npy").is_file():
        return SentenceDataset(root, split, with_labels)
    used, skipped = select_batch_folders(root, split, all_batch_folders)
    if not used:
        if skipped:
            raise FileNotFoundError(
                f"{root}: the only batch folder with {split}_data.npy is {skipped[0].name}, which the original's "
                "folder list leaves out; use all batch folders (all_batch_folders / --all_batch_folders)"
            )
        raise FileNotFoundError(f"{root}: neither {split}_data.npy nor batch_k/{split}_data.npy found")
    parts = [SentenceDataset(p, split, with_labels) for p in used]
    return ConcatSentenceDataset(parts, tuple(p.name for p in skipped))
