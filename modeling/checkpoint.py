"""Checkpoint loading and the state-dict key contract (DESIGN Sec. 3 "Checkpoint compatibility").

Loading is strict. The only non-strict path is ``load_state_dict_strict`` with explicit allow-lists
(fnmatch patterns on the model's key names), which raises a message that says what went wrong: a
checkpoint of another model, of another size, or with missing keys.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from utils.checkpoint import load_file, strip_prefixes


@dataclass
class LoadReport:
    """What a tolerant load skipped: keys left at their initial values / dropped from the checkpoint."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    shape_mismatch: list[str] = field(default_factory=list)


def read_checkpoint(path: str | os.PathLike) -> Any:
    """The whole object stored in a checkpoint file, read on CPU with weights_only=True; a missing or
    unreadable file raises an error that names it (``utils.checkpoint.load_file``)."""
    return load_file(path)


def state_dict_of(obj: Any, source: str) -> dict[str, torch.Tensor]:
    """The model state_dict of a loaded checkpoint (``{"model": state_dict, ...}`` or a bare state_dict)."""
    if isinstance(obj, Mapping) and "model" in obj and isinstance(obj["model"], Mapping):
        obj = obj["model"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(
            f"checkpoint {source} holds neither {{'model': state_dict}} nor a bare state_dict of tensors"
        )
    return strip_prefixes(obj)


def load_checkpoint_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a checkpoint (``{"model": state_dict, ...}`` or a bare state_dict) with weights_only=True."""
    return state_dict_of(read_checkpoint(path), os.fspath(path))


def _matches(key: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(key, p) for p in patterns)


def _guess_model(keys: Iterable[str]) -> str:
    keys = set(keys)
    if any(k.startswith("encoder.") for k in keys) and any(k.startswith("quantize.") for k in keys):
        return "a VQ-HBR tokenizer"
    if any(k.startswith("backbone.") for k in keys):
        return "a HeartLang classifier (fine-tuned)"
    if "lm_head.weight" in keys and "cls_token" in keys:
        return "a HeartLang pre-training model"
    return "an unknown model"


def load_state_dict_strict(
    model: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    allow_missing: Iterable[str] = (),
    allow_unexpected: Iterable[str] = (),
    allow_shape_mismatch: Iterable[str] = (),
    source: str = "checkpoint",
) -> LoadReport:
    """Load ``state_dict`` into ``model``; every difference must be allowed by a pattern, else ValueError.

    Allowed unexpected and shape-mismatched keys are dropped from the checkpoint (the model keeps its
    initial values for the latter); allowed missing keys keep their initial values.
    """
    allow_missing, allow_unexpected = tuple(allow_missing), tuple(allow_unexpected)
    allow_shape_mismatch = tuple(allow_shape_mismatch)
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    mismatch = [k for k in own if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)]
    bad_missing = [k for k in missing if not _matches(k, allow_missing)]
    bad_unexpected = [k for k in unexpected if not _matches(k, allow_unexpected)]
    bad_mismatch = [k for k in mismatch if not _matches(k, allow_shape_mismatch)]
    if bad_missing or bad_unexpected or bad_mismatch:
        name = type(model).__name__
        lines = [f"cannot load {source} into {name}:"]
        ckpt_kind, model_kind = _guess_model(state_dict), _guess_model(own)
        if ckpt_kind != model_kind:
            lines.append(f"  wrong model: the {source} looks like {ckpt_kind}, the model is {model_kind}")
        if bad_mismatch:
            lines.append(f"  wrong size: {len(bad_mismatch)} tensor(s) differ in shape, e.g.")
            lines += [
                f"    {k}: {source} {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
                for k in bad_mismatch[:5]
            ]
        if bad_missing:
            lines.append(f"  missing keys ({len(bad_missing)}): {bad_missing[:8]}")
        if bad_unexpected:
            lines.append(f"  unexpected keys ({len(bad_unexpected)}): {bad_unexpected[:8]}")
        raise ValueError("\n".join(lines))
    to_load = {k: v for k, v in state_dict.items() if k in own and k not in mismatch}
    result = model.load_state_dict(to_load, strict=False)
    assert not result.unexpected_keys and set(result.missing_keys) == set(missing) | set(mismatch)
    return LoadReport(missing=missing, unexpected=unexpected, shape_mismatch=mismatch)


def load_pretrained_into_classifier(
    classifier: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = "checkpoint"
) -> LoadReport:
    """Load a HeartLang pre-training state_dict into ``classifier.backbone``.

    Keys get the prefix ``backbone.``; the pre-training ``lm_head`` (vocabulary-wide) is dropped and the
    classifier's unused 1024-wide one keeps its initial values; ``mlp_head`` must be missing (new head).
    Anything else raises ValueError.
    """
    if any(k.startswith(("backbone.", "mlp_head.")) for k in state_dict):
        raise ValueError(
            f"{source} is already a classifier state_dict (it has backbone.* / mlp_head.* keys); "
            "load it with load_state_dict_strict(model, state_dict) instead"
        )
    # Official behaviour: the original reports the lm_head size mismatch (8192 vs 1024) and mlp_head as
    # missing, then goes on; here exactly these two differences are allowed and everything else raises.
    prefixed = {f"backbone.{k}": v for k, v in state_dict.items() if not k.startswith("lm_head.")}
    report = load_state_dict_strict(
        classifier,
        prefixed,
        allow_missing=(
            "mlp_head.weight",
            "mlp_head.bias",
            "backbone.lm_head.weight",
            "backbone.lm_head.bias",
        ),
        source=source,
    )
    report.unexpected = [k for k in state_dict if k.startswith("lm_head.")]
    return report


def state_dict_spec(model: nn.Module) -> list[dict]:
    """Ordered ``[{key, shape, kind, requires_grad}]`` of ``model.state_dict()`` (format of keys_*.json)."""
    params = dict(model.named_parameters())
    spec = []
    for key, tensor in model.state_dict().items():
        is_param = key in params
        spec.append(
            {
                "key": key,
                "shape": list(tensor.shape),
                "kind": "parameter" if is_param else "buffer",
                "requires_grad": bool(params[key].requires_grad) if is_param else False,
            }
        )
    return spec


def compare_key_contract(model: nn.Module, reference: list[dict]) -> list[str]:
    """Differences between the model's state_dict spec and a reference list (keys_*.json["state_dict"]).

    Returns human-readable lines; an empty list means keys, order, shapes, kinds and requires_grad agree.
    """
    ours = state_dict_spec(model)
    fields_ = ("key", "shape", "kind", "requires_grad")
    diffs = []
    if len(ours) != len(reference):
        diffs.append(f"{len(ours)} keys vs {len(reference)} in the reference")
    for i, (a, b) in enumerate(zip(ours, reference)):
        for f in fields_:
            if a[f] != b[f]:
                diffs.append(f"#{i} {a['key']}: {f} {a[f]!r} vs reference {b[f]!r} ({b['key']})")
    extra = ours[len(reference) :] or reference[len(ours) :]
    diffs += [f"unmatched key {e['key']}" for e in extra]
    return diffs
