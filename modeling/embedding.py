"""Sentence embedding pieces (paper Sec. 3.1 "ECG sentences"): word token embedding, lead / second id
embeddings and the padding rule. The backbone that uses them lives in ``modeling/backbone.py``.

An ECG sentence is ``x: (B, N, C)`` with N <= 256 words of C values (C = 96 samples for raw words,
C = codebook_dim for the VQ-HBR decoder), plus lead ids ``lead_ids: (B, N)`` and second ids
``time_ids: (B, N)`` (0 = padding, 1..15 otherwise; the original calls them ``in_chan_matrix`` /
``in_time_matrix``, and the tokenizer's files ``{split}_data_in_chans.npy`` / ``_in_times.npy``).
"""

from __future__ import annotations

import torch
from torch import nn


class TokenEmbedding(nn.Module):
    """Bias-free Conv1d over the word axis. x: (B, N, C) -> (B, N, D)."""

    def __init__(self, in_channels: int, embed_dim: int) -> None:
        super().__init__()
        # Official behaviour: circular padding, so the first and last words of a sentence are neighbours.
        self.tokenConv = nn.Conv1d(
            in_channels, embed_dim, kernel_size=3, padding=1, padding_mode="circular", bias=False
        )
        nn.init.kaiming_normal_(self.tokenConv.weight, mode="fan_in", nonlinearity="leaky_relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tokenConv(x.transpose(1, 2)).transpose(1, 2)


class IdEmbedding(nn.Module):
    """Learned embedding of lead or second ids. ids: (B, N) int -> (B, N, D)."""

    def __init__(self, num_ids: int, embed_dim: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(num_ids, embed_dim)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.embed(ids)


def padding_words(x: torch.Tensor) -> torch.Tensor:
    """Words whose values are all zero (the tokenizer's padding). x: (B, N, C) -> (B, N) bool."""
    return (x == 0).all(dim=-1)


def padding_positions(x: torch.Tensor, lead_ids: torch.Tensor | None = None) -> torch.Tensor:
    """Padding words: lead id 0 when ids are given, else all-zero words. -> (B, N) bool."""
    return lead_ids == 0 if lead_ids is not None else padding_words(x)
