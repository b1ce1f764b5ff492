"""R-peak detectors for the QRS tokenizer (HeartLang Sec. 3.1: words are cut around R peaks).

``xqrs`` is the reference: ``wfdb.processing.xqrs_detect(sig, fs, verbose=False)`` exactly as the
original calls it (wfdb 4.x XQRS with its default configuration, learning on).

``xqrs_fast`` (the default) gives the SAME R peaks, about 30x faster per lead, by running wfdb's
own XQRS steps in another way:

* the per-fs constants (Butterworth band-pass coefficients, Ricker wavelets, filter gains,
  refractory/RR limits) are computed once per sampling rate, by wfdb's code on a probe signal;
* the two ``scipy.signal.filtfilt`` passes (band-pass, then moving-wave integration) run on a
  whole batch of leads at once (same function, same dtype, row by row inside scipy);
* wfdb's pure-Python loops (``find_local_peaks``, the learning phase, the detection with
  back-search) run as numba-compiled copies, ``datasets/qrs/xqrs_kernels.py``, with the same
  float64 operations in the same order; the means of the learning phase stay ``np.mean``;
* the learning phase's cross-correlation is summed in another order than numpy's dot, so a
  decision within 1e-9 of the 0.6 threshold is recomputed exactly as wfdb does it
  (``normalize`` + ``np.correlate`` on the lead band-passed as wfdb does, 1-D).

A lead goes to the reference path (wfdb itself) when the fast path cannot promise identical
output: NaN/inf in the lead or in its filtered versions, a lead too short for the filters (wfdb
raises; the message must be the same), input that is not native float32/float64, a sampling rate
whose constants wfdb cannot compute, or numba missing. Such leads are counted
(``detector_reference_path_records`` in the run summary, ``reference_path_leads`` in the benchmark).
Before first use in a process the compiled kernels are checked against wfdb on probe signals;
any difference raises instead of silently producing other peaks.
Identity is tested on every shared real record (tests/test_tokenizer_detect.py,
benchmarks/tokenizer_bench.py) and on random signals.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.ndimage import maximum_filter1d

from datasets.qrs import xqrs_kernels as K

DETECTORS = ("xqrs_fast", "xqrs")
DEFAULT_DETECTOR = "xqrs_fast"
FAST_ENGINE = "numba" if K.HAVE_NUMBA else "wfdb"  # what xqrs_fast runs on in this install
_PATCH_LOCK = threading.Lock()
_READY_LOCK = threading.Lock()
_READY: dict = {}
_FAST_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def find_local_peaks_fast(sig: np.ndarray, radius: int) -> np.ndarray:
    """Same result as ``wfdb.processing.find_local_peaks(sig, radius)`` for finite ``sig``: (P,) int.

    Vectorised (used when numba is missing): a sample is a candidate when it equals the maximum
    of ``sig[max(0, i - r) : i + r]`` (``maximum_filter1d`` of size 2r has exactly that window);
    wfdb jumps ``r`` samples after each accepted peak, so a candidate is accepted iff it lies at
    least ``r`` after the previously accepted one.
    """
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


def reference_detect(lead: np.ndarray, fs) -> np.ndarray:
    """The reference: wfdb's xqrs as the original calls it (may raise like wfdb does)."""
    from wfdb import processing

    return processing.xqrs_detect(sig=lead, fs=fs, verbose=False)


@dataclass(frozen=True)
class XqrsConstants:
    """What wfdb's XQRS derives from ``fs`` alone (default ``XQRS.Conf``), computed by wfdb itself."""

    b: np.ndarray  # band-pass 5-20 Hz, butter(2)
    a: np.ndarray
    wavelet: np.ndarray  # ricker(qrs_width, 4): moving-wave integration
    learn_wavelet: np.ndarray  # ricker(2 * qrs_radius, 4): learning-phase cross-correlation
    qrs_width: int
    qrs_radius: int
    ref_period: int
    rr_init: float
    rr_min: float
    rr_max: float
    transform_gain: float
    qrs_thr_init: float
    qrs_thr_min: float
    min_len: int  # shorter leads make filtfilt raise: the reference path reports it


