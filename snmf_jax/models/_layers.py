"""Stateless building blocks: norms, rotary embeddings, masks and attention.

Every function is pure and works on plain arrays so the transformer body can
run them inside `lax.scan` over stacked layer weights.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from snmf_jax.models._config import RopeScaling


def rms_norm(x: Array, scale: Array, eps: float, *, scale_in_float32: bool) -> Array:
    """Root-mean-square norm, statistics in float32.

    Args:
      x: (..., D) activations.
      scale: (D,) effective multiplier (Gemma's 1 + w already folded in).
      eps: added to the mean square.
      scale_in_float32: Gemma multiplies in float32 then casts, Llama casts
        then multiplies; identical in float32, different in bfloat16.

    Returns:
      (..., D) normalised activations in x's dtype.
    """
    x32 = x.astype(jnp.float32)
    normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
    if scale_in_float32:
        return (normed * scale.astype(jnp.float32)).astype(x.dtype)
    return scale * normed.astype(x.dtype)


def layer_norm(x: Array, scale: Array, bias: Array, eps: float) -> Array:
    """LayerNorm over the last axis, statistics in float32.

    Args:
      x: (..., D) activations.
      scale, bias: (D,) affine parameters.
      eps: added to the variance.

    Returns:
      (..., D) normalised activations in x's dtype.
    """
    x32 = x.astype(jnp.float32)
    mean = jnp.mean(x32, axis=-1, keepdims=True)
    centred = x32 - mean
    var = jnp.mean(centred * centred, axis=-1, keepdims=True)
    normed = centred * jax.lax.rsqrt(var + eps)
    # One rounding at the end, as torch's LayerNorm kernel does.
    return (normed * scale.astype(jnp.float32) + bias.astype(jnp.float32)).astype(x.dtype)


def activation(x: Array, kind: str) -> Array:
    """The MLP nonlinearity: "silu", "gelu_tanh" or "gelu" (exact erf)."""
    if kind == "silu":
        return jax.nn.silu(x)
    if kind == "gelu_tanh":
        return jax.nn.gelu(x, approximate=True)
    if kind == "gelu":
        return jax.nn.gelu(x, approximate=False)
    raise ValueError(f"unknown activation {kind!r}")


def rope_inv_freq(head_dim: int, theta: float,
                  scaling: RopeScaling | None = None) -> np.ndarray:
    """Inverse rotary frequencies, computed in float32 as transformers does.

    Args:
      head_dim: width of one head (even).
      theta: rotary base.
      scaling: optional "llama3" or "linear" frequency scaling.

    Returns:
      (head_dim // 2,) float32 numpy array (a compile-time constant).
    """
    exponents = np.arange(0, head_dim, 2, dtype=np.float32) / np.float32(head_dim)
    inv_freq = (np.float32(1.0) / np.power(np.float32(theta), exponents)).astype(np.float32)
    if scaling is None:
        return inv_freq
    if scaling.rope_type == "linear":
        return (inv_freq / np.float32(scaling.factor)).astype(np.float32)
    # llama3: long wavelengths are divided by `factor`, short ones kept, and
    # the band in between interpolated smoothly.
    factor = scaling.factor
    old_len = scaling.original_max_position
    low_wavelen = old_len / scaling.low_freq_factor
    high_wavelen = old_len / scaling.high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    scaled = np.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
    smooth = ((old_len / wavelen - scaling.low_freq_factor)
              / (scaling.high_freq_factor - scaling.low_freq_factor))
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    return np.where(medium, smoothed, scaled).astype(np.float32)


def rope_cos_sin(positions: Array, inv_freq: np.ndarray, dtype) -> tuple[Array, Array]:
    """Rotary tables for the given positions.

    Args:
      positions: (B, T) integer positions.
      inv_freq: (hd/2,) inverse frequencies.
      dtype: dtype of the returned tables (the activations' dtype).

    Returns:
      cos, sin: (B, T, hd) in rotate-half layout (frequencies repeated twice).
    """
    freqs = positions.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq)  # (B, T, hd/2)
    emb = jnp.concatenate([freqs, freqs], axis=-1)  # (B, T, hd)
    return jnp.cos(emb).astype(dtype), jnp.sin(emb).astype(dtype)


def apply_rope(x: Array, cos: Array, sin: Array) -> Array:
    """Rotates x (B, T, N, hd) by the (B, T, hd) tables (rotate-half layout)."""
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)  # (B, T, N, hd)
    return x * cos[:, :, None, :] + rotated * sin[:, :, None, :]


def attention_mask(q_index: Array, q_pos: Array, k_index: Array, k_pos: Array,
                   k_valid: Array, window: int | None) -> Array:
    """Boolean mask of the keys each query may attend to.

    Causality is by slot index; the sliding window is by position (equal to
    index distance for unpadded and left-padded rows), so a padded row sees
    exactly what its unpadded version sees. A key at distance d = q_pos -
    k_pos is inside the window iff d < window, as in transformers.

    Args:
      q_index: (T,) slot index of each query.
      q_pos: (B, T) position of each query.
      k_index: (S,) slot index of each key.
      k_pos: (B, S) position of each key.
      k_valid: (B, S) True where the key is a real token.
      window: sliding window, or None for full causal attention.

    Returns:
      (B, T, S) boolean mask.
    """
    mask = (k_index[None, :] <= q_index[:, None])[None] & k_valid[:, None, :]  # (B, T, S)
    if window is not None:
        mask = mask & (q_pos[:, :, None] - k_pos[:, None, :] < window)
    return mask


def attention(q: Array, k: Array, v: Array, mask: Array, *, scale: float,
              softcap: float | None = None) -> Array:
    """Grouped-query attention without repeating keys and values.

    Args:
      q: (B, T, H, hd) queries (already rotated).
      k, v: (B, KV, S, hd) keys and values.
      mask: (B, T, S) boolean, True where a query may attend to a key.
      scale: multiplier of the scores (head_dim**-0.5 or Gemma's
        query_pre_attn_scalar**-0.5).
      softcap: Gemma 2 tanh soft-capping of the scores, or None.

    Returns:
      (B, T, H * hd) attention output, heads in query-head order.
    """
    b, t, h, hd = q.shape
    kv = k.shape[1]
    g = h // kv
    # Query head h = kv_head * g + j, the order transformers' repeat_kv implies.
    q = q.reshape(b, t, kv, g, hd).transpose(0, 2, 3, 1, 4)  # (B, KV, G, T, hd)
    q = q.reshape(b, kv, g * t, hd)  # (B, KV, G*T, hd)
    scores = jnp.einsum("bkqd,bksd->bkqs", q, k)  # (B, KV, G*T, S)
    scores = scores.astype(jnp.float32) * scale
    if softcap is not None:
        scores = jnp.tanh(scores / softcap) * softcap
    scores = scores.reshape(b, kv, g, t, -1)  # (B, KV, G, T, S)
    scores = jnp.where(mask[:, None, None], scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    probs = probs.reshape(b, kv, g * t, -1)  # (B, KV, G*T, S)
    out = jnp.einsum("bkqs,bksd->bkqd", probs, v)  # (B, KV, G*T, hd)
    out = out.reshape(b, kv, g, t, hd).transpose(0, 3, 1, 2, 4)  # (B, T, KV, G, hd)
    return out.reshape(b, t, h * hd)  # (B, T, H*hd)
