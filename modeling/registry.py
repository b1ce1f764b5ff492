"""Model registry: ``create_model(name, **overrides)`` (the seed's model names, paper Sec. 3.2-3.4).

Full-size names build the released models with the original factories' exact defaults:
``vqhbr``, ``HeartLang``, ``HeartLang_finetune_base``. ``*_small`` are CPU demo sizes (a 2-core laptop
trains them on a few hundred records in about a minute); ``*_tiny`` equal the reference fixtures' tiny
models. Overrides are config fields (so ``create_model(name, **asdict(model.config))`` rebuilds a
model) plus the original factory keywords ``pretrained``, ``as_tokenzer`` and ``pretrained_weight``.
Unknown keywords raise ``TypeError``; nothing is ignored silently.
"""

from __future__ import annotations

import os
from dataclasses import fields, replace
from typing import Any

from torch import nn

from .config import ClassifierConfig, HeartLangConfig, VQHBRConfig
from .heartlang import HeartLang, HeartLangClassifier
from .vqhbr import VQHBR

_TINY_BACKBONE = dict(embed_dim=32, depth=2, heads=2, dim_head=16, mlp_dim=64)
_SMALL_BACKBONE = dict(embed_dim=128, depth=4, heads=4, dim_head=32, mlp_dim=256)
_SMALL_VOCAB = 512

# name -> (model class, config)
MODEL_CONFIGS: dict[str, tuple[type[nn.Module], Any]] = {
    "vqhbr": (VQHBR, VQHBRConfig()),
    "HeartLang": (HeartLang, HeartLangConfig()),
    "HeartLang_finetune_base": (HeartLangClassifier, ClassifierConfig()),
    "vqhbr_small": (
        VQHBR,
        VQHBRConfig(
            embed_dim=128,
            encoder_depth=2,
            decoder_depth=1,
            heads=2,
            dim_head=32,
            mlp_dim=256,
            n_code=_SMALL_VOCAB,
            code_dim=32,
        ),
    ),  # fmt: skip
    "HeartLang_small": (HeartLang, HeartLangConfig(vocab_size=_SMALL_VOCAB, **_SMALL_BACKBONE)),
    "HeartLang_finetune_small": (HeartLangClassifier, ClassifierConfig(**_SMALL_BACKBONE)),
    "vqhbr_tiny": (
        VQHBR,
        VQHBRConfig(
            embed_dim=32,
            encoder_depth=2,
            decoder_depth=1,
            heads=2,
            dim_head=16,
            mlp_dim=64,
            n_code=64,
            code_dim=16,
        ),
    ),  # fmt: skip
    "HeartLang_tiny": (HeartLang, HeartLangConfig(vocab_size=64, **_TINY_BACKBONE)),
    "HeartLang_finetune_tiny": (HeartLangClassifier, ClassifierConfig(**_TINY_BACKBONE)),
}

_FACTORY_ONLY = ("pretrained", "as_tokenzer", "pretrained_weight")


def list_models() -> list[str]:
    return list(MODEL_CONFIGS)


def get_config(name: str, **overrides: Any):
    """The frozen config of ``name`` with ``overrides`` (config field names only)."""
    if name not in MODEL_CONFIGS:
        raise KeyError(f"unknown model {name!r}; known models: {', '.join(MODEL_CONFIGS)}")
    _, base = MODEL_CONFIGS[name]
    valid = {f.name for f in fields(base)}
    unknown = sorted(set(overrides) - valid)
    if unknown:
        raise TypeError(
            f"create_model({name!r}) got unexpected keyword(s) {unknown}; "
            f"valid: {sorted(valid | set(_FACTORY_ONLY))}"
        )
    return replace(base, **overrides)


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a model by registry name.

    ``pretrained=True`` is refused (there is no download); ``as_tokenzer=True`` (the original's spelling)
    with ``pretrained_weight=<path>`` loads a VQ-HBR checkpoint strictly and returns it frozen in eval mode,
    which is how the pre-training run builds its target tokenizer.
    """
    pretrained = kwargs.pop("pretrained", False)
    as_tokenzer = kwargs.pop("as_tokenzer", False)
    pretrained_weight = kwargs.pop("pretrained_weight", None)
    if pretrained:
        raise ValueError(
            "create_model(pretrained=True) is not supported: download the released checkpoint and load it "
            "with modeling.checkpoint.load_checkpoint_file + load_state_dict_strict"
        )
    config = get_config(name, **kwargs)
    cls, _ = MODEL_CONFIGS[name]
    model = cls(config)
    if as_tokenzer:
        if cls is not VQHBR:
            raise TypeError(f"as_tokenzer=True only applies to VQ-HBR models, not {name!r}")
        if pretrained_weight is None:
            raise ValueError(
                f"create_model({name!r}, as_tokenzer=True) needs pretrained_weight=<checkpoint path>"
            )
        from .checkpoint import load_checkpoint_file, load_state_dict_strict

        state = load_checkpoint_file(os.fspath(pretrained_weight))
        # Official behaviour: the tokenizer loader drops keys starting with loss / teacher / scaling
        # (left over from BEiT v2-style training wrappers) before the strict load.
        load_state_dict_strict(model, state, allow_unexpected=("loss*", "teacher*", "scaling*"))
        model.eval()
        model.requires_grad_(False)
    elif pretrained_weight is not None:
        raise ValueError("pretrained_weight is only used together with as_tokenzer=True")
    return model
