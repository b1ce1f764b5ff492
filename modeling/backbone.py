"""The sentence backbone shared by HeartLang, the classifier and the VQ-HBR encoder / decoder (paper Sec. 3.3).

``SentenceBackbone`` (the original's ``ST_ECGFormer`` body) is built from one :class:`BackboneConfig`
and computes, in the official order:

1. Conv1d token embedding along the word axis (kernel 3, circular padding, no bias),
2. ``x * (1 - w) + mask_token * w`` for masked words,
3. ``+ spa_embed(lead_ids)`` and 4. ``+ tem_embed(time_ids)`` when given,
5. prepend the CLS token, 6. ``+ pos_embed``, 7. dropout, 8. the blocks, 9. LayerNorm ``norm_layer``.

Two corrected variants are available behind flags (default off = original):
``mask_before_conv`` (HeartLang only) zeroes masked input words before the convolution so that they no
longer leak into their neighbours, and ``padding_attention_mask`` stops every token from attending to
padding words.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from .accel import Dropout
from .config import BackboneConfig
from .embedding import IdEmbedding, TokenEmbedding, padding_positions
from .transformer import Transformer

_BLOCK_RE = re.compile(r"(?:^|\.)transformer\.layers\.(\d+)\.")
EMBEDDING_PARAM_NAMES = ("mask_token", "cls_token", "pos_embed", "token_embed", "spa_embed", "tem_embed")


class SentenceBackbone(nn.Module):
    """Embedding + pre-norm transformer + final LayerNorm. Subclasses add heads.

    State-dict keys (in this order): mask_token [1,1,D], cls_token [D], pos_embed [1,seq_len+1,D],
    token_embed.tokenConv.weight [D,C,3], spa_embed.embed.weight [16,D], tem_embed.embed.weight [16,D],
    transformer.layers.*, norm_layer.*.
    """

    def __init__(self, config: BackboneConfig, mask_before_conv: bool = False) -> None:
        super().__init__()
        self.seq_len = config.seq_len
        self.depth = config.depth
        self.mask_before_conv = mask_before_conv
        self.padding_attention_mask = config.padding_attention_mask
        d = config.embed_dim
        self.mask_token = nn.Parameter(torch.zeros(1, 1, d))
        self.cls_token = nn.Parameter(torch.randn(d))
        self.pos_embed = nn.Parameter(torch.randn(1, config.seq_len + 1, d))
        self.token_embed = TokenEmbedding(config.time_window, d)
        self.spa_embed = IdEmbedding(config.num_lead_ids, d)
        self.tem_embed = IdEmbedding(config.num_time_ids, d)
        self.dropout = Dropout(config.emb_dropout)
        self.transformer = Transformer(
            d, config.depth, config.heads, config.dim_head, config.mlp_dim, config.dropout
        )
        self.norm_layer = nn.LayerNorm(d)

    def _attention_mask(
        self, x: torch.Tensor, lead_ids: torch.Tensor | None, padding_mask: torch.Tensor | None
    ) -> torch.Tensor | None:
        """Bool (B, 1, 1, N+1) key mask, True = may attend; None in the original (no mask) mode."""
        if not self.padding_attention_mask:
            return None
        if padding_mask is None:
            padding_mask = padding_positions(x, lead_ids)
        keep = torch.cat([padding_mask.new_ones(padding_mask.shape[0], 1), ~padding_mask.bool()], dim=1)
        return keep[:, None, None, :]

    def forward_features(
        self,
        x: torch.Tensor,
        mask_bool_matrix: torch.Tensor | None = None,
        lead_ids: torch.Tensor | None = None,
        time_ids: torch.Tensor | None = None,
        padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x: (B, N, C), mask_bool_matrix: (B, N) bool or None -> (B, N+1, D), CLS first, after norm_layer.

        padding_mask (B, N) bool is only read with ``padding_attention_mask``; when None it is taken from
        ``lead_ids == 0`` or, without ids, from all-zero words.
        """
        b, n, _ = x.shape
        if n > self.seq_len:
            raise ValueError(f"sentence has {n} words but the model was built for at most {self.seq_len}")
        attn_mask = self._attention_mask(x, lead_ids, padding_mask)
        if mask_bool_matrix is not None and self.mask_before_conv:
            # Corrected variant: a masked word's samples are removed before the kernel-3 convolution.
            x = x.masked_fill(mask_bool_matrix.bool().unsqueeze(-1), 0.0)
        tokens = self.token_embed(x)
        # Official behaviour: masking happens after the convolution, so with mask_before_conv off the
        # masked words' samples still reach their neighbours through the kernel. The blend also runs
        # without a mask (w = 0): mask_token then gets a zero gradient instead of none, as in the
        # original, which keeps DDP without find_unused_parameters working.
        if mask_bool_matrix is None:
            w = tokens.new_zeros(b, n, 1)
        else:
            w = mask_bool_matrix.unsqueeze(-1).type_as(tokens)
        tokens = tokens * (1 - w) + self.mask_token * w
        if lead_ids is not None:
            tokens = tokens + self.spa_embed(lead_ids)
        if time_ids is not None:
            tokens = tokens + self.tem_embed(time_ids)
        cls = self.cls_token.view(1, 1, -1).expand(b, 1, -1)
        tokens = torch.cat([cls, tokens], dim=1) + self.pos_embed[:, : n + 1]
        tokens = self.dropout(tokens)
        tokens = self.transformer(tokens, attn_mask)
        return self.norm_layer(tokens)

    # ----- optimiser hooks (layer-wise lr decay, weight-decay split) -----
    def no_weight_decay(self) -> set[str]:
        return {"mask_token", "cls_token", "pos_embed"}

    def get_num_layers(self) -> int:
        return self.depth

    def get_layer_id(self, name: str) -> int:
        return backbone_layer_id(name, self.depth)


def backbone_layer_id(name: str, depth: int) -> int:
    """Layer id of a backbone parameter name (no prefix): 0 = embeddings, i+1 = block i, depth+1 = rest."""
    match = _BLOCK_RE.search("." + name)
    if match is not None:
        return int(match.group(1)) + 1
    if name.split(".")[0] in EMBEDDING_PARAM_NAMES:
        return 0
    return depth + 1
