"""Input checks that run before any work, with messages a user can act on."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np

def describe_nonfinite(a, name: str) -> str | None:
    """A message locating NaN/Inf entries of a 2-D array, or None if all finite."""
    bad = ~jnp.isfinite(a)
    count = int(jnp.sum(bad))
    if count == 0:
        return None
    n_nan = int(jnp.sum(jnp.isnan(a)))
    rows, cols = np.nonzero(np.asarray(bad))
    first = ", ".join(f"({r}, {c})" for r, c in zip(rows[:5], cols[:5]))
    return (f"{name} has {count} non-finite value(s) (NaN: {n_nan}, Inf: "
            f"{count - n_nan}) in {len(np.unique(rows))} row(s); first at "
            f"(row, column) {first}. Remove or repair those tokens before "
            f"factorizing.")


def compute_dtype(dtype, name: str = "X") -> np.dtype:
    """The dtype a fit computes in: float32, or float64 when x64 is on."""
    dtype = np.dtype(dtype)
    if dtype == np.float64 and not jax.config.jax_enable_x64:
        warnings.warn(
            f"{name} is float64 but JAX's x64 mode is off, so the fit runs in "
            f"float32. Enable it with jax.config.update('jax_enable_x64', True).",
            stacklevel=4)
        return np.dtype(np.float32)
    return dtype if dtype in (np.float32, np.float64) else np.dtype(np.float32)


def check_data(x, name: str = "X") -> jax.Array:
    """Validates and converts the data matrix.

    Args:
      x: (n_tokens, d) numpy or jax array.
      name: argument name used in messages.

    Returns:
      x as a jax array of a floating dtype JAX can compute in.
    """
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        x = np.asarray(x)
    # bfloat16 (ml_dtypes) has numpy kind "V"; it is a float, computed in float32.
    if np.dtype(x.dtype).kind not in "biuf" and np.dtype(x.dtype).name != "bfloat16":
        raise ValueError(f"{name} must be a real-valued numeric array; got dtype {x.dtype}")
    if x.ndim != 2:
        raise ValueError(
            f"{name} must be 2-D (n_tokens, d_mlp); got shape {tuple(x.shape)}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} is empty: shape {tuple(x.shape)}")
    x = jnp.asarray(x, compute_dtype(x.dtype, name))
    msg = describe_nonfinite(x, name)
    if msg:
        raise ValueError(msg)
    return x


def check_codes_init(codes, n: int, rank: int, dtype) -> jax.Array:
    """Validates explicit initial codes of shape (n, rank), >= 0 and finite."""
    codes = jnp.asarray(codes)
    if codes.shape != (n, rank):
        raise ValueError(
            f"codes_init must have shape (n_tokens, rank) = ({n}, {rank}); got "
            f"{tuple(codes.shape)}")
    msg = describe_nonfinite(codes, "codes_init")
    if msg:
        raise ValueError(msg)
    neg = int(jnp.sum(codes < 0))
    if neg:
        raise ValueError(
            f"codes_init must be nonnegative; {neg} entries are negative "
            f"(min {float(jnp.min(codes)):.3g})")
    # The multiplicative update keeps a zero code zero: from all-zero codes
    # nothing can move (the fit would "converge" on C = 0 at once). A single
    # dead column is allowed: that feature stays unused, the fit goes on.
    if not bool(jnp.any(codes > 0)):
        raise ValueError("codes_init is all zero; the multiplicative update keeps zero codes "
                         "zero, so nothing could be fitted (give positive initial codes)")
    return codes.astype(dtype)


# Outside this band of max|X| the update's fixed epsilons (mu_eps, reg) are not
# negligible (small data: at max|X| ~ 1e-3 the fit is already worse) or ‖X‖²
# nears float32's range (large data); `unit_scale` moves X inside it.
SCALE_BAND = (2.0 ** -4, 2.0 ** 20)


def check_scale(top: float, fit: str) -> None:
    """Refuses data whose largest |value| `top` lies outside `SCALE_BAND` for a
    fit that does not rescale (the streaming fit sees X chunk by chunk, so it
    cannot divide it by one scale before its first pass)."""
    lo, hi = SCALE_BAND
    if top != 0.0 and not lo <= top <= hi:
        raise ValueError(
            f"X's largest |value| is {top:.3g}, outside [{lo:g}, {hi:g}] where {fit} fits "
            "as well as at unit scale (tiny data fits to a loss of ~0, huge data overflows "
            "float32); divide the activations by a power of two near that value, or fit "
            "them in memory with sj.fit, which rescales by itself")


def unit_scale(x: jax.Array) -> float:
    """The power of two s to fit X / s with, so max|X / s| lands in [1, 2).

    1.0 when max|X| is already inside `SCALE_BAND` (the fit, and the paper's
    reference trajectories, are untouched). A power of two scales float data
    exactly, so the result of X / s, scaled back (features × s, losses × s²),
    is the result of the same fit at unit scale.
    """
    top = float(jnp.max(jnp.abs(x)))
    lo, hi = SCALE_BAND
    if top == 0.0 or lo <= top <= hi:  # all-zero data: a zero fit, as before
        return 1.0
    return float(2.0 ** np.floor(np.log2(top)))
