"""Compiled per-lead loops of wfdb's XQRS R-peak detector (HeartLang Sec. 3.1 cuts words at its peaks).

wfdb 4.x ``processing.XQRS`` spends its time in three pure-Python loops; each is reproduced here
statement by statement, with the same float64 arithmetic in the same order, and compiled with
numba (no fast-math, so no reassociation and no fused multiply-add):

* :func:`local_peaks`: ``wfdb.processing.find_local_peaks`` (a scan that accepts a sample equal to
  the maximum of its window and then jumps ``radius`` samples);
* :func:`learn_beats`: the sequential part of ``XQRS._learn_init_params`` (which local maxima of
  the band-passed signal become the 8 calibration beats, which are noise);
* :func:`run_detection`: ``XQRS._run_detection`` with ``_is_qrs``, ``_update_qrs``,
  ``_update_noise``, ``_require_backsearch`` and ``_backsearch``.

Everything that is not a plain scalar recurrence stays in numpy/scipy in ``datasets/qrs/detect.py``
(the filters, the means of the learning phase, the exact cross-correlation when the decision is
close), so those values are bit-identical by construction. The kernels assume finite input; the
caller routes anything else to wfdb itself.

Without numba (``HAVE_NUMBA`` False) these functions still run as plain Python and give the same
numbers, only slowly; ``datasets/qrs/detect.py`` then uses wfdb instead.
"""

from __future__ import annotations

import math

import numpy as np

try:  # numba is a declared dependency; its absence must not change any result, only the speed
    import numba

    HAVE_NUMBA = True
except ImportError:  # pragma: no cover - exercised only on installs without numba
    numba = None
    HAVE_NUMBA = False

N_CALIB_BEATS = 8  # wfdb XQRS._learn_init_params(n_calib_beats=8)
XCORR_THRESHOLD = 0.6  # wfdb: "Classify as QRS if xcorr is large enough"
# The in-kernel cross-correlation sums in another order than numpy's BLAS dot, so it may differ
# from wfdb's in the last bits (|error| < 1e-14 for the unit-norm segments here). A decision
# closer than this to the threshold, or with a segment energy outside the safe range, is left
# to the caller, which recomputes it exactly as wfdb does.
XCORR_MARGIN = 1e-9
ENERGY_RANGE = (1e-250, 1e250)

# learn_beats status codes
LEARN_DONE = 0
LEARN_NEEDS_EXACT = 1


def _jit(fn):
    """numba.njit with an on-disk cache where the package folder is writable (no fast-math)."""
    if not HAVE_NUMBA:
        return fn
    try:
        return numba.njit(cache=True, nogil=True)(fn)
    except Exception:  # noqa: BLE001 - e.g. no cache locator for a read-only install: compile per process
        return numba.njit(nogil=True)(fn)


@_jit
def local_peaks(sig, radius):
    """``wfdb.processing.find_local_peaks(sig, radius)`` for finite ``sig`` (T,) and ``1 <= radius < T``.

    Returns ``(peaks (P,) int64, flat)``; ``flat`` is True where wfdb returns ``np.empty(0)``.
    """
    n = sig.shape[0]
    lo = sig[0]
    hi = sig[0]
    for k in range(n):
        v = sig[k]
        if v < lo:
            lo = v
        if v > hi:
            hi = v
    out = np.empty(n, dtype=np.int64)
    if lo == hi:
        return out[:0], True
    count = 0
    i = 0
    # wfdb: `while i < radius + 1: if sig[i] == max(sig[: i + radius])`, then
    # `while i < len(sig): if sig[i] == max(sig[i - radius : i + radius])`. For finite values,
    # "equal to the window maximum" is "no sample of the window is larger" (i is in its window).
    while i < n:
        start = 0 if i < radius + 1 else i - radius
        stop = min(i + radius, n)
        v = sig[i]
        is_peak = True
        for k in range(start, stop):
            if sig[k] > v:
                is_peak = False
                break
        if is_peak:
            out[count] = i
            count += 1
            i += radius
        else:
            i += 1
    return out[:count], False


