"""numba kernels of modeling.accel.dropout (imported on first use, so that ``import modeling`` stays light).

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
def apply_mask(x, out, threshold, scale, seed):
    """out = x * scale where the stream ``seed`` keeps the element, else x * 0 (0, or NaN for a non-finite x,
    as torch's dropout gives). x, out: 1-D, same length.

    The same call on the gradient is the backward: the mask is regenerated from the seed, never stored.
    Element pairs (2j, 2j + 1) take the low / high 32 bits of hash j; the pair loop has no branch on the
    length (the odd last element is done after it), so LLVM vectorises it (~2x the scalar loop)."""
    n = x.size
    m = n // 2
    for j in range(m):
        z = splitmix64(seed, j)
        # x * (scale or 0), as torch's x * noise: a dropped NaN / inf stays NaN, never silently becomes 0
        out[2 * j] = x[2 * j] * (scale if (z & _LOW) >= threshold else _ZERO)
        out[2 * j + 1] = x[2 * j + 1] * (scale if (z >> _S32) >= threshold else _ZERO)
    if n % 2:
        z = splitmix64(seed, m)
        out[n - 1] = x[n - 1] * (scale if (z & _LOW) >= threshold else _ZERO)
