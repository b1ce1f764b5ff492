"""Load a HeartLang checkpoint for feature extraction (paper Sec. 3.3).

    from modeling import load_pretrained
    model = load_pretrained("checkpoints/heartlang.pth", model="HeartLang")      # released weights
    model = load_pretrained("output/pretrain/checkpoint-200.pth")                  # ours: config inside

* :func:`load_pretrained` reads our training checkpoints (``{"model", "model_config", "args", ...}``:
  the model is rebuilt from the stored config) and the released ones (``{"model": state_dict}``, or a bare
  state_dict: give a registry name, ``HeartLang`` or ``HeartLang_finetune_base``). Loading is strict, through
  the same helpers the training CLIs use (``load_state_dict_strict`` / ``load_pretrained_into_classifier``).
* Embeddings from tokenised sentences or raw records: :mod:`inference` (``embed_sentences``, ``embed_ecg``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch
from torch import nn

from .checkpoint import (
    load_pretrained_into_classifier,
    load_state_dict_strict,
    read_checkpoint,
    state_dict_of,
)
from .heartlang import HeartLang, HeartLangClassifier
from .registry import MODEL_CONFIGS, create_model, get_config


def checkpoint_meta(obj: object) -> dict:
    """``{"model_name", "model_config"}`` of a loaded checkpoint, as our training scripts store them;
    empty values for released files."""
    meta = {"model_name": None, "model_config": None}
    if isinstance(obj, Mapping):
        args = obj.get("args")
        if isinstance(args, Mapping) and isinstance(args.get("model"), str):
            meta["model_name"] = args["model"]
        if isinstance(obj.get("model_config"), Mapping):
            meta["model_config"] = dict(obj["model_config"])
    return meta


def _checkpoint_kind(state_dict: Mapping[str, torch.Tensor]) -> str:
    if any(k.startswith("backbone.") for k in state_dict):
        return "classifier"
    if any(k.startswith(("encoder.", "quantize.")) for k in state_dict):
        return "vqhbr"
    return "heartlang"


def load_pretrained(
    checkpoint: str | os.PathLike,
    model: str | None = None,
    device: str | torch.device = "cpu",
    **overrides,
) -> nn.Module:
    """A HeartLang / HeartLangClassifier in eval mode with the checkpoint's weights (strict loading).

    checkpoint: our ``checkpoint*.pth`` or a released ``{"model": state_dict}`` file.
    model: registry name; default the name stored in the checkpoint. Needed for released files.
        A classifier name with a pre-training checkpoint loads it as ``run_class_finetuning.py --finetune``
        does (backbone only; ``mlp_head`` keeps its initial values and is not used for features).
    overrides: config fields (e.g. ``num_classes``) on top of the stored / registry config.
    """
    source = os.fspath(checkpoint)
    obj = read_checkpoint(source)  # read once: state_dict and meta come from the same object
    state_dict = state_dict_of(obj, source)
    meta = checkpoint_meta(obj)
    name = model or meta["model_name"]
    if name is None:
        raise ValueError(
            f"{checkpoint} stores no model name (a released checkpoint?): pass model=, e.g. 'HeartLang' "
            f"or 'HeartLang_finetune_base'; known names: {', '.join(MODEL_CONFIGS)}"
        )
    base = get_config(name)  # KeyError naming the known models for an unknown name
    cls = MODEL_CONFIGS[name][0]
    kind = _checkpoint_kind(state_dict)
    if kind == "vqhbr" or cls not in (HeartLang, HeartLangClassifier):
        raise ValueError(
            f"{checkpoint}: feature extraction needs a HeartLang pre-training or fine-tuned checkpoint and a "
            f"HeartLang model name; got a {kind} checkpoint and model {name!r}"
        )
    # Our checkpoints carry the exact config; keep the fields the target class knows (a pre-training
    # config has vocab_size, a classifier config num_classes).
    valid = set(base.__dataclass_fields__)
    config = {k: v for k, v in (meta["model_config"] or {}).items() if k in valid}
    if cls is HeartLangClassifier and kind == "classifier":
        config["num_classes"] = int(state_dict["mlp_head.weight"].shape[0])
    if cls is HeartLang:
        # The classifier's backbone is a HeartLang whose lm_head is the unused 1024-wide one.
        head = "lm_head.weight" if kind == "heartlang" else "backbone.lm_head.weight"
        config["vocab_size"] = int(state_dict[head].shape[0])
    config.update(overrides)
    net = create_model(name, **config)
    if cls is HeartLangClassifier and kind == "heartlang":
        load_pretrained_into_classifier(net, state_dict, source=source)
    elif cls is HeartLang and kind == "classifier":
        backbone = {k[len("backbone.") :]: v for k, v in state_dict.items() if k.startswith("backbone.")}
        load_state_dict_strict(net, backbone, source=source)  # mlp_head is not part of it
    else:
        load_state_dict_strict(net, state_dict, source=source)
    return net.to(device).eval()
