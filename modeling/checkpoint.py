"""Checkpoints, one module: save, resume, read, load a model (docs/models.md "Checkpoints").

Save (training): ``build_state`` -> ``{model, optimizer, scaler, epoch, args, model_config, rng, ...}``,
``save_checkpoint`` / ``save_epoch_checkpoints`` write it on rank 0 through a temp file + ``os.replace``
(a crash mid-write leaves the previous file loadable). Everything is loadable with
``torch.load(weights_only=True)`` (args as a plain dict, numpy RNG state as a tensor).

Resume: ``find_latest_checkpoint`` / ``auto_resume`` (model strictly, optimizer, scaler, RNG state).

Read and load, every path through the same helpers:

* ``read_checkpoint(path)`` - the one file reader (weights_only, on CPU; a missing / corrupt file is
  named); ``state_dict_of`` - the weights in it, wrapper prefixes stripped (``strip_prefixes``);
  ``checkpoint_kind`` - the one rule telling a VQ-HBR, HeartLang pre-training and classifier state_dict
  apart; ``check_finite_state`` - NaN/inf weights refused, naming the file and the tensor.
* ``load_state_dict_strict`` - the only non-strict path, with explicit fnmatch allow-lists;
  ``load_pretrained_into_classifier`` - pre-training weights -> classifier backbone (``--finetune``).
* ``load_model(spec, name=None, **overrides)`` - a model rebuilt from the checkpoint: from its stored
  ``model_config`` (our checkpoints) or from a registry name (released files: given, or inferred from the
  kind and the tensor shapes); ``spec`` is a path or ``hf://<org>/<repo>/<file>`` (``modeling.hub``).
* ``tokenizer_size(spec)`` - ``(codebook_size, codebook_dim)`` of a VQ-HBR checkpoint.
"""

from __future__ import annotations

import dataclasses
import errno
import fnmatch
import os
import pickle
import random
import re
import shutil
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from utils.dist import is_main_process
from utils.integrity import atomic_file, check_finite
from utils.logging import to_plain

from .config import BackboneConfig, canonical_fields
from .heartlang import HeartLang, HeartLangClassifier
from .hub import resolve_checkpoint
from .registry import MODEL_CONFIGS, create_model, get_config
from .vqhbr import VQHBR

_PERIODIC = re.compile(r"^checkpoint-(\d+)\.pth$")
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")

# ----------------------------------------------------------------------------------------------- save


