"""Optimiser and learning-rate schedules for the three training stages (paper Sec. 3.2-3.3, Sec. 4).

* AdamW parameter groups. Weight decay, official rule: every parameter is decayed except 1-D tensors
  (LayerNorm weights, the 1-D cls_token) and biases, so pos_embed, mask_token, the lead/time embedding
  tables and the token convolution ARE decayed (fixtures recipe_original.json). Corrected rule
  (``no_decay_embeddings``): those embeddings and tokens are exempt too. Layer-wise lr decay from the
  model's ``get_layer_id(name)`` / ``get_num_layers()`` hooks.
  The lr scale of layer id ``i`` is ``layer_decay ** (num_layers + 1 - i)``, so with depth D there are
  D + 2 distinct scales: embeddings (id 0) get the smallest, the head / final norm (id D + 1) gets 1.
  The original HeartLang code looked for ``blocks.N`` names that its model does not have, so its
  layer decay silently did nothing; ours asks the model, and the tests check the resulting lrs.
* ``cosine_scheduler``: per-iteration value array (BEiT / MAE style) with a linear warm-up from
  ``start_warmup_value`` (the original: 0, whatever --warmup_lr says) to ``base_value`` followed by a
  half-cosine to ``final_value``. ``peak_lr``: the stage's lr scaling rule.
* ``adjust_learning_rate``: writes ``lr * lr_scale`` into every group for one step (weight decay is
  constant: no stage schedules it).

timm's optimizer factory would do the grouping, but timm is not a dependency of this project, so the
(short) logic lives here and is tested in tests/test_optim.py.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import torch
from torch import nn


def _matches(name: str, skip: Iterable[str]) -> bool:
    """True when ``name`` is one of ``skip`` or lives below a module named in ``skip``."""
    return any(name == s or name.startswith(s + ".") for s in skip)


# Corrected rule: parameters below a module or named like these are not decayed either.
EMBEDDING_NAMES = frozenset({"pos_embed", "mask_token", "cls_token", "spa_embed", "tem_embed", "token_embed"})


def is_decayed(name: str, param: torch.Tensor, no_decay_embeddings: bool = False) -> bool:
    """The weight-decay rule for one parameter (see the module docstring)."""
    # Official behaviour: only 1-D tensors and biases are exempt (embeddings and tokens are decayed).
    if param.ndim <= 1 or name.endswith(".bias"):
        return False
    return not (no_decay_embeddings and EMBEDDING_NAMES.intersection(name.split(".")))


def param_groups_layer_decay(
    model: nn.Module,
    weight_decay: float,
    layer_decay: float = 1.0,
    no_decay_embeddings: bool = False,
    no_weight_decay: Iterable[str] = (),
) -> list[dict]:
    """Build AdamW parameter groups: {decay, no_decay} x layer id, each with its ``lr_scale``.

    Only parameters with ``requires_grad`` are included (the linear probe freezes the backbone).
    Decay follows :func:`is_decayed`; ``no_weight_decay`` adds names (or module prefixes) to exempt.
    Layer ids come from ``model.get_layer_id(name)`` in ``[0, num_layers + 1]``; a model without the
    hooks gets a single layer (scale 1). Each group carries ``layer_id`` and ``param_names`` for logs.
    """
    skip = set(no_weight_decay)
    has_layers = hasattr(model, "get_layer_id") and hasattr(model, "get_num_layers")
    num_layers = model.get_num_layers() if has_layers else 0
    groups: dict[str, dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if not is_decayed(name, param, no_decay_embeddings) or _matches(name, skip):
            decay_name, this_wd = "no_decay", 0.0
        else:
            decay_name, this_wd = "decay", weight_decay
        layer_id = model.get_layer_id(name) if has_layers else num_layers + 1
        if not 0 <= layer_id <= num_layers + 1:
            raise ValueError(f"get_layer_id({name!r}) = {layer_id} is outside [0, {num_layers + 1}]")
        key = f"layer_{layer_id}_{decay_name}"
        if key not in groups:
            groups[key] = {
                "params": [],
                "param_names": [],
                "weight_decay": this_wd,
                "layer_id": layer_id,
                "lr_scale": layer_decay ** (num_layers + 1 - layer_id),
            }
        groups[key]["params"].append(param)
        groups[key]["param_names"].append(name)
    if not groups:
        raise ValueError("the model has no trainable parameter (all requires_grad=False)")
    return [groups[k] for k in sorted(groups, key=lambda k: (groups[k]["layer_id"], k))]


# --adamw_impl choices. Measured on CPU (benchmarks/results/train.json, run all_stages, "adamw"): fused is the fastest
# on CPU; on CUDA torch's fused kernel is the documented fastest. Same update rule, rounding-level differences.
ADAMW_IMPLS = ("auto", "fused", "foreach", "for_loop")


def adamw_kwargs(impl: str, params: list[torch.Tensor]) -> dict:
    """``{fused: True}`` / ``{foreach: True}`` / ``{foreach: False}`` for ``--adamw_impl impl``; ``auto`` =
    fused where every parameter is a floating CPU or CUDA tensor, else foreach."""
    if impl not in ADAMW_IMPLS:
        raise ValueError(f"--adamw_impl must be one of {list(ADAMW_IMPLS)}, got {impl!r}")
    if impl == "auto":
        ok = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
        impl = "fused" if ok else "foreach"
    return {"fused": {"fused": True}, "foreach": {"foreach": True}, "for_loop": {"foreach": False}}[impl]


def create_optimizer(model: nn.Module, optim) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups_layer_decay` from an ``engine.config.OptimConfig`` (kernel chosen by
    its ``adamw_impl``: :func:`adamw_kwargs`; build it after moving the model to its device)."""
    if optim.opt != "adamw":
        raise ValueError(f"--opt {optim.opt!r} is not supported; HeartLang trains every stage with 'adamw'")
    groups = param_groups_layer_decay(model, optim.weight_decay, optim.layer_decay, optim.no_decay_embeddings)
    kwargs = {"lr": optim.lr, "eps": optim.opt_eps}
    if optim.opt_betas is not None:
        kwargs["betas"] = tuple(optim.opt_betas)
    kwargs.update(adamw_kwargs(optim.adamw_impl, [p for g in groups for p in g["params"]]))
    # param_names is metadata for logs only; AdamW keeps unknown group keys untouched.
    return torch.optim.AdamW(groups, **kwargs)


