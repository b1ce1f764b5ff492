"""numba kernels of modeling.dropout (imported on first use, so that ``import modeling`` stays light).

The keep mask comes from SplitMix64 (Steele et al., 2014) of a per-call 64-bit seed plus the element
pair's counter; its low and high 32 bits decide two elements. An element is kept when its 32-bit draw is
``>= threshold`` (``threshold = round(p * 2**32)``), i.e. with probability ``1 - p``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_C1 = np.uint64(0xBF58476D1CE4E5B9)
_C2 = np.uint64(0x94D049BB133111EB)
_S27, _S30, _S31, _S32 = np.uint64(27), np.uint64(30), np.uint64(31), np.uint64(32)
_LOW = np.uint64(0xFFFFFFFF)
_ZERO = np.float32(0.0)


@njit(cache=True, nogil=True)
def splitmix64(seed, j):
    """64 well-mixed bits for counter ``j`` of the stream ``seed`` (uint64 arithmetic, wrapping)."""
    z = seed + np.uint64(j) * _GOLDEN
    z = (z ^ (z >> _S30)) * _C1
    z = (z ^ (z >> _S27)) * _C2
    return z ^ (z >> _S31)


@njit(cache=True, nogil=True)
def forward(x, out, mask, threshold, scale, seed):
    """out = x * scale where kept else 0; mask = kept. All 1-D, same length."""
    n = x.size
    for j in range((n + 1) // 2):
        z = splitmix64(seed, j)
        i = 2 * j
        keep = (z & _LOW) >= threshold
        mask[i] = keep
        out[i] = x[i] * scale if keep else _ZERO
        if i + 1 < n:
            keep = (z >> _S32) >= threshold
            mask[i + 1] = keep
            out[i + 1] = x[i + 1] * scale if keep else _ZERO


@njit(cache=True, nogil=True)
def forward_no_mask(x, out, threshold, scale, seed):
    """:func:`forward` without writing the mask (no backward will need it). Same draws."""
    n = x.size
    for j in range((n + 1) // 2):
        z = splitmix64(seed, j)
        i = 2 * j
        out[i] = x[i] * scale if (z & _LOW) >= threshold else _ZERO
        if i + 1 < n:
            out[i + 1] = x[i + 1] * scale if (z >> _S32) >= threshold else _ZERO


@njit(cache=True, nogil=True)
def backward(grad, mask, out, scale):
    """out = grad * scale where kept else 0."""
    for i in range(grad.size):
        out[i] = grad[i] * scale if mask[i] else _ZERO
