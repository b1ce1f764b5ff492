"""Signal operations shared by every preprocessing source (docs/preprocessing.md; paper Sec. 4.1 data).

All functions take and return lead-major arrays ``(n_leads, n_samples)``; none of them
normalises per record unless its name says so. The chain used for MIMIC-IV-ECG is

    fill_nonfinite (+-6 sample mean) -> resample_fft (500 -> 100 Hz) -> reorder_leads -> bandpass

CPSC2018 and CSN use ``minmax_scale`` instead of the NaN fill, PTB-XL uses ``resample_fft``
only when its 500 Hz records are requested.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import numpy as np
from scipy import signal as sps

#: The lead order of every array this project writes (the paper's and the original scripts' layout).
STANDARD_LEADS: tuple[str, ...] = (
    "I",
    "II",
    "III",
    "aVR",
    "aVL",
    "aVF",
    "V1",
    "V2",
    "V3",
    "V4",
    "V5",
    "V6",
)

TARGET_FS = 100  # Hz, every output array is 10 s at 100 Hz
TARGET_LEN = 1000  # samples
NAN_FILL_HALF_WINDOW = 6  # samples each side (docs/preprocessing.md, MIMIC step 1)
#: Largest plausible |sample| in mV. ECGs stay within a few tens of mV; 1000 mV only flags unit or
#: header-gain errors (e.g. a gain 1000x too small), which would overflow float32 or poison a scaler.
MAX_ABS_MV = 1000.0


class SignalError(ValueError):
    """A record that cannot be turned into a valid (12, 1000) array; the message is the skip reason."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def lead_permutation(sig_names: Sequence[str], target: Sequence[str] = STANDARD_LEADS) -> np.ndarray:
    """Indices ``idx`` such that ``sig[idx]`` has the leads in ``target`` order.

    Names are matched case-insensitively (PTB-XL writes ``AVR``, MIMIC ``aVR``). Raises
    ``SignalError("missing_leads")`` if a target lead is absent and ``SignalError("duplicate_leads")``
    if a name occurs twice, because picking one of two copies silently would hide a broken header.
    """
    lowered = [str(n).strip().lower() for n in sig_names]
    if len(set(lowered)) != len(lowered):
        raise SignalError("duplicate_leads", f"header lead names {list(sig_names)}")
    missing = [t for t in target if t.lower() not in lowered]
    if missing:
        raise SignalError("missing_leads", f"missing {missing} in header leads {list(sig_names)}")
    return np.array([lowered.index(t.lower()) for t in target], dtype=np.int64)


def reorder_leads(sig: np.ndarray, sig_names: Sequence[str]) -> np.ndarray:
    """sig: (n_leads, T) in header order -> (12, T) in STANDARD_LEADS order."""
    return sig[lead_permutation(sig_names)]


def fill_nonfinite(sig: np.ndarray, half_window: int = NAN_FILL_HALF_WINDOW) -> np.ndarray:
    """Replace NaN / +-inf samples by the mean of the finite samples within +-``half_window``.

    sig: (n_leads, T) -> float64 copy (n_leads, T) with only finite values.

    Rule (documented in docs/preprocessing.md): non-finite samples are visited left to right and
    each takes the mean of the finite values in ``[t - 6, t + 6]`` of the array *as filled so far*,
    so a run longer than the window is filled progressively from its left edge (what an in-place
    loop does). Samples whose window holds no finite value at all are left for a further pass;
    passes repeat until nothing changes. A lead with no finite sample at all cannot be filled and
    raises ``SignalError("all_nan_lead")``: the record is skipped, never zero-filled.
    """
    out = np.array(sig, dtype=np.float64, copy=True)
    bad = ~np.isfinite(out)
    if not bad.any():
        return out
    out[bad] = np.nan
    dead = np.where(bad.all(axis=1))[0]
    if dead.size:
        raise SignalError("all_nan_lead", f"lead indices {dead.tolist()} have no finite sample")
    n = out.shape[1]
    while True:
        rows, cols = np.nonzero(np.isnan(out))
        if rows.size == 0:
            return out
        progress = False
        for r, c in zip(rows.tolist(), cols.tolist()):
            window = out[r, max(0, c - half_window) : min(n, c + half_window + 1)]
            finite = window[~np.isnan(window)]
            if finite.size:
                out[r, c] = finite.mean()
                progress = True
        if not progress:  # cannot happen while every lead has a finite sample; guards an endless loop
            raise SignalError("all_nan_lead", "non-finite samples could not be filled")


