"""Sentence embeddings from a HeartLang encoder, from tokenised sentences or raw records (paper Sec. 3.1, 3.3).

    from modeling import load_model
    from inference import embed_ecg
    model = load_model("output/pretrain/checkpoint-200.pth")
    emb = embed_ecg(model, "records500/00000/00001_hr.hea")            # (1, D) CLS, header gives fs and leads
    emb = embed_ecg(model, signal, fs=500)                             # (12, T) mV array, any length >= 10 s

* :func:`embed_sentences` runs the encoder (no mask) on tokenised sentences ``x (B, 256, 96)``,
  ``lead_ids (B, 256)``, ``time_ids (B, 256)`` and pools the final-norm features: ``cls`` = the CLS
  output (what the linear probe reads), ``mean`` = the mean over the sentence's real words (lead id
  != 0; a sentence without any word gets zeros).
* :func:`embed_ecg` reads / checks raw records, applies the preprocessing chain of the checkpoint's
  training data (:mod:`inference.records`), tokenises them with :func:`datasets.qrs.tokenizer.tokenize_record`
  at 100 Hz and embeds them.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch import nn

from datasets.preprocess.signal import STANDARD_LEADS, TARGET_FS, TARGET_LEN, SignalError
from datasets.qrs.detect import DEFAULT_DETECTOR
from datasets.qrs.tokenizer import tokenize_record
from modeling.embedding import padding_positions
from modeling.heartlang import HeartLang, HeartLangClassifier

from .records import ECGRecord, prepare_record, read_record, resolve_scaler

POOLS = ("cls", "mean", "both")


def _backbone(model: nn.Module) -> HeartLang:
    if isinstance(model, HeartLangClassifier):
        return model.backbone
    if isinstance(model, HeartLang):
        return model
    raise TypeError(f"expected a HeartLang or HeartLangClassifier, got {type(model).__name__}")


@torch.no_grad()
def embed_sentences(
    model: nn.Module,
    x: torch.Tensor | np.ndarray,
    lead_ids: torch.Tensor | np.ndarray | None = None,
    time_ids: torch.Tensor | np.ndarray | None = None,
    pool: str = "cls",
) -> torch.Tensor:
    """Sentence embeddings. x: (B, 256, 96); lead_ids, time_ids: (B, 256) ints (0 = padding).

    Returns (B, D) for ``cls`` / ``mean``, (B, 2, D) for ``both`` ([:, 0] CLS, [:, 1] mean), float32 on CPU.
    """
    if pool not in POOLS:
        raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
    backbone = _backbone(model)
    device = next(backbone.parameters()).device
    x = torch.as_tensor(x, dtype=torch.float32, device=device)
    c = None if lead_ids is None else torch.as_tensor(lead_ids, dtype=torch.long, device=device)
    t = None if time_ids is None else torch.as_tensor(time_ids, dtype=torch.long, device=device)
    check_sentences(backbone.config, x, c, t)
    backbone.eval()
    feats = backbone(x, None, c, t, return_all_tokens=True)  # (B, 257, D), final LayerNorm applied
    cls = feats[:, 0]
    real = ~padding_positions(x, c)  # (B, 256): the padding rule of padding_attention_mask
    weights = real.to(feats.dtype).unsqueeze(-1)
    mean = (feats[:, 1:] * weights).sum(1) / weights.sum(1).clamp(min=1.0)
    out = {"cls": cls, "mean": mean, "both": torch.stack([cls, mean], dim=1)}[pool]
    return out.float().cpu()


def check_sentences(config, x: torch.Tensor, c: torch.Tensor | None, t: torch.Tensor | None) -> None:
    """Sentences against the model reading them: ``x (B, seq_len, time_window)``, ids ``(B, seq_len)`` within
    the lead / second embedding tables (0 = padding). ValueError naming the argument and the rule."""
    want = (config.seq_len, config.time_window)
    if x.ndim != 3 or tuple(x.shape[1:]) != want:
        raise ValueError(
            f"x: shape {tuple(x.shape)}; the model reads (B, {want[0]}, {want[1]}) sentences "
            f"({want[0]} words of {want[1]} samples)"
        )
    for name, ids, limit in (("lead_ids", c, config.num_lead_ids), ("time_ids", t, config.num_time_ids)):
        if ids is None:
            continue
        if tuple(ids.shape) != tuple(x.shape[:2]):
            raise ValueError(
                f"{name}: shape {tuple(ids.shape)}; expected {tuple(x.shape[:2])} like x's first two axes"
            )
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= limit):
            bad = torch.nonzero((ids < 0) | (ids >= limit))[0].tolist()
            raise ValueError(
                f"{name}: id {int(ids[tuple(bad)])} at {tuple(bad)}; the model embeds ids 0-{limit - 1} (0 = padding)"
            )


def tokenize_ecgs(signals: np.ndarray, used_channels=None, detector: str = DEFAULT_DETECTOR, names=None):
    """Preprocessed records (N, 12, 1000) or one (12, 1000) at 100 Hz -> ``(x (N, 256, 96), lead_ids (N, 256),
    time_ids (N, 256))``. Raw records go through :func:`embed_ecg` / :func:`record_sentence` instead.

    A record in which the detector finds no R peak would be an all-padding sentence: refused
    (``SignalError("no_beat")`` naming it, ``names[i]`` or its index).
    """
    signals = np.asarray(signals)
    if signals.ndim == 2:
        signals = signals[None]
    if signals.ndim != 3 or signals.shape[1:] != (len(STANDARD_LEADS), TARGET_LEN):
        raise ValueError(
            f"tokenize_ecgs takes preprocessed (N, 12, 1000) 10 s records at 100 Hz, got shape {signals.shape}; "
            "for raw records of any rate and length use embed_ecg(model, signal, fs=...)"
        )
    if len(signals) == 0:
        raise ValueError("tokenize_ecgs: no record given (shape (0, 12, 1000)); pass at least one record")
    words, lead_ids, time_ids = [], [], []
    for i, record in enumerate(signals):
        name = names[i] if names is not None else f"record {i}"
        w, c, t = _tokenize(name, record, used_channels, detector)
        words.append(w)
        lead_ids.append(c)
        time_ids.append(t)
    return np.stack(words), np.stack(lead_ids), np.stack(time_ids)


def _tokenize(name: str, x: np.ndarray, used_channels, detector: str):
    w, c, t, info = tokenize_record(x, used_channels=used_channels, fs=TARGET_FS, detector=detector)
    if info.reason is not None:
        raise SignalError(
            "no_beat", f"{name}: no word to embed ({info.reason}{': ' + info.error if info.error else ''})"
        )
    return w, c, t


def as_records(signals, fs=None, lead_names=None) -> list[ECGRecord]:
    """Paths, ECGRecord objects, arrays (leads, T) / (N, leads, T), or a list of them -> records.

    ``fs`` is required for arrays; for files the header's rate is used (a different ``fs`` is an error).
    """
    if isinstance(signals, (str, os.PathLike, ECGRecord)):
        signals = [signals]
    elif isinstance(signals, (np.ndarray, torch.Tensor)):
        arr = np.asarray(signals.detach().cpu() if isinstance(signals, torch.Tensor) else signals)
        if arr.ndim == 3:
            signals = [arr[i] for i in range(len(arr))]
            names = [f"signal[{i}]" for i in range(len(arr))]
            return [ECGRecord(n, a, fs, _names(lead_names)) for n, a in zip(names, signals)]
        if arr.ndim != 2:
            raise SignalError(
                "wrong_shape", f"signal: shape {arr.shape}; expected (leads, T) or (N, leads, T)"
            )
        return [ECGRecord("signal", arr, fs, _names(lead_names))]
    out = []
    for i, item in enumerate(signals):
        if isinstance(item, ECGRecord):
            out.append(item)
        elif isinstance(item, (str, os.PathLike)):
            rec = read_record(item)
            if fs is not None and float(fs) != rec.fs:
                raise SignalError(
                    "wrong_fs", f"{rec.name}: the header says {rec.fs:g} Hz, fs={fs} was passed"
                )
            out.append(rec)
        else:
            out.append(ECGRecord(f"signal[{i}]", np.asarray(item), fs, _names(lead_names)))
    return out


def _names(lead_names):
    return None if lead_names is None else tuple(str(n) for n in lead_names)


def record_sentence(
    record: ECGRecord, chain: str = "mimic", scaler=None, used_channels=None, detector=DEFAULT_DETECTOR
):
    """One raw record -> its sentence ``(x (256, 96), lead_ids (256,), time_ids (256,))``: preprocessed by
    ``chain`` (:func:`inference.records.prepare_record`), then QRS-tokenised at 100 Hz."""
    return _tokenize(record.name, prepare_record(record, chain, scaler), used_channels, detector)


def embed_ecg(
    model: nn.Module,
    signals,
    fs: float | None = None,
    *,
    lead_names=None,
    chain: str = "mimic",
    scaler=None,
    pool: str = "cls",
    used_channels=None,
    detector: str = DEFAULT_DETECTOR,
) -> torch.Tensor:
    """Raw records at any sampling rate and length -> embeddings (N, D) for ``cls`` / ``mean``, (N, 2, D)
    for ``both``, one row per record in input order.

    signals: a record path (WFDB header / ``.mat``), an :class:`ECGRecord`, an array (leads, T) or
        (N, leads, T) in mV, or a list of these. Arrays need ``fs`` (Hz) and, unless they are the 12
        standard leads in order, ``lead_names``.
    chain: the preprocessing of the checkpoint's training data (``mimic`` for pre-trained encoders,
        ``ptbxl`` + ``scaler`` / ``cpsc2018`` / ``csn`` for probes; see :mod:`inference.records`).
    A bad record raises ``SignalError`` (a ValueError) naming it and the rule it breaks.
    """
    if pool not in POOLS:
        raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
    stats = resolve_scaler(chain, scaler)  # once, not per record
    records = as_records(signals, fs, lead_names)
    if not records:
        raise ValueError(
            "embed_ecg: no record given (an empty list or array); pass a record path, an ECGRecord, an array "
            "(leads, T) with fs=, or a non-empty list of these"
        )
    sentences = [record_sentence(r, chain, stats, used_channels, detector) for r in records]
    x, c, t = (np.stack(v) for v in zip(*sentences))
    return embed_sentences(model, x, c, t, pool=pool)
