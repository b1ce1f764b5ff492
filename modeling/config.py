"""Frozen dataclass configs of the three models (paper Sec. 3.2-3.4; defaults = the released full-size models).

``dataclasses.asdict(model.config)`` is stored in checkpoints as ``model_config`` and
``modeling.create_model(name, **model_config)`` rebuilds the same model. The defaults are the exact
constructor arguments of the original factories (``fixtures/keys_*.json["constructor_kwargs"]``).
"""

from __future__ import annotations

from dataclasses import dataclass, fields


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
class HeartLangConfig:
    """Masked ECG-sentence model (the original's ``ST_ECGFormer``, registry name ``HeartLang``).

    seq_len: words per sentence (256); time_window: samples per word (96); vocab_size: VQ-HBR codes.
    mask_before_conv / padding_attention_mask: corrected variants, off = original behaviour.
    """

    seq_len: int = 256
    time_window: int = 96
    embed_dim: int = 768
    depth: int = 12
    heads: int = 8
    dim_head: int = 64
    mlp_dim: int = 1024
    dropout: float = 0.1
    emb_dropout: float = 0.1
    vocab_size: int = 8192
    num_lead_ids: int = 16
    num_time_ids: int = 16
    mask_before_conv: bool = False
    padding_attention_mask: bool = False

    def __post_init__(self) -> None:
        _check_positive(
            self, ("seq_len", "time_window", "embed_dim", "depth", "heads", "dim_head", "mlp_dim")
        )
        _check_positive(self, ("vocab_size", "num_lead_ids", "num_time_ids"))
        _check_probability(self, ("dropout", "emb_dropout"))


@dataclass(frozen=True)
class ClassifierConfig:
    """Downstream classifier (``ST_ECGFormerClassifier``, registry name ``HeartLang_finetune_base``).

    backbone_vocab_size: width of the backbone's unused ``lm_head``.
    """

    seq_len: int = 256
    time_window: int = 96
    embed_dim: int = 768
    depth: int = 12
    heads: int = 8
    dim_head: int = 64
    mlp_dim: int = 1024
    dropout: float = 0.1
    emb_dropout: float = 0.1
    num_classes: int = 5
    # Official behaviour: the classifier builds its backbone without vocab_size, so the backbone keeps an
    # unused lm_head of the constructor default width 1024; keeping it lets fine-tuned checkpoints load strictly.
    backbone_vocab_size: int = 1024
    num_lead_ids: int = 16
    num_time_ids: int = 16
    padding_attention_mask: bool = False

    def __post_init__(self) -> None:
        _check_positive(
            self, ("seq_len", "time_window", "embed_dim", "depth", "heads", "dim_head", "mlp_dim")
        )
        _check_positive(self, ("num_classes", "backbone_vocab_size", "num_lead_ids", "num_time_ids"))
        _check_probability(self, ("dropout", "emb_dropout"))

    def backbone_config(self) -> HeartLangConfig:
        """The HeartLang config of ``classifier.backbone``."""
        shared = {f.name for f in fields(HeartLangConfig)} & {f.name for f in fields(self)}
        return HeartLangConfig(vocab_size=self.backbone_vocab_size, **{n: getattr(self, n) for n in shared})


@dataclass(frozen=True)
class VQHBRConfig:
    """VQ-HBR tokenizer (registry name ``vqhbr``).

    The encoder (``encoder_depth``) reads words of ``time_window`` samples; the decoder (``decoder_depth``)
    reads the ``code_dim``-d codes; both share embed_dim / heads / dim_head / mlp_dim.
    n_code x code_dim: codebook; decay: EMA decay; beta: commitment weight.
    """

    seq_len: int = 256
    time_window: int = 96
    embed_dim: int = 768
    encoder_depth: int = 4
    decoder_depth: int = 2
    heads: int = 2
    dim_head: int = 64
    mlp_dim: int = 2048
    dropout: float = 0.0
    emb_dropout: float = 0.0
    n_code: int = 8192
    code_dim: int = 128
    decay: float = 0.99
    beta: float = 1.0
    quantize_kmeans_init: bool = False
    decoder_out_dim: int = 96
    smooth_l1_loss: bool = False
    num_lead_ids: int = 16
    num_time_ids: int = 16
    padding_attention_mask: bool = False

    def __post_init__(self) -> None:
        _check_positive(self, ("seq_len", "time_window", "embed_dim", "encoder_depth", "decoder_depth"))
        _check_positive(self, ("heads", "dim_head", "mlp_dim", "n_code", "code_dim", "decoder_out_dim"))
        _check_positive(self, ("num_lead_ids", "num_time_ids"))
        _check_probability(self, ("dropout", "emb_dropout", "decay"))
