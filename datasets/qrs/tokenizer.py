"""QRS tokenizer: ECG words and sentences (HeartLang paper, Sec. 3.1 "ECG words and sentences").

One record ``signal: (n_leads, T)`` becomes one *sentence*:

* R peaks are detected once, on the first used lead, with wfdb's XQRS (``xqrs_fast``, the default,
  gives exactly ``wfdb.processing.xqrs_detect``'s peaks, faster; see datasets/qrs/detect.py);
* every beat of every used lead is cut into a *word* of ``token_len`` (96) samples placed in a
  zero vector so that the R peak usually sits at index ``token_len // 2`` (48);
* words are ordered lead-major (all beats of lead 0, then lead 1, ...), zero-padded or truncated
  to ``max_len`` (256) words;
* ``lead_ids`` = standard lead index + 1 and ``time_ids`` = R // fs + 1 (0 marks padding).

The output equals the original implementation's bit for bit (``shared/fixtures/tokenizer_ptbxl.npz``).
Robustness rules (NaN, flat leads, no beat, detector errors) are documented in docs/tokenizer.md;
this module never raises on bad *record content*, it reports the problem in ``info`` instead.
``tokenize_records`` does a batch of records at once (the detector's filters run on all detection
leads together); parallel processing of whole arrays lives in ``datasets/qrs/parallel.py``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from datasets.qrs.detect import DEFAULT_DETECTOR, DETECTORS, run_detector, xqrs_fast_batch

#: What to do with NaN/inf samples (and samples beyond float32) in the used leads (docs/tokenizer.md):
#: official - as the original: NaN in the detection lead -> empty sentence, NaN copied into words
#:            (counted and named in the summary: such words make VQ-HBR's loss NaN);
#: interpolate - linear interpolation between finite neighbours of the lead, then tokenise;
#: zero - the bad samples become 0, then tokenise;
#: skip - the record's sentence is left empty (all padding, lead id 0); the row stays so labels align.
NAN_POLICIES = ("official", "interpolate", "zero", "skip")

# Reasons why a record yields an empty (all-padding) sentence.
REASON_NONFINITE = "nonfinite_detection_lead"
REASON_FLAT = "flat_detection_lead"
REASON_NO_BEAT = "no_beat_detected"
REASON_DETECTOR_ERROR = "detector_error"
REASON_NONFINITE_SKIPPED = "nonfinite_input_skipped"  # nan_policy="skip"
_F32_MAX = float(np.finfo(np.float32).max)


@dataclass
class RecordInfo:
    """What happened to one record (kept small: it travels back from worker processes)."""

    num_beats: int = 0
    num_words: int = 0  # words before truncation (num_beats * n_used_leads)
    truncated: bool = False  # more than max_len words: the tail (last leads) was dropped
    reason: str | None = None  # why the sentence is empty, None if it has words
    error: str | None = None  # detector exception text, if any
    nonfinite_input: bool = False  # NaN/inf anywhere in the used leads
    nonfinite_words: int = 0  # kept words that contain NaN/inf (official mode copies them)
    flat_leads: int = 0  # used leads that are constant over the whole record
    detector_fallback: bool = False  # xqrs_fast handed the detection lead to wfdb (NaN, too short, ...)
    qrs_inds: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))


def _interpolate_nonfinite(x: np.ndarray) -> np.ndarray:
    """Replace NaN/inf samples of each lead by linear interpolation between finite neighbours.

    x: (L, T) float. Samples before the first / after the last finite one take its value; a lead
    with no finite sample becomes all zero.
    """
    x = x.copy()
    t = np.arange(x.shape[1])
    for lead in x:  # loop over <= 12 leads only, and only for records that contain NaN/inf
        ok = np.isfinite(lead)
        if ok.all():
            continue
        lead[:] = np.interp(t, t[ok], lead[ok]) if ok.any() else 0.0
    return x


class Detection(tuple):
    """``(qrs_inds, error)`` as returned by :func:`detect_r_peaks`, plus ``.fallback``."""

    fallback: bool = False


def _detection(qrs, error, fallback: bool) -> Detection:
    det = Detection((qrs, error))
    det.fallback = fallback
    return det


def _reference_peaks(lead: np.ndarray, fs: int) -> Detection:
    try:
        # NaN/inf make xqrs's filters output NaN, so it finds no peak: the original did the same.
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            qrs = run_detector(lead, fs, "xqrs")
    except Exception as exc:  # noqa: BLE001 - a bad record must never stop a corpus-wide run
        return _detection(np.zeros(0, dtype=np.int64), f"{type(exc).__name__}: {exc}", False)
    return _detection(np.asarray(qrs, dtype=np.int64), None, False)


def detect_r_peaks_batch(leads: np.ndarray, fs: int = 100, detector: str = DEFAULT_DETECTOR) -> list:
    """R peaks of each detection lead of ``leads`` (n, T): a list of :class:`Detection`.

    With ``xqrs_fast`` the filters run on all rows at once; rows the fast path cannot promise
    to match go to wfdb (``.fallback`` True). Failures of the fast path itself are not caught
    (they are bugs, never a reason to write an empty sentence); wfdb's errors on bad records are.
    """
    if detector not in DETECTORS:
        raise ValueError(f"detector must be one of {DETECTORS}, got {detector!r}")
    leads = np.asarray(leads)
    if detector == "xqrs":
        return [_reference_peaks(lead, fs) for lead in leads]
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # overflow in the filters: those rows fall back
        fast = xqrs_fast_batch(leads, fs)
    out = []
    for lead, qrs in zip(leads, fast):
        if qrs is None:
            ref = _reference_peaks(lead, fs)
            out.append(_detection(ref[0], ref[1], True))
        else:
            out.append(_detection(np.asarray(qrs, dtype=np.int64), None, False))
    return out


def detect_r_peaks(lead: np.ndarray, fs: int = 100, detector: str = DEFAULT_DETECTOR) -> Detection:
    """R-peak sample indices of one lead with wfdb's xqrs (``detector``: see datasets/qrs/detect.py).

    lead: (T,) float. Returns ``(qrs_inds (B,) int64, error)``; on a detector exception the peaks
    are empty and ``error`` holds the message (e.g. records shorter than the filter pad length).
    """
    lead = np.asarray(lead)
    if lead.ndim != 1 and detector in DETECTORS:
        return _reference_peaks(lead, fs)  # wfdb's own error message ("sig must be a 1d numpy array")
    return detect_r_peaks_batch(lead[None], fs, detector)[0]


def word_bounds(qrs_inds: np.ndarray, T: int, token_len: int = 96) -> tuple[np.ndarray, ...]:
    """Per-beat source span and placement of each word (the original's arithmetic, vectorised).

    qrs_inds: (B,) sorted R peaks. Returns ``start, length, offset`` (each (B,) int64): word b is
    ``lead[start:start+length]`` written at ``word[offset:offset+length]``.
    """
    q = np.asarray(qrs_inds, dtype=np.int64)
    half = token_len // 2
    mid = (q[:-1] + q[1:]) // 2  # boundaries between neighbouring beats
    start = np.concatenate([[max(0, q[0] - half)], mid])
    end = np.concatenate([mid, [min(T, q[-1] + half)]])
    # Spans longer than a word are re-centred on the R peak (clipped to the record).
    # Official behaviour: the test is strictly "> token_len"; a span of exactly 96 is kept as is.
    long = end - start > token_len
    start = np.where(long, np.maximum(q - half, 0), start)
    end = np.where(long, np.minimum(q + half, T), end)
    # Official behaviour: the segment is shifted so that R lands at `half` only when fewer than
    # `half` samples precede R; otherwise it starts at index 0 and R lands later (e.g. R peaks
    # [200, 300, 310]: beat 1 spans 250..305 and its R peak sits at index 50).
    offset = np.maximum(half - (q - start), 0)
    # Official behaviour: a segment that would run past the word end is cut (R peaks
    # [280, 300, 400]: beat 1 spans 290..350, is written from index 38 and loses 2 samples).
    length = np.minimum(end - start, token_len - offset)
    return start, length, offset


def cut_words(x: np.ndarray, qrs_inds: np.ndarray, token_len: int = 96) -> np.ndarray:
    """All words of all leads in one gather: x (L, T), qrs_inds (B,) -> (L * B, token_len), lead-major."""
    L, T = x.shape
    start, length, offset = word_bounds(qrs_inds, T, token_len)
    k = np.arange(token_len)
    valid = (k >= offset[:, None]) & (k < (offset + length)[:, None])  # (B, token_len)
    src = np.clip(start[:, None] + k - offset[:, None], 0, T - 1)  # (B, token_len)
    words = x[:, src]  # (L, B, token_len), a fresh copy
    # Assigned (not a multiply by the mask) so that padding is +0.0 even next to NaN/negative samples;
    # an in-place write is ~2x faster than np.where over the whole gather.
    words[:, ~valid] = 0
    return words.reshape(L * len(start), token_len)


def _used_leads(signal: np.ndarray, used_channels, nan_policy: str) -> tuple[np.ndarray, np.ndarray, bool]:
    """Checked ``(leads (L,), src (L, T) float, nonfinite_input)``: the used leads' indices; src is what
    detection and cutting see."""
    if nan_policy not in NAN_POLICIES:
        raise ValueError(f"nan_policy must be one of {NAN_POLICIES}, got {nan_policy!r}")
    signal = np.asarray(signal)
    if signal.ndim != 2:
        raise ValueError(f"signal must be (n_leads, T), got shape {signal.shape}")
    leads = np.arange(signal.shape[0]) if used_channels is None else np.asarray(used_channels, dtype=np.int64)
    if leads.ndim != 1 or leads.size == 0 or leads.min() < 0 or leads.max() >= signal.shape[0]:
        raise ValueError(f"used_channels {leads.tolist()} out of range for a {signal.shape[0]}-lead signal")
    src = signal[leads]  # (L, T) in the caller's dtype: the original ran xqrs on it as given
    if not np.issubdtype(src.dtype, np.floating):
        src = src.astype(np.float64)
    if nan_policy == "official":
        return leads, src, not bool(np.isfinite(src).all())
    # Samples beyond the float32 range would become inf in the float32 words: they count as non-finite.
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(src) | (np.abs(src) > _F32_MAX)
    nonfinite = bool(bad.any())
    if nonfinite and nan_policy in ("interpolate", "zero"):
        src = np.where(bad, np.nan, src).astype(src.dtype, copy=False)
        src = _interpolate_nonfinite(src) if nan_policy == "interpolate" else np.nan_to_num(src, nan=0.0)
    return leads, src, nonfinite  # "skip": tokenize_record leaves the sentence empty


def tokenize_record(
    signal: np.ndarray,
    used_channels=None,
    fs: int = 100,
    max_len: int = 256,
    token_len: int = 96,
    nan_policy: str = "official",
    detector: str = DEFAULT_DETECTOR,
    peaks: tuple | None = None,
    _prepared: tuple | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, RecordInfo]:
    """Tokenize one record into an ECG sentence.

    signal: (n_leads, T) float (12 x 1000 at 100 Hz in the pipeline). used_channels: lead indices
    into ``signal`` (default all); the first one drives R-peak detection.
    Returns ``data (max_len, token_len) float32, lead_ids (max_len,) int32, time_ids (max_len,)
    int32, info``. ``detector``: "xqrs_fast" (default) or "xqrs" (wfdb itself): the same peaks.
    ``peaks``: ``(detect_r_peaks result, the lead it was computed on)`` for this record
    (``tokenize_records`` passes it; the lead must equal this record's detection lead).
    Never raises on record content (NaN, flat, no beat, detector failure).
    """
    # _prepared: this signal's _used_leads result, when tokenize_records already computed it.
    leads, src, nonfinite = _used_leads(signal, used_channels, nan_policy) if _prepared is None else _prepared
    info = RecordInfo()
    info.nonfinite_input = nonfinite
    if nonfinite and nan_policy == "skip":
        info.reason = REASON_NONFINITE_SKIPPED
        z = np.zeros(max_len, dtype=np.int32)
        return np.zeros((max_len, token_len), dtype=np.float32), z, z.copy(), info
    x = src.astype(np.float32, copy=False)  # words are float32, as the original's saved arrays
    if x.shape[1] > 0:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN leads: nanmax is NaN, not flat
            info.flat_leads = int((np.nanmax(x, axis=1) == np.nanmin(x, axis=1)).sum())

    data = np.zeros((max_len, token_len), dtype=np.float32)
    lead_ids = np.zeros(max_len, dtype=np.int32)
    time_ids = np.zeros(max_len, dtype=np.int32)

    if peaks is None:
        det = detect_r_peaks(src[0], fs, detector)
    else:
        det, lead = peaks
        # A batch must have detected on what we would (by construction when _prepared is given).
        if _prepared is None and not np.array_equal(lead, src[0], equal_nan=True):
            raise RuntimeError("tokenize_record: the precomputed peaks belong to another detection lead")
    qrs, info.error = det
    info.detector_fallback = bool(getattr(det, "fallback", False))
    info.qrs_inds = qrs
    info.num_beats = int(qrs.size)
    if qrs.size == 0:
        # Official behaviour: a record without R peaks becomes an all-padding sentence.
        lead0 = src[0]
        if info.error is not None or lead0.size == 0:
            info.reason = REASON_DETECTOR_ERROR
        elif not np.isfinite(lead0).all():
            info.reason = REASON_NONFINITE
        elif lead0.max() == lead0.min():
            info.reason = REASON_FLAT
        else:
            info.reason = REASON_NO_BEAT
        return data, lead_ids, time_ids, info

    words = cut_words(x, qrs, token_len)  # (L * B, token_len)
    info.num_words = int(words.shape[0])
    info.truncated = info.num_words > max_len
    n = min(info.num_words, max_len)  # Official behaviour: truncation drops the last leads' beats
    data[:n] = words[:n]
    lead_ids[:n] = np.repeat(leads + 1, qrs.size)[:n]
    time_ids[:n] = np.tile(qrs // fs + 1, leads.size)[:n]
    info.nonfinite_words = int((~np.isfinite(data[:n])).any(axis=1).sum())
    return data, lead_ids, time_ids, info


def tokenize_records(
    signals: np.ndarray,
    used_channels=None,
    fs: int = 100,
    max_len: int = 256,
    token_len: int = 96,
    nan_policy: str = "official",
    detector: str = DEFAULT_DETECTOR,
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, RecordInfo]]:
    """``tokenize_record`` for each of ``signals`` (n, n_leads, T), with one batched R-peak detection.

    The same output as calling ``tokenize_record`` record by record (tested), faster: the
    detector's filters run once over all n detection leads.
    """
    signals = np.asarray(signals)
    if signals.ndim != 3:
        raise ValueError(f"signals must be (n, n_leads, T), got shape {signals.shape}")
    if len(signals) == 0:
        return []
    prepared = [_used_leads(s, used_channels, nan_policy) for s in signals]
    leads = np.stack([src[0] for _, src, _ in prepared])
    found = detect_r_peaks_batch(leads, fs, detector)
    kw = dict(fs=fs, max_len=max_len, token_len=token_len, nan_policy=nan_policy, detector=detector)
    return [
        tokenize_record(s, used_channels, peaks=(p, lead), _prepared=prep, **kw)
        for s, p, lead, prep in zip(signals, found, leads, prepared)
    ]
