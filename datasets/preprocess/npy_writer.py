"""Row-wise writing of large ``.npy`` files through ``np.lib.format.open_memmap`` (docs/preprocessing.md).

The file is created once with its final (or an upper-bound) shape; rows are buffered in a small
RAM chunk and written through a short-lived memory map. Re-opening the map per chunk keeps the
writer's resident memory at one chunk: a long-lived map would count every page written so far
in the process RSS until the batch is closed.

The rows go to a hidden temp file beside ``path`` (``utils.artifacts.temp_sibling``); ``close()`` renames it
into place, so an interrupted or full-disk run never leaves a partial array under the final name, and a
symlink at ``path`` is replaced, not written through. ``abort()`` removes the temp file.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from utils.arrays import create_npy
from utils.artifacts import save_npy, temp_sibling


class ChunkedNpyWriter:
    """Append rows of shape ``row_shape`` to ``path`` (an ``.npy`` of ``capacity`` rows).

    ``close()`` returns the number of rows written; if that is below ``capacity`` the file is
    rewritten to exactly that many rows (chunked copy), so readers never see unwritten rows; only then
    does the file appear under ``path``.
    """

    def __init__(
        self, path: Path, capacity: int, row_shape: tuple[int, ...], dtype=np.float32, chunk_rows: int = 512
    ):
        self.path = Path(path)
        self.capacity = int(capacity)
        self.row_shape = tuple(row_shape)
        self.dtype = np.dtype(dtype)
        self.chunk_rows = chunk_rows
        self.n_written = 0
        self._buffer = np.empty((chunk_rows, *self.row_shape), dtype=self.dtype)
        self._n_buffered = 0
        self.tmp = temp_sibling(self.path)
        if self.capacity == 0:  # mmap cannot map zero bytes; an empty array needs no rows anyway
            return
        mm = create_npy(self.tmp, self.dtype, (self.capacity, *self.row_shape))  # free space checked first
        del mm

    def __len__(self) -> int:
        """Rows appended so far (written or buffered)."""
        return self.n_written + self._n_buffered

    def append(self, row: np.ndarray) -> None:
        if self.n_written + self._n_buffered >= self.capacity:
            raise IndexError(f"{self.path}: more than the planned {self.capacity} rows")
        self._buffer[self._n_buffered] = row
        self._n_buffered += 1
        if self._n_buffered == self.chunk_rows:
            self._flush_buffer()

    def _flush_buffer(self) -> None:
        if self._n_buffered == 0:
            return
        mm = np.load(self.tmp, mmap_mode="r+")
        mm[self.n_written : self.n_written + self._n_buffered] = self._buffer[: self._n_buffered]
        mm.flush()
        del mm
        self.n_written += self._n_buffered
        self._n_buffered = 0

    def close(self) -> int:
        self._flush_buffer()
        if self.n_written == 0:
            save_npy(self.path, np.zeros((0, *self.row_shape), dtype=self.dtype))
            self.tmp.unlink(missing_ok=True)
            return 0
        if self.n_written < self.capacity:
            shrink_npy(self.tmp, self.n_written, self.chunk_rows)
        os.replace(self.tmp, self.path)
        return self.n_written

    def abort(self) -> None:
        """Drop the rows written so far (the temp file); ``path`` keeps whatever it held before."""
        self.tmp.unlink(missing_ok=True)


def shrink_npy(path: Path, n_rows: int, chunk_rows: int = 512) -> None:
    """Rewrite ``path`` keeping only its first ``n_rows`` rows (atomic replace)."""
    src = np.load(path, mmap_mode="r")
    dtype, row_shape = src.dtype, src.shape[1:]
    del src
    tmp = temp_sibling(path)
    dst = create_npy(tmp, dtype, (n_rows, *row_shape))
    del dst
    for start in range(0, n_rows, chunk_rows):  # short-lived maps keep RSS at one chunk
        src = np.load(path, mmap_mode="r")
        dst = np.load(tmp, mmap_mode="r+")
        stop = min(start + chunk_rows, n_rows)
        dst[start:stop] = src[start:stop]
        dst.flush()
        del dst, src
    os.replace(tmp, path)
