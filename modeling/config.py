"""Frozen dataclass configs of the three models (paper Sec. 3.2-3.4; defaults = the released full-size models).

One :class:`BackboneConfig` describes the sentence backbone (``modeling/backbone.py``); the three model
configs extend it with their own fields, so ``dataclasses.asdict(model.config)`` stays one flat dict:

* :class:`HeartLangConfig` - masked ECG-sentence model: + ``codebook_size`` (its lm_head predicts VQ-HBR
  codes), ``mask_before_conv``;
* :class:`ClassifierConfig` - downstream classifier: + ``num_classes``, ``backbone_codebook_size``;
* :class:`VQHBRConfig` - tokenizer: the backbone fields describe the encoder (``depth`` = encoder
  blocks), the decoder is the same backbone with ``decoder_depth`` blocks reading ``codebook_dim``-wide
  codes; + the codebook (``codebook_size`` x ``codebook_dim``) and its EMA settings.

``asdict(model.config)`` is stored in checkpoints as ``model_config`` and
``modeling.create_model(name, **model_config)`` rebuilds the same model. Names inside the code are one
per concept (``codebook_size``, ``codebook_dim``); the original code's and the original README's spellings (``vocab_size``,
``n_code``, ``n_embed``, ``code_dim``, ``encoder_depth``, ...) are accepted at the registry boundary only
(:func:`canonical_fields`), so model_config dicts written before the rename still load. The defaults are
the exact constructor arguments of the original factories (``fixtures/keys_*.json["constructor_kwargs"]``).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, ClassVar


def _check_positive(cfg: object, names: tuple[str, ...]) -> None:
    for name in names:
        value = getattr(cfg, name)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{type(cfg).__name__}.{name} must be a positive int, got {value!r}")


def _check_probability(cfg: object, names: tuple[str, ...]) -> None:
    for name in names:
        value = getattr(cfg, name)
        if not 0.0 <= float(value) < 1.0:
            raise ValueError(f"{type(cfg).__name__}.{name} must be in [0, 1), got {value!r}")


@dataclass(frozen=True)
class BackboneConfig:
    """The sentence backbone: embedding, ``depth`` pre-norm blocks, final LayerNorm.

    seq_len: words per sentence (256); time_window: values per input word (96 samples; the VQ-HBR decoder
    reads ``codebook_dim``-wide codes instead); num_lead_ids / num_time_ids: rows of the lead / second
    embeddings; padding_attention_mask: corrected variant, off = original behaviour (padding is attended).
    """

    # Fields that fix the shapes (and head split) of the weights; the rest only change the computation.
    ARCHITECTURE: ClassVar[tuple[str, ...]] = (
        "seq_len", "time_window", "embed_dim", "depth", "heads", "dim_head", "mlp_dim", "num_lead_ids",
        "num_time_ids",
    )  # fmt: skip
    # The original code's and the original README's spellings of our fields, accepted at the boundary (canonical_fields).
    ALIASES: ClassVar[dict[str, str]] = {}

    seq_len: int = 256
    time_window: int = 96
    embed_dim: int = 768
    depth: int = 12
    heads: int = 8
    dim_head: int = 64
    mlp_dim: int = 1024
    dropout: float = 0.1
    emb_dropout: float = 0.1
    num_lead_ids: int = 16
    num_time_ids: int = 16
    padding_attention_mask: bool = False

    def __post_init__(self) -> None:
        _check_positive(self, self.ARCHITECTURE)
        _check_probability(self, ("dropout", "emb_dropout"))

    def backbone(self, **changes: Any) -> BackboneConfig:
        """The plain :class:`BackboneConfig` part of this config, with ``changes``."""
        values = {f.name: getattr(self, f.name) for f in fields(BackboneConfig)}
        return BackboneConfig(**{**values, **changes})


@dataclass(frozen=True)
class HeartLangConfig(BackboneConfig):
    """Masked ECG-sentence model (the original's ``ST_ECGFormer``, registry name ``HeartLang``).

    codebook_size: width of lm_head = the VQ-HBR codebook it predicts (the original's ``vocab_size``).
    mask_before_conv: corrected variant, off = original behaviour (masking after the token conv).
    """

    ALIASES: ClassVar[dict[str, str]] = {"vocab_size": "codebook_size"}

    codebook_size: int = 8192
    mask_before_conv: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_positive(self, ("codebook_size",))


@dataclass(frozen=True)
class ClassifierConfig(BackboneConfig):
    """Downstream classifier (``ST_ECGFormerClassifier``, registry name ``HeartLang_finetune_base``).

    backbone_codebook_size: width of the backbone's unused ``lm_head``.
    """

    ALIASES: ClassVar[dict[str, str]] = {"backbone_vocab_size": "backbone_codebook_size"}

    num_classes: int = 5
    # Official behaviour: the classifier builds its backbone without vocab_size, so the backbone keeps an
    # unused lm_head of the constructor default width 1024; keeping it lets fine-tuned checkpoints load strictly.
    backbone_codebook_size: int = 1024

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_positive(self, ("num_classes", "backbone_codebook_size"))

    def backbone_config(self) -> HeartLangConfig:
        """The HeartLang config of ``classifier.backbone``."""
        values = {f.name: getattr(self, f.name) for f in fields(BackboneConfig)}
        return HeartLangConfig(codebook_size=self.backbone_codebook_size, **values)


@dataclass(frozen=True)
class VQHBRConfig(BackboneConfig):
    """VQ-HBR tokenizer (registry name ``vqhbr``).

    The backbone fields describe the encoder (``depth`` blocks over words of ``time_window`` samples); the
    decoder is the same backbone with ``decoder_depth`` blocks over ``codebook_dim``-wide codes.
    codebook_size x codebook_dim: codebook; decay: EMA decay; beta: commitment weight.
    """

    ARCHITECTURE: ClassVar[tuple[str, ...]] = (
        *BackboneConfig.ARCHITECTURE,
        "decoder_depth",
        "decoder_out_dim",
    )
    ALIASES: ClassVar[dict[str, str]] = {
        "encoder_depth": "depth",  # the original's encoder_config["depth"]; our model_config before v2
        "n_code": "codebook_size", "n_embed": "codebook_size", "codebook_n_emd": "codebook_size",
        "code_dim": "codebook_dim", "codebook_embed_dim": "codebook_dim", "codebook_emd_dim": "codebook_dim",
    }  # fmt: skip

    depth: int = 4
    heads: int = 2
    mlp_dim: int = 2048
    dropout: float = 0.0
    emb_dropout: float = 0.0
    decoder_depth: int = 2
    codebook_size: int = 8192
    codebook_dim: int = 128
    decay: float = 0.99
    beta: float = 1.0
    quantize_kmeans_init: bool = False
    decoder_out_dim: int = 96
    smooth_l1_loss: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_positive(self, ("decoder_depth", "codebook_size", "codebook_dim", "decoder_out_dim"))
        _check_probability(self, ("decay",))

    def encoder_config(self) -> BackboneConfig:
        return self.backbone()

    def decoder_config(self) -> BackboneConfig:
        return self.backbone(depth=self.decoder_depth, time_window=self.codebook_dim)


def canonical_fields(config_cls: type[BackboneConfig], values: dict[str, Any], what: str) -> dict[str, Any]:
    """``values`` with the aliases of ``config_cls`` renamed to its field names (the boundary conversion).

    An alias given together with its field (or two aliases of one field) with different values raises.
    Unknown names are left in place for the caller to refuse.
    """
    out: dict[str, Any] = {}
    source: dict[str, str] = {}
    for key, value in values.items():
        name = config_cls.ALIASES.get(key, key)
        if name in out and out[name] != value:
            raise TypeError(f"{what}: {source[name]}={out[name]!r} and {key}={value!r} name the same setting")
        out[name], source[name] = value, key
    return out
