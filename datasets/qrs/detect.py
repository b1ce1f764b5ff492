"""R-peak detectors for the QRS tokenizer (HeartLang Sec. 3.1: words are cut around R peaks).

``xqrs`` is the reference: ``wfdb.processing.xqrs_detect`` exactly as the original calls it.
``xqrs_fast`` runs the very same wfdb XQRS algorithm but replaces its pure-Python
``find_local_peaks`` (a ``while`` loop calling ``max`` on a window per sample; about half of the
detection time at 100 Hz) by an equivalent vectorised version:

* a sample is a candidate when it equals the maximum of ``sig[max(0, i - r) : i + r]``
  (wfdb's first loop uses ``sig[:i + r]`` for ``i <= r``, which is the same window clipped at 0),
  computed with one sliding maximum (``scipy.ndimage.maximum_filter1d``, size ``2r``, whose
  window is exactly ``[i - r, i + r)``);
* wfdb scans left to right and jumps ``r`` samples after each accepted peak, so a candidate is
  accepted iff it lies at least ``r`` after the previously accepted one (a loop over the few
  candidates only).

Leads with NaN/inf go to the reference code unchanged (Python ``max`` and a sliding maximum do
not agree on NaN). Identity with ``xqrs`` is tested on random signals with ties, on every fixture
record and edge case, and measured on every shared real record by ``benchmarks/tokenizer_bench.py``.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager

import numpy as np
from scipy.ndimage import maximum_filter1d

DETECTORS = ("xqrs", "xqrs_fast")
_PATCH_LOCK = threading.Lock()


def find_local_peaks_fast(sig: np.ndarray, radius: int) -> np.ndarray:
    """Same result as ``wfdb.processing.find_local_peaks(sig, radius)`` for finite ``sig``: (P,) int."""
    sig = np.asarray(sig)
    if sig.size == 0 or np.min(sig) == np.max(sig):
        return np.empty(0)  # wfdb returns an empty float array here; keep it identical
    radius = int(radius)
    if radius < 1 or sig.size <= 2 * radius:
        # Degenerate cases go to wfdb itself: empty windows (r < 1), or a signal shorter than the
        # first scan, where wfdb indexes past the end and raises IndexError.
        from wfdb.processing.peaks import find_local_peaks

        return find_local_peaks(sig, radius)
    window_max = maximum_filter1d(sig, size=2 * radius, mode="nearest")  # max of sig[i-r : i+r]
    candidates = np.flatnonzero(sig == window_max)
    peaks, next_allowed = [], 0
    for i in candidates.tolist():  # greedy skip of wfdb's scan: after a peak at p, resume at p + r
        if i >= next_allowed:
            peaks.append(i)
            next_allowed = i + radius
    return np.array(peaks)


@contextmanager
def _fast_local_peaks():
    """Swap wfdb's find_local_peaks for the vectorised one inside xqrs (restored on exit)."""
    from wfdb.processing import qrs as wfdb_qrs

    with _PATCH_LOCK:  # the module global is shared by threads: serialise patched calls
        original = wfdb_qrs.find_local_peaks
        wfdb_qrs.find_local_peaks = find_local_peaks_fast
        try:
            yield
        finally:
            wfdb_qrs.find_local_peaks = original


def run_detector(lead: np.ndarray, fs: int, detector: str = "xqrs") -> np.ndarray:
    """R peaks of one lead (T,) with the named detector; may raise like wfdb does."""
    from wfdb import processing

    if detector == "xqrs" or not np.isfinite(lead).all():
        return processing.xqrs_detect(sig=lead, fs=fs, verbose=False)
    if detector == "xqrs_fast":
        with _fast_local_peaks():
            return processing.xqrs_detect(sig=lead, fs=fs, verbose=False)
    raise ValueError(f"unknown detector {detector!r}; choose one of {DETECTORS}")