def peak_lr(optim, world_size: int) -> float:
    """The schedule's peak lr. Official behaviour (VQ-HBR only, ``lr_batch_reference`` = 128): --lr is
    multiplied by (batch_size x world_size) / 128, so the original README's 8 x 64 command peaks at 2e-4, not 5e-5."""
    if optim.lr_batch_reference:
        return optim.lr * optim.batch_size * world_size / optim.lr_batch_reference
    return optim.lr


def lr_schedule(optim, world_size: int, niter_per_ep: int) -> np.ndarray:
    """Per-iteration lr of the whole run."""
    # Official behaviour: the warm-up starts at 0, not at --warmup_lr.
    return cosine_scheduler(
        peak_lr(optim, world_size), optim.min_lr, optim.epochs, niter_per_ep, optim.warmup_epochs, 0.0,
        optim.warmup_steps,
    )  # fmt: skip


def cosine_scheduler(
    base_value: float,
    final_value: float,
    epochs: int,
    niter_per_ep: int,
    warmup_epochs: int = 0,
    start_warmup_value: float = 0.0,
    warmup_steps: int = -1,
) -> np.ndarray:
    """Per-iteration schedule of length ``epochs * niter_per_ep``.

    Warm-up: ``np.linspace(start_warmup_value, base_value, W)`` over ``W = warmup_epochs * niter_per_ep``
    iterations (or ``warmup_steps`` when > 0), so the last warm-up step is exactly ``base_value``.
    Then ``final + (base - final) * (1 + cos(pi * i / n)) / 2`` for ``i = 0 .. n-1``; the last value
    is therefore slightly above ``final_value`` (BEiT / MAE convention).
    """
    if epochs <= 0 or niter_per_ep <= 0:
        raise ValueError(
            f"cosine_scheduler needs epochs > 0 and niter_per_ep > 0, got {epochs}, {niter_per_ep}"
        )
    total = epochs * niter_per_ep
    warmup_iters = warmup_steps if warmup_steps > 0 else warmup_epochs * niter_per_ep
    warmup_iters = min(warmup_iters, total)
    warmup = np.linspace(start_warmup_value, base_value, warmup_iters) if warmup_iters > 0 else np.array([])
    n = total - warmup_iters
    iters = np.arange(n)
    cosine = final_value + 0.5 * (base_value - final_value) * (1 + np.cos(math.pi * iters / max(n, 1)))
    schedule = np.concatenate((warmup, cosine))
    assert len(schedule) == total
    return schedule


def adjust_learning_rate(optimizer: torch.optim.Optimizer, step: int, lr_values: np.ndarray) -> float:
    """Set every group's lr to ``lr_values[step] * lr_scale``; return the base lr."""
    step = min(step, len(lr_values) - 1)
    lr = float(lr_values[step])
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
    return lr
