"""QRS tokenizer: ECG words and sentences (HeartLang paper, Sec. 3.1 "ECG words and sentences").

One record ``signal: (n_leads, T)`` becomes one *sentence*:

* R peaks are detected once, with ``wfdb.processing.xqrs_detect`` on the first used lead;
* every beat of every used lead is cut into a *word* of ``token_len`` (96) samples placed in a
  zero vector so that the R peak usually sits at index ``token_len // 2`` (48);
* words are ordered lead-major (all beats of lead 0, then lead 1, ...), zero-padded or truncated
  to ``max_len`` (256) words;
* ``in_chans`` = standard lead index + 1 and ``in_times`` = R // fs + 1 (0 marks padding).

The output equals the original implementation's bit for bit (``shared/fixtures/tokenizer_ptbxl.npz``).
Robustness rules (NaN, flat leads, no beat, detector errors) are documented in docs/tokenizer.md;
this module never raises on bad *record content*, it reports the problem in ``info`` instead.
Parallel processing of whole arrays lives in ``datasets/qrs/parallel.py``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from datasets.qrs.detect import DETECTORS, run_detector

NAN_POLICIES = ("official", "interpolate")

# Reasons why a record yields an empty (all-padding) sentence.
REASON_NONFINITE = "nonfinite_detection_lead"
REASON_FLAT = "flat_detection_lead"
REASON_NO_BEAT = "no_beat_detected"
REASON_DETECTOR_ERROR = "detector_error"


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


def detect_r_peaks(lead: np.ndarray, fs: int = 100, detector: str = "xqrs") -> tuple[np.ndarray, str | None]:
    """R-peak sample indices of one lead with ``wfdb`` xqrs (``detector``: see datasets/qrs/detect.py).

    lead: (T,) float. Returns ``(qrs_inds (B,) int64, error)``; on a detector exception the peaks
    are empty and ``error`` holds the message (e.g. records shorter than the filter pad length).
    """
    if detector not in DETECTORS:
        raise ValueError(f"detector must be one of {DETECTORS}, got {detector!r}")
    try:
        # NaN/inf make xqrs's filters output NaN, so it finds no peak: the original did the same.
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            qrs = run_detector(lead, fs, detector)
    except Exception as exc:  # noqa: BLE001 - a bad record must never stop a corpus-wide run
        return np.zeros(0, dtype=np.int64), f"{type(exc).__name__}: {exc}"
    return np.asarray(qrs, dtype=np.int64), None


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
    # np.where (not a multiply by the mask) so that padding is +0.0 even next to NaN/negative samples.
    words = np.where(valid[None], x[:, src], np.float32(0))  # (L, B, token_len)
    return words.reshape(L * len(start), token_len)


def tokenize_record(
    signal: np.ndarray,
    used_channels=None,
    fs: int = 100,
    max_len: int = 256,
    token_len: int = 96,
    nan_policy: str = "official",
    detector: str = "xqrs",
) -> tuple[np.ndarray, np.ndarray, np.ndarray, RecordInfo]:
    """Tokenize one record into an ECG sentence.

    signal: (n_leads, T) float (12 x 1000 at 100 Hz in the pipeline). used_channels: lead indices
    into ``signal`` (default all); the first one drives R-peak detection.
    Returns ``data (max_len, token_len) float32, in_chans (max_len,) int32, in_times (max_len,)
    int32, info``. ``detector``: "xqrs" (reference) or "xqrs_fast" (same peaks, ~2x faster).
    Never raises on record content (NaN, flat, no beat, detector failure).
    """
    if nan_policy not in NAN_POLICIES:
        raise ValueError(f"nan_policy must be one of {NAN_POLICIES}, got {nan_policy!r}")
    signal = np.asarray(signal)
    if signal.ndim != 2:
        raise ValueError(f"signal must be (n_leads, T), got shape {signal.shape}")
    chans = np.arange(signal.shape[0]) if used_channels is None else np.asarray(used_channels, dtype=np.int64)
    if chans.ndim != 1 or chans.size == 0 or chans.min() < 0 or chans.max() >= signal.shape[0]:
        raise ValueError(f"used_channels {chans.tolist()} out of range for a {signal.shape[0]}-lead signal")
    src = signal[chans]  # (L, T) in the caller's dtype: the original ran xqrs on it as given
    if not np.issubdtype(src.dtype, np.floating):
        src = src.astype(np.float64)

    info = RecordInfo()
    info.nonfinite_input = not bool(np.isfinite(src).all())
    if info.nonfinite_input and nan_policy == "interpolate":
        src = _interpolate_nonfinite(src)
    x = src.astype(np.float32, copy=False)  # words are float32, as the original's saved arrays
    if x.shape[1] > 0:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN leads: nanmax is NaN, not flat
            info.flat_leads = int((np.nanmax(x, axis=1) == np.nanmin(x, axis=1)).sum())

    data = np.zeros((max_len, token_len), dtype=np.float32)
    in_chans = np.zeros(max_len, dtype=np.int32)
    in_times = np.zeros(max_len, dtype=np.int32)

    qrs, info.error = detect_r_peaks(src[0], fs, detector)
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
        return data, in_chans, in_times, info

    words = cut_words(x, qrs, token_len)  # (L * B, token_len)
    info.num_words = int(words.shape[0])
    info.truncated = info.num_words > max_len
    n = min(info.num_words, max_len)  # Official behaviour: truncation drops the last leads' beats
    data[:n] = words[:n]
    in_chans[:n] = np.repeat(chans + 1, qrs.size)[:n]
    in_times[:n] = np.tile(qrs // fs + 1, chans.size)[:n]
    info.nonfinite_words = int((~np.isfinite(data[:n])).any(axis=1).sum())
    return data, in_chans, in_times, info
