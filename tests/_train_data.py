"""Tiny tokenised-sentence folders for the training tests (same layout as the QRS tokenizer output)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_qrs_split(
    folder: Path, split: str, n: int, n_classes: int | None, seed: int, words: int = 256
) -> None:
    """Write ``{split}_data.npy`` (n, 256, 96), ``_in_chans``, ``_in_times`` and optionally ``_labels``.

    Sentences have 40..words real words (lead-major ids, then zero padding). Labels are multi-hot with
    every class positive and negative at least once; class 0 depends on the signal so a model can learn it.
    """
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    data = np.zeros((n, words, 96), np.float32)
    chans = np.zeros((n, words), np.int32)
    times = np.zeros((n, words), np.int32)
    amp = rng.uniform(0.5, 2.0, size=n).astype(np.float32)
    t = np.linspace(-1, 1, 96, dtype=np.float32)
    for i in range(n):
        k = int(rng.integers(40, words + 1))
        beat = amp[i] * np.exp(-(t**2) * 40)
        data[i, :k] = beat + 0.1 * rng.standard_normal((k, 96)).astype(np.float32)
        chans[i, :k] = np.arange(k) // 20 % 12 + 1
        times[i, :k] = np.arange(k) % 20 // 2 + 1
    np.save(folder / f"{split}_data.npy", data)
    np.save(folder / f"{split}_data_in_chans.npy", chans)
    np.save(folder / f"{split}_data_in_times.npy", times)
    if n_classes:
        labels = (rng.random((n, n_classes)) < 0.4).astype(np.int64)
        labels[:, 0] = amp > np.median(amp)
        labels[0, :], labels[1, :] = 1, 0  # every class has a positive and a negative
        np.save(folder / f"{split}_labels.npy", labels)


def make_downstream(
    root: Path, n_train: int = 16, n_val: int = 8, n_test: int = 8, n_classes: int = 3
) -> Path:
    folder = root / "TOY_QRS" / "form"
    for split, n, seed in (("train", n_train, 0), ("val", n_val, 1), ("test", n_test, 2)):
        write_qrs_split(folder, split, n, n_classes, seed)
    return folder


def make_pretrain(root: Path, n_train: int = 16, n_val: int = 8) -> Path:
    """MIMIC-IV-like folder with two batch_k sub-folders (train and val split between them). They are batch_0
    and batch_2: the original's folder list (our default) leaves batch_1 out."""
    folder = root / "MIMIC-IV_QRS"
    half = n_train // 2
    write_qrs_split(folder / "batch_0", "train", half, None, 10)
    write_qrs_split(folder / "batch_2", "train", n_train - half, None, 11)
    write_qrs_split(folder / "batch_0", "val", n_val, None, 12)
    return folder