@lru_cache(maxsize=16)
def xqrs_constants(fs) -> XqrsConstants | None:
    """Per-fs constants, or None when wfdb cannot run at this rate (then every lead uses wfdb)."""
    from scipy import signal
    from wfdb.processing.qrs import XQRS, ricker

    try:
        n = int(max(2000, 20 * fs))
        t = np.arange(n) / fs
        probe = np.sin(2 * np.pi * 1.1 * t) + 0.3 * np.sin(2 * np.pi * 7.0 * t)
        x = XQRS(sig=probe, fs=fs)
        x.detect(verbose=False)  # runs _set_conf, _bandpass and _mwi: the gains below are wfdb's own
        if x.t_inspect_period != 0 or x.qrs_radius < 1:
            return None  # T-wave inspection / empty peak windows: not reproduced, use wfdb
        # The same expressions as XQRS._bandpass / _mwi / _learn_init_params.
        b, a = signal.butter(2, [float(x.fc_low) * 2 / fs, float(x.fc_high) * 2 / fs], "pass")
        wavelet = ricker(x.qrs_width, 4)
        return XqrsConstants(
            b=b,
            a=a,
            wavelet=wavelet,
            learn_wavelet=np.ascontiguousarray(ricker(x.qrs_radius * 2, 4), dtype=np.float64),
            qrs_width=int(x.qrs_width),
            qrs_radius=int(x.qrs_radius),
            ref_period=int(x.ref_period),
            rr_init=x.rr_init,
            rr_min=x.rr_min,
            rr_max=x.rr_max,
            transform_gain=x.transform_gain,
            qrs_thr_init=x.qrs_thr_init,
            qrs_thr_min=x.qrs_thr_min,
            # filtfilt needs len > padlen = 3 * max(len(a), len(b)); local peaks need len > 2r + 1
            min_len=max(3 * max(len(a), len(b)), 3 * len(wavelet), 2 * x.qrs_radius + 1) + 1,
        )
    except Exception:  # noqa: BLE001 - e.g. fs too low for the 20 Hz band edge: wfdb raises per lead
        return None


def _wfdb_sig_f(lead: np.ndarray, c: XqrsConstants) -> np.ndarray:
    """The band-passed lead exactly as XQRS._bandpass makes it (same values and memory layout)."""
    from scipy import signal

    return signal.filtfilt(c.b, c.a, lead, axis=0)


def _exact_xcorr_above(sig_f: np.ndarray, i: int, c: XqrsConstants) -> bool:
    """wfdb's own decision ``np.correlate(normalize(segment), ricker) > 0.6`` for the peak at ``i``.

    sig_f: the band-passed lead as wfdb holds it (:func:`_wfdb_sig_f`), so that even numpy's
    BLAS dot sees the same memory layout as in wfdb.
    """
    from wfdb.processing.basic import normalize

    segment = normalize(sig_f[i - c.qrs_radius : i + c.qrs_radius])
    return bool(np.correlate(segment, c.learn_wavelet) > K.XCORR_THRESHOLD)


def _init_params(lead: np.ndarray, sig_f: np.ndarray, sig_i: np.ndarray, c: XqrsConstants) -> tuple:
    """``XQRS._learn_init_params`` (or the defaults): qrs_amp, noise_amp, rr_recent, last_qrs_ind, qrs_thr."""
    decisions = np.full(sig_f.shape[0], -1, dtype=np.int8)  # -1: the kernel decides
    wfdb_sig_f = None
    while True:
        status, qrs, noise, rr_mean, at = K.learn_beats(
            sig_f, c.qrs_radius, c.qrs_width, c.rr_min, c.rr_max, c.learn_wavelet, decisions
        )
        if status == K.LEARN_DONE:
            break
        if wfdb_sig_f is None:
            wfdb_sig_f = _wfdb_sig_f(lead, c)  # rare: only for a decision too close to call
        decisions[at] = _exact_xcorr_above(wfdb_sig_f, at, c)
    if qrs.size == K.N_CALIB_BEATS:
        # The amplitude statistics exactly as wfdb computes them (numpy's own summation order).
        qrs_amp = np.mean(sig_i[qrs])
        noise_amp = np.mean(sig_i[noise]) if noise.size else qrs_amp / 10
        rr_recent = c.rr_init if np.isnan(rr_mean) else rr_mean
        last_qrs_ind = min(0, qrs[0] - c.rr_min - 1)
        floor = c.qrs_thr_min * c.transform_gain
    else:  # XQRS._set_default_init_params
        qrs_thr_init = c.qrs_thr_init * c.transform_gain
        floor = c.qrs_thr_min * c.transform_gain
        qrs_amp = 27 / 40 * qrs_thr_init
        noise_amp = qrs_amp / 10
        rr_recent = c.rr_init
        last_qrs_ind = 0
    qrs_thr = max(0.25 * qrs_amp + 0.75 * noise_amp, floor)  # XQRS._set_init_params
    return float(qrs_amp), float(noise_amp), float(rr_recent), float(last_qrs_ind), float(qrs_thr)


def _detect_filtered(lead: np.ndarray, sig_f: np.ndarray, sig_i: np.ndarray, c: XqrsConstants) -> np.ndarray:
    """R peaks of one lead from its band-passed (T,) and integrated (T,) float64 signals."""
    qrs_amp, noise_amp, rr_recent, last_qrs_ind, qrs_thr = _init_params(lead, sig_f, sig_i, c)
    peaks_i, _ = K.local_peaks(sig_i, c.qrs_radius)
    qrs = K.run_detection(
        sig_i,
        peaks_i,
        qrs_amp,
        noise_amp,
        rr_recent,
        last_qrs_ind,
        qrs_thr,
        float(c.qrs_thr_min),
        c.ref_period,
        c.rr_max,
    )
    # wfdb: np.array(list of peaks) (+ sampfrom 0); an empty list gives a float64 array
    return qrs if qrs.size else np.array([])