@_jit
def learn_beats(sig_f, radius, qrs_width, rr_min, rr_max, wavelet, decisions):
    """The loop of ``XQRS._learn_init_params``: which local maxima of ``sig_f`` are calibration beats.

    sig_f (T,) float64 band-passed lead; wavelet (2*radius,) ``ricker(2 * radius, 4)``;
    decisions (T,) int8 indexed by sample: 1 / 0 = "xcorr > 0.6" already decided exactly,
    -1 = decide here. Returns ``(status, qrs (<=8,) int64, noise (K,) int64, rr_recent, at)``:
    ``rr_recent`` is the mean of the kept R-R intervals (NaN if none; integer sums are exact in
    any order, so this equals np.mean); status LEARN_NEEDS_EXACT means the decision for the
    peak at sample ``at`` is too close to call in this summation order (the caller decides it
    exactly, stores it in ``decisions[at]`` and calls again).
    """
    T = sig_f.shape[0]
    peaks_f, _ = local_peaks(sig_f, radius)
    n_peaks = peaks_f.shape[0]
    first = 0  # peak_nums_r[0]: first peak with index > qrs_width
    while first < n_peaks and peaks_f[first] <= qrs_width:
        first += 1
    stop = n_peaks - 1  # peak_nums_l[-1]: last peak with index <= sig_len - qrs_width
    while stop >= 0 and peaks_f[stop] > T - qrs_width:
        stop -= 1
    qrs = np.empty(N_CALIB_BEATS, dtype=np.int64)
    noise = np.empty(max(n_peaks, 1), dtype=np.int64)
    n_qrs = 0
    n_noise = 0
    if n_peaks == 0 or first == n_peaks or stop < 0:
        return LEARN_DONE, qrs[:0], noise[:0], math.nan, -1
    last_qrs_ind = -rr_max  # wfdb: last_qrs_ind = -self.rr_max
    width = 2 * radius
    # Official behaviour (wfdb): range(peak_nums_r[0], peak_nums_l[-1]) never inspects the last peak.
    for peak_num in range(first, stop):
        i = peaks_f[peak_num]
        d = decisions[i]
        if d < 0:
            energy = 0.0
            dot = 0.0
            for k in range(width):
                s = sig_f[i - radius + k]
                energy += s * s
                dot += s * wavelet[k]
            if not (ENERGY_RANGE[0] < energy < ENERGY_RANGE[1]):
                return LEARN_NEEDS_EXACT, qrs[:0], noise[:0], math.nan, i
            xcorr = dot / math.sqrt(energy)
            if not math.isfinite(xcorr) or abs(xcorr - XCORR_THRESHOLD) <= XCORR_MARGIN:
                return LEARN_NEEDS_EXACT, qrs[:0], noise[:0], math.nan, i
            d = 1 if xcorr > XCORR_THRESHOLD else 0
        # wfdb: `if xcorr > 0.6 and i - last_qrs_ind > self.rr_min`
        if d == 1 and i - last_qrs_ind > rr_min:
            last_qrs_ind = float(i)
            qrs[n_qrs] = i
            n_qrs += 1
        else:
            noise[n_noise] = i
            n_noise += 1
        if n_qrs == N_CALIB_BEATS:
            break
    # wfdb: rr = np.diff(qrs_inds); rr = rr[rr < rr_max]; rr_recent = np.mean(rr) if rr.any() else rr_init
    rr_sum = 0.0
    rr_count = 0
    for k in range(1, n_qrs):
        rr = qrs[k] - qrs[k - 1]
        if rr < rr_max:
            rr_sum += float(rr)
            rr_count += 1
    rr_recent = rr_sum / rr_count if rr_count > 0 and rr_sum != 0.0 else math.nan
    return LEARN_DONE, qrs[:n_qrs], noise[:n_noise], rr_recent, -1


@_jit
def _py_max(x, floor):
    # Python's max(x, floor) as wfdb writes it: x unless floor > x (so a NaN x stays NaN).
    return floor if floor > x else x


@_jit
def run_detection(
    sig_i, peaks_i, qrs_amp, noise_amp, rr_recent, last_qrs_ind, qrs_thr, qrs_thr_min, ref_period, rr_max
):
    """``XQRS._run_detection`` over the local peaks ``peaks_i`` (P,) int64 of ``sig_i`` (T,) float64.

    The state arguments are what ``_set_init_params`` set; ``qrs_thr_min`` is the raw
    ``conf.qrs_thr_min`` that ``_update_qrs`` uses. T-wave inspection is off
    (``t_inspect_period == 0``: wfdb never calls ``_is_twave``). Returns the R peaks (B,) int64.
    """
    n_peaks = peaks_i.shape[0]
    out = np.empty(n_peaks, dtype=np.int64)
    n_out = 0
    last_qrs_peak_num = -1  # wfdb: None
    for peak_num in range(n_peaks):
        i = peaks_i[peak_num]
        # _is_qrs(peak_num)
        if i - last_qrs_ind > ref_period and sig_i[i] > qrs_thr:
            # _update_qrs(peak_num)
            rr_new = i - last_qrs_ind
            if rr_new < rr_max:
                rr_recent = 0.875 * rr_recent + 0.125 * rr_new
            out[n_out] = i
            n_out += 1
            last_qrs_ind = float(i)
            last_qrs_peak_num = peak_num
            qrs_amp = 0.875 * qrs_amp + 0.125 * sig_i[i]
            qrs_thr = _py_max(0.25 * qrs_amp + 0.75 * noise_amp, qrs_thr_min)
        else:
            # _update_noise(peak_num)
            noise_amp = 0.875 * noise_amp + 0.125 * sig_i[i]
        # _require_backsearch(): never on the last peak
        if peak_num == n_peaks - 1:
            continue
        if peaks_i[peak_num + 1] - last_qrs_ind > rr_recent * 1.66:
            # _backsearch(): the range is fixed when the loop starts
            if last_qrs_peak_num >= 0:
                for back_num in range(last_qrs_peak_num + 1, peak_num + 1):
                    j = peaks_i[back_num]
                    if j - last_qrs_ind > ref_period and sig_i[j] > qrs_thr / 2:
                        rr_new = j - last_qrs_ind
                        if rr_new < rr_max:
                            rr_recent = 0.875 * rr_recent + 0.125 * rr_new
                        out[n_out] = j
                        n_out += 1
                        last_qrs_ind = float(j)
                        # Official behaviour (wfdb): _update_qrs stores the main loop's peak
                        # number, not the back-searched one.
                        last_qrs_peak_num = peak_num
                        qrs_amp = 0.75 * qrs_amp + 0.25 * sig_i[j]
                        qrs_thr = _py_max(0.25 * qrs_amp + 0.75 * noise_amp, qrs_thr_min)
    return out[:n_out]
