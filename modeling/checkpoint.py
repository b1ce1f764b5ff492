"""Checkpoint files and the model key contract (docs/models.md "Checkpoints"): read, kind rule, strict load.

* ``read_checkpoint(path)`` - the one file reader (weights_only, on CPU; a missing file, or one that is not a
  checkpoint, is named with what it is: ``CheckpointError``);
  ``state_dict_of`` - the weights in it, wrapper prefixes stripped (``strip_prefixes``); ``checkpoint_kind`` -
  the one rule telling a VQ-HBR, HeartLang pre-training and classifier state_dict apart;
  ``check_finite_state`` - NaN/inf weights refused, naming the file and the tensor.
* ``make_header`` / ``checkpoint_meta`` - the header a training checkpoint carries (model name, model config,
  recipe); files written before it existed and released files still load (``checkpoint_meta``).
* ``load_state_dict_strict`` - the only non-strict path, with explicit fnmatch allow-lists;
  ``load_pretrained_into_classifier`` - pre-training weights -> classifier backbone (``--finetune``).
* ``state_dict_spec`` / ``compare_key_contract`` - the official key tree (fixtures ``keys_*.json``).

A model rebuilt from a file is modeling/loading.py (``load_model``); saving and resuming training state is the
engine's (engine/checkpoint.py).
"""

from __future__ import annotations

import fnmatch
import os
import pickle
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from utils.integrity import check_finite
from utils.logging import to_plain

from .heartlang import HeartLang, HeartLangClassifier
from .hub import resolve_checkpoint
from .vqhbr import VQHBR

_WRAPPER_PREFIXES = ("module.", "_orig_mod.")
HEADER_FORMAT = 1  # state["header"]["format"] of the checkpoints this code writes


def read_checkpoint(path: str | os.PathLike, mmap: bool = False) -> Any:
    """The object stored in a checkpoint file: ``torch.load(weights_only=True)`` on CPU.

    A missing file raises FileNotFoundError; a file that is not a PyTorch checkpoint (JSON, ``.npy``,
    ``.npz``, empty, truncated) or holds pickled objects other than tensors and plain containers raises
    :class:`CheckpointError` (a RuntimeError) naming the file and what it is instead. Files are never
    unpickled with ``weights_only=False`` (that can run code), so no such advice is given.
    """
    path = Path(path)
    if not path.is_file():
        what = "is a folder, not a checkpoint file" if path.is_dir() else "does not exist"
        raise FileNotFoundError(f"checkpoint {path} {what}")
    _sniff_checkpoint(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:  # noqa: BLE001 - re-raised with the file name and the reason
        # from None: torch's own text advises weights_only=False, which would run code from the file
        raise CheckpointError(f"checkpoint {path}: {_load_failure(path, exc)}") from None


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be read as one: the message names the file and the reason."""


def _sniff_checkpoint(path: Path) -> None:
    """Refuse files that are certainly not PyTorch checkpoints, by their first bytes, naming what they are."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
    if size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes): an interrupted download or copy?")
    if head.startswith(b"PK\x03\x04"):  # torch.save's zip format (and .npz, .zip)
        import zipfile

        try:
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
        except zipfile.BadZipFile:
            raise CheckpointError(
                f"checkpoint {path} is a truncated or corrupt zip archive ({size} bytes): download or copy it again"
            ) from None
        if not any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
            hint = " (a NumPy .npz archive?)" if names and all(n.endswith(".npy") for n in names) else ""
            raise CheckpointError(
                f"checkpoint {path} is a zip archive but not a PyTorch checkpoint{hint}: it holds "
                f"{names[:5]}, and torch.save writes <name>/data.pkl"
            )
        return
    if head.startswith(b"\x80"):  # a pickle (torch's legacy format): let torch read it
        return
    if head.startswith(b"\x93NUMPY"):
        raise CheckpointError(f"checkpoint {path} is a NumPy .npy array, not a PyTorch checkpoint")
    text = head.lstrip()
    if text[:1] in (b"{", b"["):
        kind = "a JSON file"
    elif text[:1] == b"<":
        kind = "an HTML/XML page (a failed download?)"
    elif all(32 <= b < 127 or b in (9, 10, 13) for b in head):
        kind = "a text file"
    else:
        kind = "not a PyTorch checkpoint"
    raise CheckpointError(
        f"checkpoint {path} is {kind}, not a file written by torch.save (it starts with {head!r}); "
        "give a .pth checkpoint of this project or of the released HeartLang weights"
    )


def _load_failure(path: Path, exc: Exception) -> str:
    """Why torch.load failed, in words a user can act on (never 'set weights_only=False')."""
    msg = str(exc)
    if isinstance(exc, pickle.UnpicklingError) and "Weights only load failed" in msg:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", msg)
        what = f" ({found.group(1)})" if found else ""
        return (
            f"it holds a pickled Python object{what} besides tensors, numbers, strings and containers; "
            "checkpoints are read with weights_only=True, which never runs code from the file. Save the "
            "weights as {'model': model.state_dict()} (tensors only) and load that file"
        )
    size = path.stat().st_size
    first = msg.strip().splitlines()[0] if msg.strip() else ""
    return f"unreadable ({size} bytes; truncated or corrupt?): {type(exc).__name__}: {first[:200]}"


