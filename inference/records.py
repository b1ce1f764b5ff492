"""Raw ECG records -> the (12, 1000) 100 Hz arrays a checkpoint was trained on (paper Sec. 4.1 data).

A record is read from a WFDB header (``.hea`` + ``.dat`` / ``.mat``: PTB-XL, MIMIC-IV-ECG, CSN, CPSC2018
as CinC 2020), an ICBEB 2018 ``.mat`` (CPSC2018; 500 Hz, leads in standard order) or given as an array
with its sampling rate. :func:`prepare_record` then applies the preprocessing of one source, through that
source's own functions in ``datasets/preprocess`` (no second copy here):

========  =====================================================================================  ===========
chain     steps (``datasets.preprocess``)                                                         length rule
========  =====================================================================================  ===========
mimic     ``signal.mimic_chain``: NaN filled from +-6 samples, FFT resample to 1000, standard     first 10 s
          lead order, Butterworth band-pass 0.67-40 Hz (order 5, filtfilt); mV, no scaling
ptbxl     ``ptbxl.ptbxl_chain``: standard lead order, FFT resample to 1000 (records100 as is),    first 10 s
          then ``ptbxl.standardise`` with the subset's ``scaler.json`` (required)
cpsc2018  ``cpsc2018.cpsc_chain``: first 5 s zero-padded to 10 s, min-max [-3, 3], resample       first 5 s
csn       ``csn.csn_chain``: min-max [-3, 3], FFT resample to 1000, band-pass 0.67-40 Hz           first 10 s
========  =====================================================================================  ===========

Which chain matches which checkpoint: the pre-trained HeartLang (released, or ours pre-trained on MIMIC-IV
or the synthetic MIMIC-format cohort) and the VQ-HBR tokenizer saw ``mimic``; a probe / fine-tuned model
saw the chain of its downstream source (``ptbxl`` with the scaler of the label subset it was trained on).

Rules (each violation raises ``SignalError`` naming the record, the reason and the rule; never IndexError):
* the sampling rate must be known (header, ICBEB = 500 Hz, or ``fs=`` for arrays) and at least 100 Hz;
* the record must hold at least the chain's window (10 s, 5 s for ``cpsc2018``); longer records give
  their first 10 s (``cpsc2018``: its official first 5 s). MIMIC-IV-ECG, PTB-XL and CSN records are 10 s,
  so their preprocessing never needed the cut; shorter records are refused, never zero-padded;
* leads are put in the order I, II, III, aVR, aVL, aVF, V1-V6 by their header names (case-insensitive:
  PTB-XL writes ``AVR``); extra leads are dropped; a missing or duplicated lead is an error. An array
  without names must have exactly 12 leads, taken to be in the standard order;
* NaN / inf samples inside the window: ``mimic`` fills them as its preprocessing does (a lead without
  any finite sample is an error); the other chains refuse the record, as their preprocessing does;
* the preprocessing's content rule (``signal.check_record``): a sample beyond 1000 mV (a header gain
  error) or a completely flat record is refused; so is a record in which no R peak is found.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datasets.preprocess.cpsc2018 import cpsc_chain
from datasets.preprocess.cpsc2018 import find_records as find_wfdb_and_icbeb
from datasets.preprocess.csn import csn_chain
from datasets.preprocess.ptbxl import load_scaler, ptbxl_chain, standardise
from datasets.preprocess.records import read_icbeb_mat, read_wfdb
from datasets.preprocess.signal import (
    STANDARD_LEADS,
    TARGET_FS,
    TARGET_LEN,
    SignalError,
    check_record,
    finite_float32,
    lead_permutation,
    mimic_chain,
)

CHAINS = {
    "mimic": "first 10 s > fill_nonfinite(+-6) > resample_fft(1000) > reorder_leads > butter(5, 0.67-40 Hz) filtfilt",
    "ptbxl": "first 10 s > reorder_leads > resample_fft(1000) > (x - mean) / std (scaler.json of the subset)",
    "cpsc2018": "reorder_leads > first 5 s zero-padded to 10 s > minmax [-3, 3] > resample_fft(1000)",
    "csn": "reorder_leads > first 10 s > minmax [-3, 3] > resample_fft(1000) > butter(5, 0.67-40 Hz) filtfilt",
}
MIN_FS = float(TARGET_FS)  # Hz: below it the 96-sample words would have to be invented by upsampling
ICBEB_FS = 500.0  # ICBEB 2018 .mat files carry no header; the data set is recorded at 500 Hz
WINDOW_S = {"mimic": 10.0, "ptbxl": 10.0, "cpsc2018": 5.0, "csn": 10.0}  # seconds a chain reads


@dataclass(frozen=True)
class ECGRecord:
    """One raw record. signal: (n_leads, T) in physical units (mV); lead_names: header order or None."""

    name: str
    signal: np.ndarray
    fs: float | None
    lead_names: tuple[str, ...] | None = None


def read_record(path: str | os.PathLike) -> ECGRecord:
    """A WFDB record (``x``, ``x.hea``, ``x.dat``, or ``x.mat`` beside ``x.hea``) or an ICBEB 2018 ``x.mat``."""
    p = Path(path)
    if p.suffix in (".hea", ".dat") or (p.suffix == ".mat" and p.with_suffix(".hea").is_file()):
        base = p.with_suffix("")
    elif p.suffix == ".mat":
        return ECGRecord(str(p), read_icbeb_mat(p), ICBEB_FS, STANDARD_LEADS)
    elif Path(f"{p}.hea").is_file():
        base = p
    else:
        raise SignalError("missing_file", f"{path}: no WFDB header ({p.name}.hea) and not a .mat file")
    if not Path(f"{base}.hea").is_file():
        raise SignalError("missing_file", f"{path}: WFDB header {base}.hea not found")
    sig, names, fs, _ = read_wfdb(base)
    return ECGRecord(str(base), sig, fs, tuple(names))


def find_records(paths: Sequence[str | os.PathLike]) -> tuple[list[str], list[str]]:
    """Record paths for ``paths`` (records, or folders searched recursively for ``*.hea`` and header-less
    ICBEB ``*.mat``), in the given order, folders sorted by record name; and the paths left out because a
    folder holds a record of the same name twice (as the CPSC2018 preprocessing reports them)."""
    out, dups, seen = [], [], set()
    for path in paths:
        p = Path(path)
        if p.is_dir():
            refs, d = find_wfdb_and_icbeb(p)
            items = [r.path for r in refs]
            dups += d
        else:
            items = [str(p)]
        for item in items:
            q = Path(item)
            wfdb_file = q.suffix in (".hea", ".dat") or (
                q.suffix == ".mat" and q.with_suffix(".hea").is_file()
            )
            key = os.path.abspath(q.with_suffix("") if wfdb_file else q)
            if key not in seen:
                seen.add(key)
                out.append(item)
    return out, dups


def _check_fs(name: str, fs) -> float:
    if fs is None:
        raise SignalError("missing_fs", f"{name}: sampling rate unknown; pass fs= in Hz (e.g. fs=500)")
    try:
        fs = float(fs)
    except (TypeError, ValueError):
        raise SignalError("wrong_fs", f"{name}: sampling rate {fs!r} is not a number") from None
    if not math.isfinite(fs) or fs < MIN_FS:
        raise SignalError(
            "wrong_fs", f"{name}: sampling rate {fs:g} Hz; the rule is >= {MIN_FS:g} Hz (records are resampled "
            f"to {TARGET_FS} Hz, never up from below it)",
        )  # fmt: skip
    return fs


def _check_leads(name: str, sig: np.ndarray, lead_names) -> np.ndarray:
    """Index ``idx`` with ``sig[idx]`` in standard lead order."""
    n = sig.shape[0]
    if lead_names is None:
        if n != len(STANDARD_LEADS):
            hint = " (time first? pass signal.T)" if sig.shape[1] == len(STANDARD_LEADS) else ""
            raise SignalError(
                "wrong_shape", f"{name}: shape {sig.shape}{hint}; an array without lead names must be (12, T) "
                f"in the order {', '.join(STANDARD_LEADS)} (or pass lead_names=)",
            )  # fmt: skip
        return np.arange(n)
    if len(lead_names) != n:
        raise SignalError(
            "wrong_shape", f"{name}: {n} leads but {len(lead_names)} lead names {list(lead_names)}"
        )
    try:
        return lead_permutation(lead_names)
    except SignalError as exc:
        raise SignalError(exc.reason, f"{name}: {exc.detail}") from None


def resolve_scaler(chain: str, scaler) -> tuple[float, float] | None:
    """``(mean, std)`` for the ``ptbxl`` chain from a scaler.json path, the folder holding it, a
    ``{"mean", "std"}`` mapping or a pair; None for the other chains (which must not get one)."""
    if chain not in CHAINS:
        raise ValueError(f"chain must be one of {list(CHAINS)}, got {chain!r}")
    if chain != "ptbxl":
        if scaler is not None:
            raise ValueError(
                f"a scaler belongs to the 'ptbxl' chain only; chain {chain!r} does not standardise"
            )
        return None
    if scaler is None:
        raise ValueError(
            "chain 'ptbxl' standardises with the scaler of the training subset: pass scaler=<PTBXL/<subset>/"
            "scaler.json or that folder> (written by python -m datasets.preprocess.ptbxl)"
        )
    if isinstance(scaler, (str, os.PathLike)):
        return load_scaler(scaler)
    mean, std = (scaler["mean"], scaler["std"]) if isinstance(scaler, Mapping) else scaler
    mean, std = float(mean), float(std)
    if not (math.isfinite(mean) and math.isfinite(std) and std > 0):
        raise ValueError(f"scaler mean {mean} / std {std} must be finite with std > 0")
    return mean, std


def prepare_record(record: ECGRecord, chain: str = "mimic", scaler=None) -> np.ndarray:
    """One raw record -> (12, 1000) float32 at 100 Hz, preprocessed by ``chain`` (see the module docstring).

    ``scaler``: :func:`resolve_scaler`'s input or its ``(mean, std)`` output; required by ``ptbxl`` only.
    """
    stats = resolve_scaler(chain, scaler)
    name = record.name
    try:
        sig = np.asarray(record.signal)
    except Exception as exc:  # ragged nested lists and the like
        raise SignalError("wrong_shape", f"{name}: not an array ({exc})") from None
    if sig.ndim != 2 or not np.issubdtype(sig.dtype, np.number):
        raise SignalError("wrong_shape", f"{name}: a record must be a numeric (leads, T) array, got "
                          f"shape {sig.shape} dtype {sig.dtype}")  # fmt: skip
    fs = _check_fs(name, record.fs)
    order = _check_leads(name, sig, record.lead_names)
    need = int(round(WINDOW_S[chain] * fs))
    if sig.shape[1] < need:
        raise SignalError(
            "too_short", f"{name}: {sig.shape[1]} samples at {fs:g} Hz = {sig.shape[1] / fs:.2f} s; chain "
            f"{chain!r} needs at least {WINDOW_S[chain]:g} s ({need} samples): longer records give their first "
            f"{WINDOW_S[chain]:g} s, shorter ones are not padded",
        )  # fmt: skip
    window = sig[order, :need].astype(np.float64)  # standard lead order, the samples the chain reads
    if chain != "mimic" and not np.isfinite(window).all():
        raise SignalError(
            "nonfinite_samples", f"{name}: {int((~np.isfinite(window)).sum())} NaN/inf samples in the first "
            f"{WINDOW_S[chain]:g} s; chain {chain!r} refuses them, as its preprocessing does (only 'mimic' fills)",
        )  # fmt: skip
    try:
        if chain == "mimic":
            # mimic_chain fills NaN and applies check_record; every step is per lead, so giving it the 12
            # leads already in standard order equals the preprocessing's reorder-after-resampling.
            x = mimic_chain(sig[order, :need], list(STANDARD_LEADS), name)
        else:
            check_record(window, name)  # the preprocessing's content rule: amplitude > 1000 mV, flat record
            if chain == "ptbxl":
                x = standardise(ptbxl_chain(window, list(STANDARD_LEADS)), *stats)
            elif chain == "cpsc2018":
                x = cpsc_chain(window, fs)
            else:
                x = csn_chain(window, fs)
        x = finite_float32(x, name)
    except SignalError as exc:
        detail = exc.detail if exc.detail.startswith(name) else f"{name}: {exc.detail}"
        raise SignalError(exc.reason, detail) from None
    if x.shape != (len(STANDARD_LEADS), TARGET_LEN):
        raise SignalError("chain_failed", f"{name}: chain {chain!r} gave shape {x.shape}, not (12, 1000)")
    return x
