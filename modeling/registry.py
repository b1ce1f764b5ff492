"""Model registry: ``create_model(name, **overrides)`` (the original scripts' model names, paper Sec. 3.2-3.4).

Full-size names build the released models with the original factories' exact defaults:
``vqhbr``, ``HeartLang``, ``HeartLang_finetune_base``. ``*_small`` are CPU demo sizes (a 2-core laptop
trains them on a few hundred records in about a minute); ``*_tiny`` equal the reference fixtures' tiny
models. Overrides are config fields (so ``create_model(name, **asdict(model.config))`` rebuilds a
model), also in the original's spellings (``vocab_size``, ``n_code``, ``code_dim``, ``encoder_depth``:
``config.canonical_fields``). Unknown keywords raise ``TypeError``; nothing is ignored silently.
Loading weights is ``modeling.checkpoint.load_model``'s job.
"""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Any

from torch import nn

from .config import ClassifierConfig, HeartLangConfig, VQHBRConfig, canonical_fields
from .heartlang import HeartLang, HeartLangClassifier
from .vqhbr import VQHBR

_TINY_BACKBONE = dict(embed_dim=32, depth=2, heads=2, dim_head=16, mlp_dim=64)
_SMALL_BACKBONE = dict(embed_dim=128, depth=4, heads=4, dim_head=32, mlp_dim=256)
_SMALL_CODEBOOK = 512

# name -> (model class, config)
MODEL_CONFIGS: dict[str, tuple[type[nn.Module], Any]] = {
    "vqhbr": (VQHBR, VQHBRConfig()),
    "HeartLang": (HeartLang, HeartLangConfig()),
    "HeartLang_finetune_base": (HeartLangClassifier, ClassifierConfig()),
    "vqhbr_small": (
        VQHBR,
        VQHBRConfig(
            **{**_SMALL_BACKBONE, "depth": 2, "heads": 2},
            decoder_depth=1,
            codebook_size=_SMALL_CODEBOOK,
            codebook_dim=32,
        ),
    ),
    "HeartLang_small": (HeartLang, HeartLangConfig(codebook_size=_SMALL_CODEBOOK, **_SMALL_BACKBONE)),
    "HeartLang_finetune_small": (HeartLangClassifier, ClassifierConfig(**_SMALL_BACKBONE)),
    "vqhbr_tiny": (VQHBR, VQHBRConfig(**_TINY_BACKBONE, decoder_depth=1, codebook_size=64, codebook_dim=16)),
    "HeartLang_tiny": (HeartLang, HeartLangConfig(codebook_size=64, **_TINY_BACKBONE)),
    "HeartLang_finetune_tiny": (HeartLangClassifier, ClassifierConfig(**_TINY_BACKBONE)),
}


def list_models() -> list[str]:
    return list(MODEL_CONFIGS)


def get_config(name: str, **overrides: Any):
    """The frozen config of ``name`` with ``overrides`` (config field names or their original spellings)."""
    if name not in MODEL_CONFIGS:
        raise KeyError(f"unknown model {name!r}; known models: {', '.join(MODEL_CONFIGS)}")
    _, base = MODEL_CONFIGS[name]
    overrides = canonical_fields(type(base), overrides, f"create_model({name!r})")
    valid = {f.name for f in fields(base)}
    unknown = sorted(set(overrides) - valid)
    if unknown:
        raise TypeError(
            f"create_model({name!r}) got unexpected keyword(s) {unknown}; valid: {sorted(valid)} "
            f"(also accepted: {sorted(type(base).ALIASES)})"
        )
    return replace(base, **overrides)


def create_model(name: str, **overrides: Any) -> nn.Module:
    """Build a model by registry name with freshly initialised weights (``load_model`` loads weights)."""
    config = get_config(name, **overrides)
    cls, _ = MODEL_CONFIGS[name]
    return cls(config)
