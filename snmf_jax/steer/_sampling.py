"""Sampling filters: temperature, then top-k, then top-p (as transformers does).

Both filters find their per-row threshold by bisection on the sortable bit
pattern of the values: XLA:CPU's sort / top_k over a 50k vocabulary cost
tens of ms per row, the bisection a fraction of that, and it selects the
same set (values tied at the threshold are all kept).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array, lax

from snmf_jax import _checks

_NEG_INF = -jnp.inf


# ----------------------------------------------------------------- filtering

def _sortable(x: Array) -> Array:
    """float32 -> uint32 with the same order (-inf smallest, +inf largest)."""
    i = lax.bitcast_convert_type(x.astype(jnp.float32), jnp.int32)
    i = jnp.where(i < 0, i ^ jnp.int32(0x7FFFFFFF), i)  # negative floats: reverse order
    return lax.bitcast_convert_type(i, jnp.uint32) ^ jnp.uint32(0x80000000)


def _largest_threshold(keys: Array, pred) -> Array:
    """Per row, the largest uint32 t with pred(keys >= t) true (pred monotone).

    Args:
      keys: (B, V) uint32.
      pred: maps a (B, V) bool "kept" mask to a (B, 1) bool; must be true for
        t = 0 (everything kept) and non-increasing in t.

    Returns:
      (B, 1) uint32 threshold.
    """
    b = keys.shape[0]
    lo = jnp.zeros((b, 1), jnp.uint32)
    hi = jnp.full((b, 1), 0xFFFFFFFF, jnp.uint32)

    def body(_, c):
        lo, hi = c
        d = hi - lo
        mid = lo + (d >> 1) + (d & 1)  # ceil midpoint without uint32 overflow
        ok = pred(keys >= mid)
        return jnp.where(ok, mid, lo), jnp.where(ok, hi, mid - 1)

    lo, _ = lax.fori_loop(0, 32, body, (lo, hi))
    return lo


@jax.jit
def top_k_filter(logits: Array, k) -> Array:
    """Keeps each row's k largest logits, sets the rest to -inf.

    Values tied with the k-th largest are all kept. k <= 0 or k >= V keeps all.

    Args:
      logits: (B, V) or (V,).
      k: () int (traced is fine) or (B,) per row.

    Returns:
      Filtered logits, same shape.
    """
    x = jnp.atleast_2d(logits)
    k = jnp.asarray(k, jnp.float32)
    k = k[:, None] if k.ndim == 1 else k  # (B|1, 1)
    keys = _sortable(x)
    t = _largest_threshold(
        keys, lambda kept: jnp.sum(kept.astype(jnp.float32), -1, keepdims=True) >= k)
    out = jnp.where((keys >= t) | (k <= 0), x, _NEG_INF)
    return out.reshape(logits.shape)


@jax.jit
def top_p_filter(logits: Array, p) -> Array:
    """Nucleus filter: keeps the smallest set of most likely tokens with mass >= p.

    Tokens tied at the boundary are all kept; the most likely token is always
    kept. p >= 1 keeps every token with nonzero probability.

    Args:
      logits: (B, V) or (V,).
      p: () float in (0, 1] (traced is fine) or (B,) per row.

    Returns:
      Filtered logits, same shape.
    """
    x = jnp.atleast_2d(logits)
    p = jnp.asarray(p, jnp.float32)
    p = p[:, None] if p.ndim == 1 else p  # (B|1, 1)
    probs = jax.nn.softmax(x, axis=-1)
    keys = _sortable(probs)
    top = jnp.max(keys, axis=-1, keepdims=True)
    t = _largest_threshold(
        keys, lambda kept: jnp.sum(jnp.where(kept, probs, 0.0), -1, keepdims=True) >= p)
    t = jnp.minimum(t, top)  # never drop the most likely token
    out = jnp.where((keys >= t) | (p >= 1.0), x, _NEG_INF)
    return out.reshape(logits.shape)


def check_sampling(temperature, top_k, top_p) -> None:
    """Validates sampling settings given as concrete values (traced ones, inside
    the jitted decoder, were checked by the caller before tracing)."""
    if _checks.concrete(temperature) and np.ndim(temperature) == 0:
        _checks.real("temperature", _scalar(temperature), lo=0)
    if _checks.concrete(top_k) and np.ndim(top_k) == 0:
        _checks.integer("top_k", _scalar(top_k), lo=0)
    if _checks.concrete(top_p) and np.ndim(top_p) == 0:
        _checks.real("top_p", _scalar(top_p), lo=0, lo_open=True, hi=1)


def _scalar(v):
    """A 0-d array as its Python/numpy scalar (so int/float checks see its kind)."""
    return v.item() if hasattr(v, "item") and not isinstance(v, (int, float)) else v


def filter_logits(logits: Array, *, temperature=1.0, top_k=0, top_p=1.0,
                  use_top_k: bool = True, use_top_p: bool = True) -> Array:
    """Temperature, then top-k, then top-p: the logits a sampler draws from."""
    check_sampling(temperature, top_k, top_p)
    _checks.finite_array("logits", logits)
    x = logits / jnp.maximum(jnp.asarray(temperature, jnp.float32), 1e-6)
    if use_top_k:
        x = top_k_filter(x, top_k)
    if use_top_p:
        x = top_p_filter(x, top_p)
    return x


def sample_logits(key: Array, logits: Array, *, temperature=1.0, top_k=0, top_p=1.0,
                  use_top_k: bool = True, use_top_p: bool = True) -> Array:
    """Draws one token per row of (B, V) logits after filtering; returns (B,) int32."""
    x = filter_logits(logits, temperature=temperature, top_k=top_k, top_p=top_p,
                      use_top_k=use_top_k, use_top_p=use_top_p)
    return jax.random.categorical(key, x, axis=-1).astype(jnp.int32)
