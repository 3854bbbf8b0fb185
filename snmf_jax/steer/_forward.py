"""The patched forward: `forward` with a patch whose positions follow `where`.

The patch travels into `jax.jit` as an argument (its keys and the position
mode are static, its arrays traced), so a new vector or alpha reuses the
compiled forward; only new sites, a new position mode or new shapes compile.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from snmf_jax.models import ForwardOutput, KVCache, forward
from snmf_jax.steer._patches import position_mask, with_positions


@functools.partial(jax.jit, static_argnames=("config", "where", "capture"))
def patched_forward(params, tokens, patch, *, config, where: str = "all",
                         attention_mask=None, cache: KVCache | None = None, prompt_len=None,
                         capture=()) -> ForwardOutput:
    """`forward` with a patch whose position mask is derived from `where`.

    Jitted (config, where, capture static); it can be called inside other
    jitted code (generation, calibration), where it is inlined. Tokens of this call sit
    at slots [offset, offset + T) with offset = cache.length (0 without cache);
    slots before `prompt_len` are the prompt.

    Args:
      params: weights pytree.
      tokens: (B, T) int32.
      patch: a Patch (vectors (dim,) or (B, dim), scales () or (B,)), or None.
      config: ModelConfig.
      where: "all", "prompt" or "generated".
      attention_mask: (B, T) 1 for real tokens of this call, or None.
      cache: KVCache or None.
      prompt_len: () padded prompt length; default: all of this call's slots
        (a plain forward is all prompt).
      capture: static (layer, site) tuple.

    Returns:
      ForwardOutput.
    """
    b, t = tokens.shape
    offset = 0 if cache is None else cache.length
    if prompt_len is None:
        prompt_len = offset + t
    if patch:
        pos = position_mask(where, t, prompt_len=prompt_len, offset=offset,
                            attention_mask=attention_mask)
        patch = with_positions(patch, jnp.broadcast_to(pos, (b, t)))  # (B, T)
    return forward(params, tokens, config=config, attention_mask=attention_mask,
                   cache=cache, patch=patch or None, capture=capture)