def _fast_batch(leads: np.ndarray, fs) -> list:
    from scipy import signal

    n, T = leads.shape
    out: list = [None] * n
    c = xqrs_constants(fs)
    if c is None or T < c.min_len or leads.dtype not in _FAST_DTYPES:
        return out  # e.g. float16 or big-endian input: wfdb decides (scipy may refuse it per lead)
    finite = np.isfinite(leads).all(axis=1)
    rows = np.flatnonzero(finite)
    if rows.size == 0:
        return out
    lo, hi = leads[rows].min(axis=1), leads[rows].max(axis=1)
    for r in rows[lo == hi]:
        out[r] = np.empty(0)  # wfdb: "Flat signal. Detection skipped."
    rows = rows[lo != hi]
    if rows.size == 0:
        return out
    # The filters exactly as XQRS._bandpass and XQRS._mwi call them, on all rows at once.
    sig_f = signal.filtfilt(c.b, c.a, leads[rows], axis=1)
    sig_i = signal.filtfilt(c.wavelet, [1], sig_f, axis=1) ** 2
    sig_f, sig_i = np.ascontiguousarray(sig_f), np.ascontiguousarray(sig_i)  # same values, C layout
    ok = np.isfinite(sig_i).all(axis=1) & np.isfinite(sig_f).all(axis=1)
    for k in np.flatnonzero(ok):
        out[rows[k]] = _detect_filtered(leads[rows[k]], sig_f[k], sig_i[k], c)
    return out


def _self_check() -> None:
    """Compare the compiled path with wfdb on probe signals once per process; raise on any difference."""
    rng = np.random.default_rng(0)
    t = np.arange(1000) / 100.0
    probes = [
        np.sin(2 * np.pi * 1.2 * t) ** 15 + 0.05 * rng.normal(size=t.size),  # spiky "beats"
        rng.normal(size=1000),
        np.repeat(rng.integers(0, 4, 100), 10).astype(np.float32),
    ]
    for probe in probes:
        want = reference_detect(probe, 100)
        got = _fast_batch(probe[None], 100)[0]
        if got is None or got.dtype != want.dtype or not np.array_equal(got, want):
            raise RuntimeError(
                f"xqrs_fast ({FAST_ENGINE}) differs from wfdb xqrs_detect on a probe signal "
                f"({got!r} vs {want!r}); refusing to tokenize with it (use --detector xqrs)"
            )


def _ensure_ready() -> None:
    """Compile (or load from numba's cache) and self-check the kernels once per process."""
    if _READY.get("ok"):
        return
    with _READY_LOCK:
        if not _READY.get("ok"):
            _self_check()
            _READY["ok"] = True


def xqrs_fast_batch(leads: np.ndarray, fs) -> list:
    """R peaks of each row of ``leads`` (n, T) as ``wfdb`` xqrs would give them.

    Returns a list of n entries: the peaks ((B,) int64, or an empty float64 array as wfdb
    returns), or None where the lead must go to the reference path (see the module docstring).
    Without numba every entry is None.
    """
    leads = np.asarray(leads)
    if leads.ndim != 2:
        raise ValueError(f"leads must be (n, T), got shape {leads.shape}")
    if not K.HAVE_NUMBA or leads.shape[0] == 0:
        return [None] * leads.shape[0]
    _ensure_ready()
    return _fast_batch(leads, fs)


def run_detector(lead: np.ndarray, fs: int, detector: str = DEFAULT_DETECTOR) -> np.ndarray:
    """R peaks of one lead (T,) with the named detector; may raise like wfdb does."""
    if detector == "xqrs":
        return reference_detect(lead, fs)
    if detector != "xqrs_fast":
        raise ValueError(f"unknown detector {detector!r}; choose one of {DETECTORS}")
    lead = np.asarray(lead)
    if lead.ndim == 1:
        got = xqrs_fast_batch(lead[None], fs)[0]
        if got is not None:
            return got
    if not K.HAVE_NUMBA and lead.ndim == 1 and np.isfinite(lead).all():
        with _fast_local_peaks():  # no numba: wfdb with the vectorised peak search (same peaks)
            return reference_detect(lead, fs)
    return reference_detect(lead, fs)


def prepare_detector(detector: str = DEFAULT_DETECTOR, fs=100) -> None:
    """Import wfdb, compute the constants of ``fs`` and compile/check the kernels, outside any timing.

    ``tokenize_array`` calls this before it starts worker processes, which (forked) inherit it.
    Raises like :func:`xqrs_fast_batch` does when the compiled kernels would differ from wfdb.
    """
    if detector not in DETECTORS:
        raise ValueError(f"unknown detector {detector!r}; choose one of {DETECTORS}")
    import wfdb.processing  # noqa: F401 - the import itself is the slow part (~1 s)

    if detector == "xqrs_fast" and K.HAVE_NUMBA:
        _ensure_ready()
        xqrs_constants(fs)
