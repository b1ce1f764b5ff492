"""The one pre-norm transformer shared by VQ-HBR, HeartLang and the classifier (paper Sec. 3.2-3.3).

Each block is ``x = x + Attention(x); x = x + FeedForward(x)`` where both sub-layers start with their
own LayerNorm (pre-norm). The module tree reproduces the original's state-dict keys exactly::

    layers.{i}.0.norm.{weight,bias}          LayerNorm of the attention sub-layer
    layers.{i}.0.to_qkv.weight               bias-free Linear(D, 3 * heads * dim_head)
    layers.{i}.0.to_out.0.{weight,bias}      Linear(heads * dim_head, D) (index 1 is a Dropout)
    layers.{i}.0.dropout                     attention-weight Dropout (no parameters)
    layers.{i}.1.net.{0,1,4}.*               LayerNorm, Linear(D, mlp), [GELU, Dropout], Linear(mlp, D)

so released checkpoints load with ``strict=True`` and no renaming.

Attention is ``softmax(q k^T * dim_head ** -0.5) v`` with dropout on the attention weights. Which kernel
computes it (torch's SDPA or the original's plain math with the fast CPU dropout) and how dropout masks are
drawn are speed devices that live in ``modeling/accel/``; ``Attention.attend`` can be swapped per instance
(the benchmarks time the plain attention against SDPA this way).
"""

from __future__ import annotations

import torch
from torch import nn

from .accel import AttendFn, Dropout, default_attend


class Attention(nn.Module):
    """Pre-norm multi-head self-attention. x: (B, N, D) -> (B, N, D)."""

    def __init__(self, dim: int, heads: int, dim_head: int, dropout: float = 0.0) -> None:
        super().__init__()
        inner_dim = heads * dim_head
        self.heads = heads
        self.dim_head = dim_head
        self.scale = dim_head**-0.5
        # Dropout on the attention weights, applied inside the attention kernel; the module (no parameters)
        # carries p and the train/eval state under the original's name ``layers.{i}.0.dropout``.
        self.dropout = Dropout(dropout)
        self.norm = nn.LayerNorm(dim)
        self.to_qkv = nn.Linear(dim, inner_dim * 3, bias=False)
        # Official behaviour: to_out is always a projection (+ dropout). The original skips it only when
        # heads == 1 and dim_head == dim, which no HeartLang configuration hits.
        self.to_out = nn.Sequential(nn.Linear(inner_dim, dim), Dropout(dropout))
        self.attend: AttendFn = default_attend

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        b, n, _ = x.shape
        x = self.norm(x)
        # (B, N, 3*H*dh) -> 3 x (B, H, N, dh); the split order (q, k, v then heads) is the original's.
        qkv = self.to_qkv(x).view(b, n, 3, self.heads, self.dim_head).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        dropout_p = self.dropout.p if self.dropout.training else 0.0
        out = self.attend(q, k, v, attn_mask, dropout_p, self.scale)
        out = out.transpose(1, 2).reshape(b, n, self.heads * self.dim_head)
        return self.to_out(out)


class FeedForward(nn.Module):
    """Pre-norm MLP: LayerNorm -> Linear -> GELU -> Dropout -> Linear -> Dropout. x: (B, N, D)."""

    def __init__(self, dim: int, hidden_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.LayerNorm(dim),
            nn.Linear(dim, hidden_dim),
            nn.GELU(),
            Dropout(dropout),
            nn.Linear(hidden_dim, dim),
            Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Transformer(nn.Module):
    """Stack of ``depth`` pre-norm blocks (no final norm: the backbone owns ``norm_layer``).

    x: (B, N, D) -> (B, N, D). ``attn_mask`` (bool, True = may attend) is passed to every block.
    """

    def __init__(self, dim: int, depth: int, heads: int, dim_head: int, mlp_dim: int, dropout: float = 0.0):
        super().__init__()
        self.layers = nn.ModuleList(
            [
                nn.ModuleList([Attention(dim, heads, dim_head, dropout), FeedForward(dim, mlp_dim, dropout)])
                for _ in range(depth)
            ]
        )

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        for attn, ff in self.layers:
            x = attn(x, attn_mask) + x
            x = ff(x) + x
        return x