def resample_fft(sig: np.ndarray, n_out: int = TARGET_LEN) -> np.ndarray:
    """FFT resampling (``scipy.signal.resample``) along time: (n_leads, T) -> (n_leads, n_out)."""
    if sig.shape[-1] == n_out:
        return np.asarray(sig, dtype=np.float64)
    return sps.resample(sig, n_out, axis=-1)


@lru_cache(maxsize=8)
def butter_bandpass(low: float = 0.67, high: float = 40.0, fs: float = TARGET_FS, order: int = 5):
    """(b, a) coefficients of the Butterworth band-pass, as ``scipy.signal.butter`` returns them."""
    nyq = 0.5 * fs
    return sps.butter(order, [low / nyq, high / nyq], btype="bandpass")


def bandpass(
    sig: np.ndarray, low: float = 0.67, high: float = 40.0, fs: float = TARGET_FS, order: int = 5
) -> np.ndarray:
    """Zero-phase band-pass, (n_leads, T) -> (n_leads, T).

    # Official behaviour: (b, a) coefficients + ``filtfilt`` with its default padding
    # (padtype="odd", padlen=3*max(len(a), len(b))) rather than the numerically safer SOS form,
    # so that our arrays equal the original's.
    """
    b, a = butter_bandpass(low, high, fs, order)
    return sps.filtfilt(b, a, sig, axis=-1)


def minmax_scale(sig: np.ndarray, low: float = -3.0, high: float = 3.0) -> np.ndarray:
    """Record-wise min-max scaling of all leads together to [low, high]: (n_leads, T) -> (n_leads, T).

    A flat record (max == min) raises ``SignalError("flat_record")``: it has no information and
    dividing by zero would produce NaN.
    """
    x = np.asarray(sig, dtype=np.float64)
    lo, hi = float(x.min()), float(x.max())
    if not np.isfinite(lo) or not np.isfinite(hi):
        raise SignalError("nonfinite_samples", "record holds NaN or inf samples")
    if hi == lo:
        raise SignalError("flat_record", f"all samples equal {lo}")
    return (x - lo) / (hi - lo) * (high - low) + low


def check_record(sig: np.ndarray, what: str = "") -> np.ndarray:
    """The one content rule of every source, applied to the raw record in mV (docs/robustness.md).

    * NaN/inf samples -> ``SignalError("nonfinite_samples")`` (MIMIC fills short gaps first);
    * a sample beyond +-``MAX_ABS_MV`` -> ``SignalError("implausible_amplitude")``: no ECG reaches it;
      it is a header gain/unit error, and such a record would overflow float32 or dominate a scaler;
    * every sample of every lead equal (all-zero, or a disconnected recorder) ->
      ``SignalError("flat_record")``: no information. A record with only some flat leads is kept
      (the tokenizer counts them).
    Returns ``sig`` unchanged.
    """
    where = f"{what}: " if what else ""
    x = np.asarray(sig)
    if not np.isfinite(x).all():
        raise SignalError("nonfinite_samples", f"{where}{int((~np.isfinite(x)).sum())} NaN/inf samples")
    if x.size == 0:
        raise SignalError("wrong_shape", f"{where}no samples")
    peak = float(np.abs(x).max())
    if peak > MAX_ABS_MV:
        raise SignalError(
            "implausible_amplitude",
            f"{where}|sample| up to {peak:.3g} > {MAX_ABS_MV:g} mV (header gain/units?)",
        )
    if float(x.max()) == float(x.min()):
        raise SignalError("flat_record", f"{where}all samples equal {float(x.flat[0]):g}")
    return sig


def finite_float32(x: np.ndarray, what: str = "") -> np.ndarray:
    """The last step of every chain: cast to float32 and refuse (``SignalError("nonfinite_output")``) a
    result holding NaN/inf, so no step can write a non-finite value into a data set."""
    out = np.asarray(x, dtype=np.float32)
    if not np.isfinite(out).all():
        where = f"{what}: " if what else ""
        raise SignalError(
            "nonfinite_output", f"{where}{int((~np.isfinite(out)).sum())} NaN/inf values after processing"
        )
    return out


def mimic_chain(sig: np.ndarray, sig_names: Sequence[str], what: str = "") -> np.ndarray:
    """The MIMIC-IV-ECG chain on one record: (n_leads, 5000) at 500 Hz -> (12, 1000) float32 at 100 Hz."""
    x = check_record(fill_nonfinite(sig), what)
    x = resample_fft(x, TARGET_LEN)
    x = reorder_leads(x, sig_names)
    x = bandpass(x)
    return finite_float32(x, what)
