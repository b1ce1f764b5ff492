"""A model rebuilt from a checkpoint: ``load_model`` (docs/models.md "Checkpoints").

* ``load_model(spec, name=None, **overrides)`` - a model with the file's weights, loaded strictly: its config is
  the checkpoint's header (our checkpoints; modeling.checkpoint.checkpoint_meta) or a registry name (released
  files: given, or inferred from the kind and the tensor shapes); ``spec`` is a path or
  ``hf://<org>/<repo>/<file>`` (``modeling.hub``).
* ``tokenizer_size(spec)`` - ``(codebook_size, codebook_dim)`` of a VQ-HBR checkpoint.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checkpoint import (
    KIND_OF_CLASS,
    KINDS,
    check_finite_state,
    checkpoint_kind,
    checkpoint_meta,
    load_pretrained_into_classifier,
    load_state_dict_strict,
    read_checkpoint,
    state_dict_of,
)
from .config import BackboneConfig, canonical_fields
from .heartlang import HeartLang, HeartLangClassifier
from .hub import resolve_checkpoint
from .registry import MODEL_CONFIGS, create_model, get_config

_CLASS_OF_KIND = {kind: cls for cls, kind in KIND_OF_CLASS.items()}
_DEFAULT_NAME = {"vqhbr": "vqhbr", "heartlang": "HeartLang", "classifier": "HeartLang_finetune_base"}
_CONFIG_OF_KIND = {kind: type(MODEL_CONFIGS[name][1]) for kind, name in _DEFAULT_NAME.items()}
# model kind -> checkpoint kinds it loads from (a classifier <-> HeartLang share the backbone)
_LOADS_INTO = {
    "vqhbr": {"vqhbr"},
    "heartlang": {"heartlang", "classifier"},
    "classifier": {"classifier", "heartlang"},
}


@dataclass(frozen=True)
class CheckpointInfo:
    """What ``load_model`` loaded: ``spec`` as given, the local ``path``, the ``kind`` of the file, the
    registry ``name`` and ``config`` of the model built. Set as ``model.checkpoint_info``."""

    spec: str
    path: Path
    kind: str
    name: str | None  # None: our checkpoint stores a config but no registry name
    config: Any


def _sizes_from_weights(kind: str, cls: type[nn.Module], sd: Mapping[str, torch.Tensor]) -> dict[str, int]:
    """Config fields that the file's tensors fix but a registry name does not (codebook, classes)."""
    if kind == "vqhbr":
        n, d = sd["quantize.embedding.weight"].shape
        return {"codebook_size": int(n), "codebook_dim": int(d)}
    if kind == "heartlang":
        if cls is HeartLang:
            return {"codebook_size": int(sd["lm_head.weight"].shape[0])}
        return {}  # into a classifier: new mlp_head, the backbone keeps its unused 1024-wide lm_head
    if cls is HeartLangClassifier:
        return {
            "num_classes": int(sd["mlp_head.weight"].shape[0]),
            "backbone_codebook_size": int(sd["backbone.lm_head.weight"].shape[0]),
        }
    return {"codebook_size": int(sd["backbone.lm_head.weight"].shape[0])}  # a classifier's backbone


def _fields(config_cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(config_cls)}