def strip_prefixes(state_dict: Mapping[str, Any]) -> dict:
    """Remove DDP's ``module.`` and torch.compile's ``_orig_mod.`` key prefixes, in any nesting order
    (``torch.compile(DDP(m))`` gives ``_orig_mod.module.``). Only leading prefixes are touched."""
    out = {}
    for key, value in state_dict.items():
        changed = True
        while changed:
            changed = False
            for prefix in _WRAPPER_PREFIXES:
                if key.startswith(prefix):
                    key, changed = key[len(prefix) :], True
        out[key] = value
    return out


def state_dict_of(obj: Any, source: str) -> dict[str, torch.Tensor]:
    """The model state_dict of a loaded checkpoint (``{"model": state_dict, ...}`` or a bare state_dict)."""
    if isinstance(obj, Mapping) and "model" in obj and isinstance(obj["model"], Mapping):
        obj = obj["model"]
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(
            f"checkpoint {source} holds neither {{'model': state_dict}} nor a bare state_dict of tensors"
        )
    return strip_prefixes(obj)


def load_checkpoint_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The state_dict of a checkpoint path or ``hf://`` spec (``{"model": sd, ...}`` or a bare sd)."""
    local = resolve_checkpoint(path)
    return state_dict_of(read_checkpoint(local), os.fspath(local))


def check_finite_state(state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Refuse NaN/inf in any floating tensor: ``NonFiniteError`` naming the file and the tensor."""
    for key, tensor in state_dict.items():
        check_finite(tensor, f"checkpoint {source}: tensor {key}")


# The one rule telling checkpoint kinds apart, used for models and files alike.
KINDS = {
    "vqhbr": "a VQ-HBR tokenizer",
    "heartlang": "a HeartLang pre-training model",
    "classifier": "a HeartLang classifier (fine-tuned)",
    "unknown": "an unknown model",
}
KIND_OF_CLASS = {VQHBR: "vqhbr", HeartLang: "heartlang", HeartLangClassifier: "classifier"}


def checkpoint_kind(keys: Iterable[str]) -> str:
    """``vqhbr`` | ``heartlang`` | ``classifier`` | ``unknown`` from the key names of a state_dict."""
    keys = set(keys)
    if any(k.startswith("encoder.") for k in keys) and any(k.startswith("quantize.") for k in keys):
        return "vqhbr"
    if any(k.startswith("backbone.") for k in keys):
        return "classifier"
    if "lm_head.weight" in keys and "cls_token" in keys:
        return "heartlang"
    return "unknown"


def make_header(model_name: str, model_config: Mapping, recipe: Mapping) -> dict:
    """The header a training run stores in its checkpoints (``state["header"]``): what :func:`load_model`
    needs to rebuild the model (registry name, its config) and the recipe it was trained with."""
    return {"format": HEADER_FORMAT, "model_name": str(model_name), "model_config": to_plain(dict(model_config)),
            "recipe": to_plain(dict(recipe))}  # fmt: skip


def checkpoint_meta(obj: Any) -> dict:
    """``{"model_name", "model_config", "recipe"}`` of a loaded checkpoint, from its header.

    Checkpoints written before the header existed stored the name in the flag dict (``args["model"]``) and
    ``model_config`` / ``recipe`` beside the weights: read from there, for those files only. Released files
    store none of it (all None)."""
    meta: dict[str, Any] = {"model_name": None, "model_config": None, "recipe": None}
    if not isinstance(obj, Mapping):
        return meta
    header = obj.get("header")
    if isinstance(header, Mapping):
        source = header
    else:  # written before the header existed
        args = obj.get("args")
        source = {"model_name": args.get("model") if isinstance(args, Mapping) else None,
                  "model_config": obj.get("model_config"), "recipe": obj.get("recipe")}  # fmt: skip
    if isinstance(source.get("model_name"), str):
        meta["model_name"] = source["model_name"]
    for key in ("model_config", "recipe"):
        if isinstance(source.get(key), Mapping):
            meta[key] = dict(source[key])
    return meta


@dataclass
class LoadReport:
    """What a tolerant load skipped: keys left at their initial values / dropped from the checkpoint."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    shape_mismatch: list[str] = field(default_factory=list)


def _matches(key: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(key, p) for p in patterns)


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
        lines = [f"cannot load {source} into {type(model).__name__}:"]
        ckpt_kind, model_kind = checkpoint_kind(state_dict), checkpoint_kind(own)
        if ckpt_kind != model_kind:
            lines.append(
                f"  wrong model: the {source} looks like {KINDS[ckpt_kind]}, the model is {KINDS[model_kind]}"
            )
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

    Keys get the prefix ``backbone.``; the pre-training ``lm_head`` (codebook-wide) is dropped and the
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
