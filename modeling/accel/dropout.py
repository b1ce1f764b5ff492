"""Dropout with the same distribution as ``torch.nn.Dropout`` but a fast mask generator on CPU.

Why: on CPU, ``torch.nn.functional.dropout`` draws its mask with ``bernoulli_`` from the Mersenne-Twister
generator at roughly 10 ns per element; the full-size pre-training step (49 active dropouts, ~14 M masked
elements per sample) spent 16 % of its time there (the train benchmark). Here the keep mask comes
from a counter-based SplitMix64 hash (two 32-bit draws per hash) in one numba pass that also scales the
kept values, ~10x faster than ``F.dropout``. The backward regenerates the mask from the call's seed, so
nothing is stored between forward and backward; torch's CPU dropout keeps its float32 noise tensor
(4 bytes per element, ~3.7 GB for a full-size pre-training batch of 64: measured peak step memory
9.4 GiB here against 12.7 GiB with the original's kernels, benchmarks/results/model.json run current).

What is kept from torch's dropout: each element is kept independently with probability ``1 - p``
(to within 2**-32; torch's own draws have 2**-24 resolution), kept values are multiplied by
``float32(1 / (1 - p))``, dropped values are multiplied by 0 (so a dropped NaN or inf gives NaN, as in
torch, instead of vanishing), the backward multiplies the gradient by the same mask and scale. Each call
takes its 64-bit seed from torch's default CPU generator, so ``torch.manual_seed`` (and engine.loop's
per-epoch reseeding) makes runs reproducible. What differs: the exact masks for a given seed are not
the ones torch would draw; no fixture depends on train-mode dropout masks (the original's own masks
depend on its attention implementation's draw order).

Used only where it pays and is safe: CPU, float32, training, 0 < p < 1, numba importable and not inside
``torch.compile`` (inductor fuses its own dropout there). Everything else calls ``F.dropout``. Set
``HEARTLANG_TORCH_DROPOUT=1`` (or :func:`use_torch_dropout`) to draw every mask with torch's generator
as the original does (e.g. to compare compiled and eager runs bit for bit).
"""

from __future__ import annotations

import contextlib
import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

_STATE = {"torch": os.environ.get("HEARTLANG_TORCH_DROPOUT", "") not in ("", "0"), "kernels": None}


def use_torch_dropout(enabled: bool = True) -> contextlib.AbstractContextManager:
    """Draw dropout masks with torch's own dropout (``True``) or the fast kernel where it applies.

    Takes effect at once; as a context manager, restores the previous choice on exit."""
    previous = _STATE["torch"]
    _STATE["torch"] = bool(enabled)

    @contextlib.contextmanager
    def restore():
        try:
            yield
        finally:
            _STATE["torch"] = previous

    return restore()


def mask_source() -> str:
    """Where dropout masks come from in this process (recorded in run.json as ``dropout_masks``)."""
    if _STATE["torch"]:
        return "torch"
    return "splitmix64 (CPU float32 training, eager); torch elsewhere"


def _kernels():
    """The numba kernels module (modeling.accel.kernels), imported on first use; False without numba."""
    if _STATE["kernels"] is None:
        try:
            from . import kernels
        except ImportError:  # pragma: no cover - numba is in requirements.txt
            kernels = False
        _STATE["kernels"] = kernels
    return _STATE["kernels"]


def _flat(t: torch.Tensor) -> np.ndarray:
    return t.detach().view(-1).numpy()


def _params(p: float) -> tuple[np.uint64, np.float32, np.uint64]:
    """(threshold, scale, seed): keep when a uniform 32-bit draw >= threshold, i.e. with probability 1 - p."""
    threshold = np.uint64(min(int(round(p * 2.0**32)), 2**32))
    # float32(1 / (1 - p)): the factor torch's dropout multiplies kept values by.
    scale = np.float32(1.0 / (1.0 - p))
    seed = np.uint64(int(torch.randint(0, 2**63 - 1, (1,), dtype=torch.int64).item()))
    return threshold, scale, seed


def _apply(x: torch.Tensor, threshold: np.uint64, scale: np.float32, seed: np.uint64) -> torch.Tensor:
    x = x.contiguous()
    out = torch.empty(x.shape, dtype=x.dtype)
    _kernels().apply_mask(_flat(x), _flat(out), threshold, scale, seed)
    return out


class _FastDropout(torch.autograd.Function):
    """Forward and backward are the same masking; the backward regenerates the mask from the call's seed,
    so nothing is kept for it but the seed."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, p: float) -> torch.Tensor:
        ctx.draw = _params(p)
        return _apply(x, *ctx.draw)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return _apply(grad, *ctx.draw), None


def fast_applies(x: torch.Tensor, p: float, training: bool) -> bool:
    """True when :func:`dropout` would use the fast kernel for this call."""
    return (
        training
        and 0.0 < p < 1.0
        and not _STATE["torch"]
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and not x.is_sparse
        and not torch.compiler.is_compiling()
        and bool(_kernels())
    )


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """``F.dropout(x, p, training)`` with the fast CPU mask generator where it applies (see module doc)."""
    if not training or p == 0.0:
        return x
    if not fast_applies(x, p, training):
        return F.dropout(x, p, training)
    if torch.is_grad_enabled() and x.requires_grad:
        return _FastDropout.apply(x, p)
    return _apply(x, *_params(p))


class Dropout(nn.Dropout):
    """``nn.Dropout`` (same name, no parameters, same ``p`` / train-eval state) using :func:`dropout`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.inplace:  # not used by the models; keep torch's in-place semantics exactly
            return F.dropout(x, self.p, self.training, inplace=True)
        return dropout(x, self.p, self.training)
