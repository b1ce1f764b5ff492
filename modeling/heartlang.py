"""HeartLang: masked ECG-sentence pre-training model and the downstream classifier (paper Sec. 3.3, Sec. 4).

``HeartLang`` (the original's ``ST_ECGFormer``) is the shared sentence backbone plus an ``lm_head``
that predicts, for each masked word, its VQ-HBR code. ``HeartLangClassifier``
(``ST_ECGFormerClassifier``) puts a linear ``mlp_head`` on the CLS feature of a HeartLang backbone.
Multi-label / binary and multi-class tasks differ only in the loss, which lives in the engine; the
classifier always returns logits.
"""

from __future__ import annotations

import torch
from torch import nn

from .backbone import SentenceBackbone, backbone_layer_id
from .config import ClassifierConfig, HeartLangConfig


class HeartLang(SentenceBackbone):
    """Sentence backbone + lm_head Linear(D, codebook_size). Keys: see ``SentenceBackbone`` + lm_head.*."""

    def __init__(self, config: HeartLangConfig | None = None) -> None:
        config = config or HeartLangConfig()
        super().__init__(config, mask_before_conv=config.mask_before_conv)
        self.config = config
        self.lm_head = nn.Linear(config.embed_dim, config.codebook_size)

    def forward(
        self,
        x: torch.Tensor,
        mask_bool_matrix: torch.Tensor | None = None,
        lead_ids: torch.Tensor | None = None,
        time_ids: torch.Tensor | None = None,
        return_all_tokens: bool = False,
        return_qrs_tokens: bool = False,
        padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x: (B, N, 96); mask_bool_matrix: (B, N) bool (True = masked) or None.

        Returns (B, N+1, D) with return_all_tokens (CLS first), (B, N, D) with return_qrs_tokens,
        otherwise logits: ``lm_head(features[:, 1:][mask])`` of shape (n_masked, codebook_size) in row-major
        (sample, position) order, or (B, N, codebook_size) for every word when no mask is given.
        """
        feats = self.forward_features(x, mask_bool_matrix, lead_ids, time_ids, padding_mask)
        if return_all_tokens:
            return feats
        words = feats[:, 1:]
        if return_qrs_tokens:
            return words
        if mask_bool_matrix is None:
            return self.lm_head(words)
        return self.lm_head(words[mask_bool_matrix.bool()])


class HeartLangClassifier(nn.Module):
    """``backbone`` (a HeartLang with an unused lm_head) + ``mlp_head`` on the CLS output -> (B, C) logits."""

    def __init__(self, config: ClassifierConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or ClassifierConfig()
        self.backbone = HeartLang(config.backbone_config())
        self.mlp_head = nn.Linear(config.embed_dim, config.num_classes)

    def forward_features(
        self,
        x: torch.Tensor,
        lead_ids: torch.Tensor | None = None,
        time_ids: torch.Tensor | None = None,
        padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x: (B, N, 96) -> CLS feature (B, D). No mask is applied."""
        feats = self.backbone(
            x,
            lead_ids=lead_ids,
            time_ids=time_ids,
            return_all_tokens=True,
            padding_mask=padding_mask,
        )
        return feats[:, 0]

    def forward(
        self,
        x: torch.Tensor,
        lead_ids: torch.Tensor | None = None,
        time_ids: torch.Tensor | None = None,
        padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x: (B, N, 96) -> logits (B, num_classes)."""
        return self.mlp_head(self.forward_features(x, lead_ids, time_ids, padding_mask))

    @torch.no_grad()
    def randomly_initialize_weights(self, low: float = -0.1, high: float = 0.1) -> None:
        """U(low, high) on every parameter: what the original fine-tuning run does without --finetune."""
        # Official behaviour: training "from scratch" in the original re-draws EVERY parameter (LayerNorm
        # weights included) from U(-0.1, 0.1) instead of keeping the constructor's initialisation.
        for p in self.parameters():
            p.uniform_(low, high)

    # ----- optimiser hooks -----
    def no_weight_decay(self) -> set[str]:
        return {f"backbone.{n}" for n in self.backbone.no_weight_decay()}

    def get_num_layers(self) -> int:
        return self.config.depth

    def get_layer_id(self, name: str) -> int:
        if name.startswith("backbone."):
            return backbone_layer_id(name[len("backbone.") :], self.config.depth)
        return self.config.depth + 1