def rng_state() -> dict:
    """Python, numpy and torch (CPU, CUDA) RNG states of this process."""
    np_state = np.random.get_state()
    state = {
        "python": list(random.getstate()[1]) + [random.getstate()[0]],
        "python_gauss": random.getstate()[2],
        "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
        "numpy_gauss": [int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    py = state["python"]
    random.setstate((int(py[-1]), tuple(int(v) for v in py[:-1]), state["python_gauss"]))
    has_gauss, cached = state["numpy_gauss"]
    np.random.set_state(
        ("MT19937", state["numpy_keys"].numpy().astype(np.uint32), state["numpy_pos"], int(has_gauss), cached)
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temp file beside ``path``, fsync, then ``os.replace`` (utils.integrity.atomic_file)."""
    with atomic_file(path, "wb", fsync=True) as fh:
        try:
            torch.save(obj, fh)
        except RuntimeError as exc:  # torch's zip writer: "file write failed", no file named
            if "write" not in str(exc).lower():
                raise
            free = shutil.disk_usage(Path(path).parent).free
            raise OSError(
                errno.ENOSPC if free < (64 << 20) else errno.EIO,
                f"writing checkpoint {path} failed ({free / 2**20:.0f} MiB free on its device): "
                f"{str(exc).strip().splitlines()[0][:200]}",
                os.fspath(path),
            ) from exc
    return Path(path)


def save_checkpoint(output_dir: str | os.PathLike, name: str, state: dict) -> Path | None:
    """Save ``state`` as ``output_dir/name`` on rank 0 (other ranks return None)."""
    if not is_main_process():
        return None
    return atomic_torch_save(state, Path(output_dir) / name)


def build_state(
    model_without_ddp: nn.Module,
    epoch: int,
    args=None,
    optimizer: torch.optim.Optimizer | None = None,
    scaler=None,
    model_config: dict | None = None,
    **extra,
) -> dict:
    """The checkpoint dict saved by every stage."""
    state = {"model": model_without_ddp.state_dict(), "epoch": int(epoch), "rng": rng_state()}
    if optimizer is not None:
        state["optimizer"] = optimizer.state_dict()
    if scaler is not None:
        state["scaler"] = scaler.state_dict()
    if args is not None:
        state["args"] = to_plain(args)
    if model_config is not None:
        state["model_config"] = to_plain(model_config)
    state.update(extra)
    return state


def save_epoch_checkpoints(
    output_dir, epoch: int, total_epochs: int, save_freq: int, state: dict
) -> list[Path]:
    """``checkpoint.pth`` every epoch, ``checkpoint-{epoch+1}.pth`` every ``save_freq`` epochs and at the end.

    Epochs are 0-based in the loop; file names are 1-based, as in the original scripts
    (``checkpoint-100.pth`` is the state after 100 epochs).
    """
    written = []
    done = epoch + 1
    if save_freq > 0 and (done % save_freq == 0 or done == total_epochs):
        written.append(save_checkpoint(output_dir, f"checkpoint-{done}.pth", state))
    written.append(save_checkpoint(output_dir, "checkpoint.pth", state))
    return [w for w in written if w is not None]


# ----------------------------------------------------------------------------------------------- read


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


def check_finite_optimizer_state(
    optimizer_state: Any, source: str, param_names: Mapping[int, str] | None = None
) -> None:
    """Refuse NaN/inf in a stored optimizer state (AdamW moments): resuming from it would end in a NaN loss
    reported as divergence. ``NonFiniteError`` names the file, the parameter and the state entry."""
    state = optimizer_state.get("state", {}) if isinstance(optimizer_state, Mapping) else {}
    for pid, entries in state.items():
        if not isinstance(entries, Mapping):
            continue
        who = (param_names or {}).get(pid, f"#{pid}")
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                check_finite(value, f"checkpoint {source}: optimizer state {key} of parameter {who}")


# The one rule telling checkpoint kinds apart, used for models and files alike.
KINDS = {
    "vqhbr": "a VQ-HBR tokenizer",
    "heartlang": "a HeartLang pre-training model",
    "classifier": "a HeartLang classifier (fine-tuned)",
    "unknown": "an unknown model",
}
_KIND_OF_CLASS = {VQHBR: "vqhbr", HeartLang: "heartlang", HeartLangClassifier: "classifier"}
_CLASS_OF_KIND = {kind: cls for cls, kind in _KIND_OF_CLASS.items()}
_DEFAULT_NAME = {"vqhbr": "vqhbr", "heartlang": "HeartLang", "classifier": "HeartLang_finetune_base"}
_CONFIG_OF_KIND = {kind: type(MODEL_CONFIGS[name][1]) for kind, name in _DEFAULT_NAME.items()}
# model kind -> checkpoint kinds it loads from (a classifier <-> HeartLang share the backbone)
_LOADS_INTO = {
    "vqhbr": {"vqhbr"},
    "heartlang": {"heartlang", "classifier"},
    "classifier": {"classifier", "heartlang"},
}


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


def checkpoint_meta(obj: Any) -> dict:
    """``{"model_name", "model_config"}`` as our training scripts store them; None for released files."""
    meta: dict[str, Any] = {"model_name": None, "model_config": None}
    if isinstance(obj, Mapping):
        args = obj.get("args")
        if isinstance(args, Mapping) and isinstance(args.get("model"), str):
            meta["model_name"] = args["model"]
        if isinstance(obj.get("model_config"), Mapping):
            meta["model_config"] = dict(obj["model_config"])
    return meta


# ----------------------------------------------------------------------------------------- strict load


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


# ------------------------------------------------------------------------------------------- resume


def _epoch_of(path: Path) -> int | None:
    try:
        ckpt = read_checkpoint(path, mmap=True)
    except RuntimeError as exc:
        warnings.warn(f"skipping unreadable checkpoint while resuming: {exc}", stacklevel=2)
        return None
    return int(ckpt["epoch"]) if isinstance(ckpt, dict) and "epoch" in ckpt else None


def find_latest_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    """Newest resumable checkpoint in ``output_dir``: the highest stored epoch among
    ``checkpoint.pth`` and ``checkpoint-N.pth`` (``checkpoint-best.pth`` is not a
    resume point). Ties prefer ``checkpoint.pth``; unreadable files are skipped."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return None
    best: tuple[int, int, Path] | None = None
    for path in output_dir.iterdir():
        if path.name == "checkpoint.pth":
            rank = 1
        elif _PERIODIC.match(path.name):
            rank = 0
        else:
            continue
        epoch = _epoch_of(path)
        if epoch is None:
            continue
        if best is None or (epoch, rank) > best[:2]:
            best = (epoch, rank, path)
    return None if best is None else best[2]


def _param_names(optimizer: torch.optim.Optimizer, model: nn.Module) -> dict[int, str]:
    """Optimizer state index -> parameter name (the state is keyed by position over the param groups)."""
    name_of = {id(p): n for n, p in model.named_parameters()}
    flat = [p for g in optimizer.param_groups for p in g["params"]]
    return {i: name_of.get(id(p), f"#{i}") for i, p in enumerate(flat)}


def auto_resume(
    output_dir,
    model_without_ddp: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scaler=None,
    resume: str | None = None,
    restore_rng: bool = True,
) -> tuple[int, dict | None]:
    """Resume from ``resume`` (a path) or else from the newest checkpoint in ``output_dir``.

    Returns ``(start_epoch, checkpoint)``: ``start_epoch`` is the 0-based epoch to
    run next (0 when nothing was found), ``checkpoint`` the loaded dict (for
    stage-specific extras such as the best metric) or None. The model loads strictly and
    NaN/inf weights are refused.
    """
    path = Path(resume) if resume else find_latest_checkpoint(output_dir)
    if path is None:
        return 0, None
    ckpt = read_checkpoint(path)
    missing = [k for k in ("model", "epoch") if not isinstance(ckpt, Mapping) or k not in ckpt]
    if missing:
        raise RuntimeError(f"{path} is not a training checkpoint of this project (missing {missing})")
    state_dict = state_dict_of(ckpt, os.fspath(path))
    check_finite_state(state_dict, os.fspath(path))
    load_state_dict_strict(model_without_ddp, state_dict, source=os.fspath(path))
    if optimizer is not None and "optimizer" in ckpt:
        check_finite_optimizer_state(
            ckpt["optimizer"], os.fspath(path), _param_names(optimizer, model_without_ddp)
        )
        optimizer.load_state_dict(ckpt["optimizer"])
    if scaler is not None and "scaler" in ckpt:
        scaler.load_state_dict(ckpt["scaler"])
    if restore_rng and "rng" in ckpt:
        set_rng_state(ckpt["rng"])
    return int(ckpt["epoch"]) + 1, ckpt


# --------------------------------------------------------------------------------------- load_model


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
    meta = checkpoint_meta(obj)
    file_kind = checkpoint_kind(sd)
    accepted = {kind} if isinstance(kind, str) else set(kind or _KIND_OF_CLASS.values())
    if not accepted <= set(_KIND_OF_CLASS.values()):
        raise ValueError(f"kind must be among {sorted(_KIND_OF_CLASS.values())}, got {sorted(accepted)}")
    if file_kind not in accepted:
        want = " or ".join(KINDS[k] for k in sorted(accepted))
        raise ValueError(f"{given} holds {KINDS[file_kind]} checkpoint; expected {want}")
    check_finite_state(sd, source)

    stored_name = meta["model_name"] if meta["model_name"] in MODEL_CONFIGS else None
    if name is None and stored_name and _KIND_OF_CLASS[MODEL_CONFIGS[stored_name][0]] == file_kind:
        name = stored_name  # our checkpoint: the registry name it was trained as
    if name is not None:
        get_config(name)  # KeyError naming the known models
    cls = MODEL_CONFIGS[name][0] if name else _CLASS_OF_KIND[file_kind]
    target = _KIND_OF_CLASS[cls]
    if file_kind not in _LOADS_INTO[target]:
        raise ValueError(f"{given} holds {KINDS[file_kind]} checkpoint; model {name!r} is {KINDS[target]}")
    config_cls = type(MODEL_CONFIGS[_DEFAULT_NAME[target]][1])
    overrides = canonical_fields(config_cls, overrides, f"load_model({given!r})")

    # What the file fixes: the codebook / class counts of its tensors, and the stored config (ours).
    fixed: dict[str, Any] = _sizes_from_weights(file_kind, cls, sd)
    if meta["model_config"] is not None:
        stored = canonical_fields(_CONFIG_OF_KIND[file_kind], meta["model_config"], f"{source} model_config")
        keep = _fields(config_cls) if file_kind == target else _fields(BackboneConfig)
        fixed.update({k: v for k, v in stored.items() if k in keep})
        clash = []
        if name is not None and name != stored_name:
            base = MODEL_CONFIGS[name][1]
            clash += [
                f"{k}={fixed[k]!r} in the file, {getattr(base, k)!r} in {name!r}"
                for k in base.ARCHITECTURE if k in fixed and k not in overrides and fixed[k] != getattr(base, k)
            ]  # fmt: skip
    else:
        name = name or _infer_name(file_kind, cls, sd, given, overrides)
        clash = []
    shape_fields = set(config_cls.ARCHITECTURE) | {
        "codebook_size",
        "codebook_dim",
        "num_classes",
        "backbone_codebook_size",
    }
    clash += [
        f"{k}={fixed[k]!r} in the file, {v!r} requested"
        for k, v in overrides.items() if k in shape_fields and k in fixed and fixed[k] != v
    ]  # fmt: skip
    if clash:
        raise ValueError(f"{given} does not hold the requested model: " + "; ".join(clash))
    config = get_config(name or _DEFAULT_NAME[target], **{**fixed, **overrides})
    net = cls(config)

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
    net.checkpoint_info = CheckpointInfo(given, path, file_kind, name, config)
    return net.to(device).eval()


def tokenizer_size(spec: str | os.PathLike) -> tuple[int, int]:
    """``(codebook_size, codebook_dim)`` of a VQ-HBR checkpoint (path or ``hf://`` spec), from its weights."""
    path = resolve_checkpoint(spec)
    sd = state_dict_of(read_checkpoint(path, mmap=True), os.fspath(path))
    kind = checkpoint_kind(sd)
    if kind != "vqhbr":
        raise ValueError(f"{spec} holds {KINDS[kind]} checkpoint; expected {KINDS['vqhbr']}")
    n, d = sd["quantize.embedding.weight"].shape
    return int(n), int(d)


# ------------------------------------------------------------------------------------- key contract


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
