"""Small numerical helpers shared across layers: one definition each.

- `largest_threshold`: per row, the largest integer key t whose "kept" set
  {keys >= t} still satisfies a monotone predicate, by bisection on the
  integer keys. Used by the solver's winner-take-all (k-th largest |Φ|) and
  the sampler's top-k / top-p filters. A bisection of a fixed number of
  passes replaces a sort, which is slow on XLA:CPU.
"""

from __future__ import annotations

from typing import Callable

import jax.numpy as jnp
from jax import Array, lax

__all__ = ["largest_threshold"]


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

