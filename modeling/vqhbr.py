"""VQ-HBR, the vector-quantised heartbeat tokenizer (paper Sec. 3.2).

    x (B, 256, 96) --encoder--> (B, 256, D) --Linear-Tanh-Linear--> z (B, 256, codebook_dim)
      --NormEMA quantizer--> codes (B, 256, codebook_dim), indices (B*256,)
      --decoder (fed with the codes)--> (B, 256, D) --Linear-Tanh-Linear--> reconstruction (B, 256, 96)

loss = MSE(reconstruction, x) over all 256 words (padding included) + commitment loss.
Only the encoder zeroes the features of words whose input is all zero (judged by content); the
decoder zeroes nothing and no attention mask is used (unless ``padding_attention_mask`` is set).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .backbone import SentenceBackbone, backbone_layer_id
from .config import BackboneConfig, VQHBRConfig
from .embedding import padding_words
from .quantizer import NormEMAVectorQuantizer, TensorFn


class WordEncoder(SentenceBackbone):
    """VQ-HBR encoder / decoder body (the original's ``VqhbrBackbone``). x: (B, N, C)."""

    def __init__(self, config: BackboneConfig, zero_padding_words: bool) -> None:
        super().__init__(config)
        self.zero_padding_words = zero_padding_words

    def forward(
        self,
        x: torch.Tensor,
        lead_ids: torch.Tensor | None = None,
        time_ids: torch.Tensor | None = None,
        return_all_tokens: bool = False,
        return_qrs_tokens: bool = False,
        padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, N+1, D) with return_all_tokens (never zeroed), (B, N, D) word features with
        return_qrs_tokens, else (B, D) = sum of the word features / N."""
        feats = self.forward_features(x, None, lead_ids, time_ids, padding_mask=padding_mask)
        if return_all_tokens:
            return feats
        words = feats[:, 1:]
        if self.zero_padding_words:
            # Official behaviour: padding is judged from the word content (all zero), not from the ids.
            words = words.masked_fill(padding_words(x).unsqueeze(-1), 0.0)
        if return_qrs_tokens:
            return words
        # Official behaviour: the mean divides by all N words, zeroed padding words included.
        return words.mean(dim=1)


def _task_layer(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    layer = nn.Sequential(nn.Linear(in_dim, hidden), nn.Tanh(), nn.Linear(hidden, out_dim))
    for m in layer:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)
    return layer


class VQHBR(nn.Module):
    """Encoder, quantizer, decoder; key tree = the original's (encoder.*, decoder.*, quantize.*, task layers)."""

    def __init__(
        self,
        config: VQHBRConfig | None = None,
        all_reduce_fn: TensorFn | None = None,
        broadcast_fn: TensorFn | None = None,
    ) -> None:
        super().__init__()
        self.config = config = config or VQHBRConfig()
        self.encoder = WordEncoder(config.encoder_config(), zero_padding_words=True)
        self.decoder = WordEncoder(config.decoder_config(), zero_padding_words=False)
        self.quantize = NormEMAVectorQuantizer(
            config.codebook_size,
            config.codebook_dim,
            beta=config.beta,
            decay=config.decay,
            kmeans_init=config.quantize_kmeans_init,
            all_reduce_fn=all_reduce_fn,
            broadcast_fn=broadcast_fn,
        )
        self.encode_task_layer = _task_layer(config.embed_dim, config.embed_dim, config.codebook_dim)
        self.decode_task_layer = _task_layer(config.embed_dim, config.embed_dim, config.decoder_out_dim)

    def encode(
        self,
        x: torch.Tensor,
        lead_ids: torch.Tensor | None = None,
        time_ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x: (B, N, 96) -> (codes (B, N, codebook_dim), indices (B*N,) long, quant loss ())."""
        feats = self.encoder(x, lead_ids, time_ids, return_qrs_tokens=True)
        # Deliberate difference (GPU only): the original disables autocast around the task layer ONLY; its
        # quantizer runs under the caller's autocast, so on a GPU its distance matmul and EMA cluster-sum
        # matmul run in fp16. Ours keeps the quantizer inside the fp32 block: the distance is 2 - 2 z.e on
        # the unit sphere, fp16 rounds z.e near 1 to ~5e-4 (bf16, our GPU default, to ~4e-3), and the best
        # and second-best codes can be as close as 1.5e-3 in distance (fixtures README), so a 16-bit matmul
        # can pick another code. On CPU autocast is off in both (engine.loop.Amp): CPU numerics are the
        # original's (tests/test_model_parity.py).
        with torch.autocast(device_type=x.device.type, enabled=False):
            z = self.encode_task_layer(feats.float())
            quantize, loss, indices = self.quantize(z)
        return quantize, indices, loss

    def decode(
        self,
        quantize: torch.Tensor,
        lead_ids: torch.Tensor | None = None,
        time_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """quantize: (B, N, codebook_dim) -> reconstructed words (B, N, decoder_out_dim)."""
        feats = self.decoder(quantize, lead_ids, time_ids, return_qrs_tokens=True)
        return self.decode_task_layer(feats)

    @torch.no_grad()
    def get_codebook_indices(
        self,
        x: torch.Tensor,
        lead_ids: torch.Tensor | None = None,
        time_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x: (B, N, 96) -> code indices (B, N) long (the pre-training targets)."""
        return self.encode(x, lead_ids, time_ids)[1].view(x.shape[0], -1)

    @torch.no_grad()
    def get_codebook_quantize(
        self,
        x: torch.Tensor,
        lead_ids: torch.Tensor | None = None,
        time_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x: (B, N, 96) -> unit-norm codes (B, N, codebook_dim)."""
        return self.encode(x, lead_ids, time_ids)[0]

    def forward(
        self,
        x: torch.Tensor,
        lead_ids: torch.Tensor | None = None,
        time_ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """x: (B, N, 96) -> (loss, {"<train|val>/quant_loss", "/rec_loss", "/total_loss"})."""
        quantize, _, quant_loss = self.encode(x, lead_ids, time_ids)
        xrec = self.decode(quantize, lead_ids, time_ids)
        target = x.to(xrec.dtype)
        if self.config.smooth_l1_loss:
            rec_loss = F.smooth_l1_loss(xrec, target)
        else:
            # Official behaviour: the reconstruction loss covers every word, padding words included.
            rec_loss = F.mse_loss(xrec, target)
        loss = quant_loss + rec_loss
        split = "train" if self.training else "val"
        log = {
            f"{split}/quant_loss": quant_loss.detach().mean().item(),
            f"{split}/rec_loss": rec_loss.detach().mean().item(),
            f"{split}/total_loss": loss.detach().mean().item(),
        }
        return loss, log

    # ----- optimiser hooks -----
    def no_weight_decay(self) -> set[str]:
        names = set()
        for part in ("encoder", "decoder"):
            names |= {f"{part}.{n}" for n in getattr(self, part).no_weight_decay()}
        return names | {"quantize.embedding.weight"}

    def get_num_layers(self) -> int:
        return self.config.depth + self.config.decoder_depth

    def get_layer_id(self, name: str) -> int:
        """The network read as one stack: encoder embeddings 0, encoder blocks 1..E, decoder blocks
        E+1..E+D (the encoder norm, task layer, quantizer and decoder embeddings join the first decoder
        block), decoder norm and output task layer E+D+1."""
        enc, dec = self.config.depth, self.config.decoder_depth
        if name.startswith("encoder."):
            layer = backbone_layer_id(name[len("encoder.") :], enc)
            return layer if layer <= enc else enc + 1
        if name.startswith("decoder."):
            layer = backbone_layer_id(name[len("decoder.") :], dec)
            if layer == 0:
                return enc + 1
            return enc + layer
        if name.startswith("decode_task_layer."):
            return enc + dec + 1
        return enc + 1