def _shapes(sd: Mapping[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in sd.items()}


def _infer_name(
    kind: str, cls: type[nn.Module], sd: Mapping[str, torch.Tensor], source: str, overrides
) -> str:
    """The registry name of class ``cls`` whose weights have exactly the file's shapes."""
    sizes = _sizes_from_weights(kind, cls, sd)
    if kind == "classifier" and cls is HeartLang:
        sd = {k[len("backbone.") :]: v for k, v in sd.items() if k.startswith("backbone.")}
    elif kind == "heartlang" and cls is HeartLangClassifier:
        sd = {f"backbone.{k}": v for k, v in sd.items() if not k.startswith("lm_head.")}
    want = _shapes(sd)
    found = []
    for name, (c, _) in MODEL_CONFIGS.items():
        if c is not cls:
            continue
        with torch.device("meta"):  # shapes only: no memory, no initialisation cost
            probe = create_model(name, **{**sizes, **overrides})
        got = {
            k: v
            for k, v in _shapes(probe.state_dict()).items()
            if not k.startswith(("mlp_head.", "backbone.lm_head."))
        }
        if all(want.get(k) == s for k, s in got.items()):
            found.append(name)
    if len(found) != 1:
        what = "no registry model has" if not found else f"several registry models ({found}) have"
        raise ValueError(
            f"{source} stores no model config and {what} its tensor shapes; pass name=, one of "
            f"{[n for n, (c, _) in MODEL_CONFIGS.items() if c is cls]}"
        )
    return found[0]


def load_model(
    spec: str | os.PathLike | None = None,
    name: str | None = None,
    *,
    kind: str | Iterable[str] | None = None,
    repo_id: str | None = None,
    filename: str | None = None,
    revision: str | None = None,
    device: str | torch.device = "cpu",
    **overrides: Any,
) -> nn.Module:
    """A model with the checkpoint's weights, loaded strictly, in eval mode.

    spec: a checkpoint path or ``hf://<org>/<repo>[@rev]/<file>`` (or ``repo_id=`` + ``filename=``).
    name: registry name. Default: the name stored in our checkpoints (``args.model``), else inferred from
        the file's kind and tensor shapes (released files). A classifier name with a pre-training
        checkpoint loads the backbone as ``--finetune`` does (new ``mlp_head``); ``HeartLang`` with a
        classifier checkpoint loads its backbone.
    kind: the checkpoint kind(s) the caller accepts (``vqhbr``, ``heartlang``, ``classifier``); another
        kind is refused with a message (e.g. a VQ-HBR file given as ``--finetune``).
    overrides: config fields on top of the stored / registry config (e.g. ``num_classes``,
        ``padding_attention_mask``). One that contradicts the file's stored config on the weights'
        shapes is refused.

    The config is the stored ``model_config`` (our checkpoints); for files without one it is the
    registry name's, with the codebook / class counts read from the tensors. NaN/inf weights are refused.
    ``model.checkpoint_info`` (:class:`CheckpointInfo`) records what was loaded.
    """
    path = resolve_checkpoint(spec, repo_id=repo_id, filename=filename, revision=revision)
    source = os.fspath(path)
    given = os.fspath(spec) if spec is not None else f"hf://{repo_id}/{filename}"
    obj = read_checkpoint(path)  # read once: weights and meta come from the same object
    sd = state_dict_of(obj, source)
    file_kind = _checked_kind(sd, kind, given)
    check_finite_state(sd, source)
    name, cls, config = _resolve_config(file_kind, sd, checkpoint_meta(obj), name, overrides, given, source)
    net = cls(config)
    _load_weights(net, sd, KIND_OF_CLASS[cls], file_kind, source)
    net.checkpoint_info = CheckpointInfo(given, path, file_kind, name, config)
    return net.to(device).eval()


def _checked_kind(sd: Mapping[str, torch.Tensor], kind, given: str) -> str:
    """The file's kind, refused unless among the caller's accepted ``kind``(s)."""
    file_kind = checkpoint_kind(sd)
    accepted = {kind} if isinstance(kind, str) else set(kind or KIND_OF_CLASS.values())
    if not accepted <= set(KIND_OF_CLASS.values()):
        raise ValueError(f"kind must be among {sorted(KIND_OF_CLASS.values())}, got {sorted(accepted)}")
    if file_kind not in accepted:
        want = " or ".join(KINDS[k] for k in sorted(accepted))
        raise ValueError(f"{given} holds {KINDS[file_kind]} checkpoint; expected {want}")
    return file_kind


def _resolve_config(file_kind: str, sd, meta: dict, name: str | None, overrides: dict, given: str, source: str):
    """``(registry name or None, model class, config)``: the stored config (our checkpoints) or the registry
    name's with the sizes read from the tensors; a request that contradicts the file is refused."""
    stored_name = meta["model_name"] if meta["model_name"] in MODEL_CONFIGS else None
    if name is None and stored_name and KIND_OF_CLASS[MODEL_CONFIGS[stored_name][0]] == file_kind:
        name = stored_name  # our checkpoint: the registry name it was trained as
    if name is not None:
        get_config(name)  # KeyError naming the known models
    cls = MODEL_CONFIGS[name][0] if name else _CLASS_OF_KIND[file_kind]
    target = KIND_OF_CLASS[cls]
    if file_kind not in _LOADS_INTO[target]:
        raise ValueError(f"{given} holds {KINDS[file_kind]} checkpoint; model {name!r} is {KINDS[target]}")
    config_cls = type(MODEL_CONFIGS[_DEFAULT_NAME[target]][1])
    overrides = canonical_fields(config_cls, overrides, f"load_model({given!r})")
    # What the file fixes: the codebook / class counts of its tensors, and the stored config (ours).
    fixed: dict[str, Any] = _sizes_from_weights(file_kind, cls, sd)
    clash = []
    if meta["model_config"] is not None:
        stored = canonical_fields(_CONFIG_OF_KIND[file_kind], meta["model_config"], f"{source} model_config")
        keep = _fields(config_cls) if file_kind == target else _fields(BackboneConfig)
        fixed.update({k: v for k, v in stored.items() if k in keep})
        if name is not None and name != stored_name:
            base = MODEL_CONFIGS[name][1]
            clash += [
                f"{k}={fixed[k]!r} in the file, {getattr(base, k)!r} in {name!r}"
                for k in base.ARCHITECTURE if k in fixed and k not in overrides and fixed[k] != getattr(base, k)
            ]  # fmt: skip
    else:
        name = name or _infer_name(file_kind, cls, sd, given, overrides)
    shape_fields = set(config_cls.ARCHITECTURE) | {"codebook_size", "codebook_dim", "num_classes",
                                                   "backbone_codebook_size"}  # fmt: skip
    clash += [
        f"{k}={fixed[k]!r} in the file, {v!r} requested"
        for k, v in overrides.items() if k in shape_fields and k in fixed and fixed[k] != v
    ]  # fmt: skip
    if clash:
        raise ValueError(f"{given} does not hold the requested model: " + "; ".join(clash))
    return name, cls, get_config(name or _DEFAULT_NAME[target], **{**fixed, **overrides})


def _load_weights(net: nn.Module, sd, target: str, file_kind: str, source: str) -> None:
    if target == "classifier" and file_kind == "heartlang":
        load_pretrained_into_classifier(net, sd, source=source)
    elif target == "heartlang" and file_kind == "classifier":
        backbone = {k[len("backbone.") :]: v for k, v in sd.items() if k.startswith("backbone.")}
        load_state_dict_strict(net, backbone, source=source)  # mlp_head is not part of it
    else:
        # Official behaviour: the tokenizer loader drops keys starting with loss / teacher / scaling
        # (left over from BEiT v2-style training wrappers) before the strict load.
        allow = ("loss*", "teacher*", "scaling*") if target == "vqhbr" else ()
        load_state_dict_strict(net, sd, allow_unexpected=allow, source=source)


def tokenizer_size(spec: str | os.PathLike) -> tuple[int, int]:
    """``(codebook_size, codebook_dim)`` of a VQ-HBR checkpoint (path or ``hf://`` spec), from its weights."""
    path = resolve_checkpoint(spec)
    sd = state_dict_of(read_checkpoint(path, mmap=True), os.fspath(path))
    kind = checkpoint_kind(sd)
    if kind != "vqhbr":
        raise ValueError(f"{spec} holds {KINDS[kind]} checkpoint; expected {KINDS['vqhbr']}")
    n, d = sd["quantize.embedding.weight"].shape
    return int(n), int(d)
