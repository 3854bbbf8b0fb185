"""Small numerical helpers shared across layers: one definition each.

- `largest_threshold`: per row, the largest integer key t whose "kept" set
  {keys >= t} still satisfies a monotone predicate, by bisection on the
  integer keys. Used by the solver's winner-take-all (k-th largest |Φ|) and
  the sampler's top-k / top-p filters. A bisection of a fixed number of
  passes replaces a sort, which is slow on XLA:CPU.
- `unit_rows`: rows divided by their Euclidean norm, floored at `eps`.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array, lax

__all__ = ["largest_threshold", "unit_rows"]


def largest_threshold(keys: Array, pred: Callable[[Array], Array]) -> Array:
    """Per row, the largest t in [0, max(row)] with `pred(keys >= t)` true.

    Exact: the search runs one pass per value bit of the key dtype (31 for
    int32, 32 for uint32, 63 for int64), enough to shrink any interval of
    that dtype's non-negative range to one value.

    Args:
      keys: (..., V) integer keys, all >= 0, ordered as the values they
        encode (e.g. the bit pattern of non-negative floats).
      pred: maps a (..., V) bool "kept" mask to a (..., 1) bool; must be
        non-increasing in t. Where it is false even at t = 0 the result is 0.

    Returns:
      (..., 1) threshold t, of the dtype of `keys`; `keys >= t` is the kept set.
    """
    info = jnp.iinfo(keys.dtype)
    nbits = info.bits - (1 if info.min < 0 else 0)
    lo = jnp.zeros(keys.shape[:-1] + (1,), keys.dtype)
    hi = jnp.max(keys, axis=-1, keepdims=True)

    def body(_, carry):
        lo, hi = carry
        d = hi - lo
        mid = lo + (d >> 1) + (d & 1)  # ceil midpoint without overflow
        ok = pred(keys >= mid)
        return jnp.where(ok, mid, lo), jnp.where(ok, hi, mid - 1)

    lo, _ = lax.fori_loop(0, nbits, body, (lo, hi))
    return lo


def unit_rows(x, eps: float):
    """Each row (last axis) divided by max(its Euclidean norm, eps).

    Args:
      x: (..., d) numpy or jax array (a 1-D vector is one row); numpy stays
        numpy (host precision, no device transfer), jax stays jax.
      eps: floor of the norm, so an all-zero row stays zero instead of NaN.

    Returns:
      Same shape and array kind as `x`.
    """
    xp = jnp if isinstance(x, jax.Array) else np
    # A vector takes numpy's vector norm (a BLAS dot), as its callers always did.
    norm = xp.linalg.norm(x, axis=-1, keepdims=True) if x.ndim > 1 else xp.linalg.norm(x)
    return x / xp.maximum(norm, eps)
