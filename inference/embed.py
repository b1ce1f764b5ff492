"""Sentence embeddings from a HeartLang encoder (paper Sec. 3.1, 3.3).

    from modeling import load_pretrained
    from inference import embed_ecg, embed_sentences
    model = load_pretrained("output/pretrain/checkpoint-200.pth")
    emb = embed_ecg(model, signal)            # signal (12, 1000) or (N, 12, 1000), 100 Hz -> (N, D) CLS

* :func:`embed_sentences` runs the encoder (no mask) on tokenised sentences ``x (B, 256, 96)``,
  ``in_chans (B, 256)``, ``in_times (B, 256)`` and pools the final-norm features: ``cls`` = the CLS
  output (what the linear probe reads), ``mean`` = the mean over the sentence's real words (lead id
  != 0; a sentence without any word gets zeros).
* :func:`embed_ecg` tokenises raw records with :func:`datasets.qrs.tokenizer.tokenize_record` first.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from datasets.qrs.tokenizer import tokenize_record
from modeling.embedding import padding_positions
from modeling.heartlang import HeartLang, HeartLangClassifier

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
    in_chans: torch.Tensor | np.ndarray | None = None,
    in_times: torch.Tensor | np.ndarray | None = None,
    pool: str = "cls",
) -> torch.Tensor:
    """Sentence embeddings. x: (B, 256, 96); in_chans, in_times: (B, 256) ints (0 = padding).

    Returns (B, D) for ``cls`` / ``mean``, (B, 2, D) for ``both`` ([:, 0] CLS, [:, 1] mean), float32 on CPU.
    """
    if pool not in POOLS:
        raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
    backbone = _backbone(model)
    device = next(backbone.parameters()).device
    x = torch.as_tensor(x, dtype=torch.float32, device=device)
    c = None if in_chans is None else torch.as_tensor(in_chans, dtype=torch.long, device=device)
    t = None if in_times is None else torch.as_tensor(in_times, dtype=torch.long, device=device)
    backbone.eval()
    feats = backbone(x, None, c, t, return_all_tokens=True)  # (B, 257, D), final LayerNorm applied
    cls = feats[:, 0]
    real = ~padding_positions(x, c)  # (B, 256): the padding rule of padding_attention_mask
    weights = real.to(feats.dtype).unsqueeze(-1)
    mean = (feats[:, 1:] * weights).sum(1) / weights.sum(1).clamp(min=1.0)
    out = {"cls": cls, "mean": mean, "both": torch.stack([cls, mean], dim=1)}[pool]
    return out.float().cpu()


def tokenize_ecgs(signals: np.ndarray, fs: int = 100, used_channels=None, detector: str = "xqrs"):
    """Raw records (N, leads, T) or one (leads, T) -> ``(x (N, 256, 96), in_chans (N, 256), in_times (N, 256))``."""
    signals = np.asarray(signals)
    if signals.ndim == 2:
        signals = signals[None]
    if signals.ndim != 3:
        raise ValueError(f"signals must be (leads, T) or (N, leads, T), got shape {signals.shape}")
    words, chans, times = [], [], []
    for record in signals:
        w, c, t, _ = tokenize_record(record, used_channels=used_channels, fs=fs, detector=detector)
        words.append(w)
        chans.append(c)
        times.append(t)
    return np.stack(words), np.stack(chans), np.stack(times)


def embed_ecg(model: nn.Module, signals: np.ndarray, pool: str = "cls", fs: int = 100, **tokenizer_kwargs):
    """Raw 100 Hz records (12, 1000) or (N, 12, 1000), preprocessed like the training data -> embeddings.

    Returns (N, D) for ``cls`` / ``mean``, (N, 2, D) for ``both``.
    """
    x, c, t = tokenize_ecgs(signals, fs=fs, **tokenizer_kwargs)
    return embed_sentences(model, x, c, t, pool=pool)
