"""HeartLang as a feature extractor: load a checkpoint, tokenise raw ECGs, get embeddings (paper Sec. 3.1, 3.3).

    from modeling import load_pretrained, embed_ecg
    model = load_pretrained("checkpoints/heartlang.pth", model="HeartLang")      # released weights
    model = load_pretrained("output/pretrain/checkpoint-200.pth")                  # ours: config inside
    emb = embed_ecg(model, signal)            # signal (12, 1000) or (N, 12, 1000), 100 Hz -> (N, D) CLS

* :func:`load_pretrained` reads our training checkpoints (``{"model", "model_config", "args", ...}``:
  the model is rebuilt from the stored config) and the released ones (``{"model": state_dict}``, or a bare
  state_dict: give a registry name, ``HeartLang`` or ``HeartLang_finetune_base``). Loading is strict, through
  the same helpers the training CLIs use (``load_state_dict_strict`` / ``load_pretrained_into_classifier``).
* :func:`embed_sentences` runs the encoder (no mask) on tokenised sentences ``x (B, 256, 96)``,
  ``in_chans (B, 256)``, ``in_times (B, 256)`` and pools the final-norm features: ``cls`` = the CLS
  output (what the linear probe reads), ``mean`` = the mean over the sentence's real words (lead id
  != 0; a sentence without any word gets zeros).
* :func:`embed_ecg` tokenises raw records with :func:`datasets.qrs.tokenizer.tokenize_record` first.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from .checkpoint import (
    load_pretrained_into_classifier,
    load_state_dict_strict,
    read_checkpoint,
    state_dict_of,
)
from .embedding import padding_positions
from .heartlang import HeartLang, HeartLangClassifier
from .registry import MODEL_CONFIGS, create_model, get_config

POOLS = ("cls", "mean", "both")


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


def _backbone(model: nn.Module) -> HeartLang:
    if isinstance(model, HeartLangClassifier):
        return model.backbone
    if isinstance(model, HeartLang):
        return model
    raise TypeError(f"expected a HeartLang or HeartLangClassifier, got {type(model).__name__}")


@torch.no_grad()
def embed_sentences(
    model: nn.Module,
    x: torch.Tensor | np.ndarray,
    in_chans: torch.Tensor | np.ndarray | None = None,
    in_times: torch.Tensor | np.ndarray | None = None,
    pool: str = "cls",
) -> torch.Tensor:
    """Sentence embeddings. x: (B, 256, 96); in_chans, in_times: (B, 256) ints (0 = padding).

    Returns (B, D) for ``cls`` / ``mean``, (B, 2, D) for ``both`` ([:, 0] CLS, [:, 1] mean), float32 on CPU.
    """
    if pool not in POOLS:
        raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
    backbone = _backbone(model)
    device = next(backbone.parameters()).device
    x = torch.as_tensor(x, dtype=torch.float32, device=device)
    c = None if in_chans is None else torch.as_tensor(in_chans, dtype=torch.long, device=device)
    t = None if in_times is None else torch.as_tensor(in_times, dtype=torch.long, device=device)
    backbone.eval()
    feats = backbone(x, None, c, t, return_all_tokens=True)  # (B, 257, D), final LayerNorm applied
    cls = feats[:, 0]
    real = ~padding_positions(x, c)  # (B, 256): the padding rule of padding_attention_mask
    weights = real.to(feats.dtype).unsqueeze(-1)
    mean = (feats[:, 1:] * weights).sum(1) / weights.sum(1).clamp(min=1.0)
    out = {"cls": cls, "mean": mean, "both": torch.stack([cls, mean], dim=1)}[pool]
    return out.float().cpu()


def tokenize_ecgs(signals: np.ndarray, fs: int = 100, used_channels=None, detector: str = "xqrs"):
    """Raw records (N, leads, T) or one (leads, T) -> ``(x (N, 256, 96), in_chans (N, 256), in_times (N, 256))``."""
    from datasets.qrs.tokenizer import tokenize_record

    signals = np.asarray(signals)
    if signals.ndim == 2:
        signals = signals[None]
    if signals.ndim != 3:
        raise ValueError(f"signals must be (leads, T) or (N, leads, T), got shape {signals.shape}")
    words, chans, times = [], [], []
    for record in signals:
        w, c, t, _ = tokenize_record(record, used_channels=used_channels, fs=fs, detector=detector)
        words.append(w)
        chans.append(c)
        times.append(t)
    return np.stack(words), np.stack(chans), np.stack(times)


def embed_ecg(model: nn.Module, signals: np.ndarray, pool: str = "cls", fs: int = 100, **tokenizer_kwargs):
    """Raw 100 Hz records (12, 1000) or (N, 12, 1000), preprocessed like the training data -> embeddings.

    Returns (N, D) for ``cls`` / ``mean``, (N, 2, D) for ``both``.
    """
    x, c, t = tokenize_ecgs(signals, fs=fs, **tokenizer_kwargs)
    return embed_sentences(model, x, c, t, pool=pool)
