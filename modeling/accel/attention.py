"""Attention kernels: the original's plain math (the reference) and torch's fused SDPA, and the rule that
picks one for ``modeling.transformer.Attention``.

All three compute ``dropout(softmax(q k^T * scale)) v``. :func:`sdpa_attend` dispatches to flash /
memory-efficient kernels on GPU; on CPU with attention dropout active (training) SDPA would fall back to
the same plain math with torch's slow mask draws, so :func:`default_attend` runs :func:`plain_attend`
with the fast CPU dropout there instead.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from .dropout import dropout, fast_applies

AttendFn = Callable[
    [torch.Tensor, torch.Tensor, torch.Tensor, "torch.Tensor | None", float, float], torch.Tensor
]


def plain_attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    attn_mask: torch.Tensor | None,
    dropout_p: float,
    scale: float,
) -> torch.Tensor:
    """The original's attention: ``dropout(softmax(q k^T * scale)) v``.

    q, k, v: (B, H, N, dh); attn_mask: None or bool (B, 1, 1, N) / (B, 1, N, N), True = may attend.
    Returns (B, H, N, dh). ``q`` is scaled before the product (one pass over (N, dh) instead of (N, N),
    forward and backward); with a power-of-two scale (dim_head 64: 1/8; 16: 1/4) that is bit for bit the
    original's ``(q k^T) * scale``.
    """
    dots = torch.matmul(q * scale, k.transpose(-1, -2))
    if attn_mask is not None:
        dots = dots.masked_fill(~attn_mask, float("-inf"))
    attn = dropout(dots.softmax(dim=-1), dropout_p, dropout_p > 0)
    return torch.matmul(attn, v)


def sdpa_attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    attn_mask: torch.Tensor | None,
    dropout_p: float,
    scale: float,
) -> torch.Tensor:
    """``torch.nn.functional.scaled_dot_product_attention``: the same math, fused. Arguments as
    :func:`plain_attend`."""
    return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, scale=scale)


def default_attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    attn_mask: torch.Tensor | None,
    dropout_p: float,
    scale: float,
) -> torch.Tensor:
    """SDPA, except with attention dropout where the fast CPU dropout applies: then :func:`plain_attend`."""
    if dropout_p > 0 and fast_applies(q, dropout_p, True):
        return plain_attend(q, k, v, attn_mask, dropout_p, scale)
    return sdpa_attend(q, k, v, attn_mask, dropout_p, scale)
