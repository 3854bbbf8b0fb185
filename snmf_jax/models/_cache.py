"""Key/value cache for incremental decoding.

The cache is a NamedTuple of arrays (a pytree), so it passes through `jax.jit`
and `lax` loops like any other state. It has a fixed capacity `max_len`;
every row of the batch fills the same slots, and the cache remembers which
slots hold real tokens, so left-padded prompts need their mask only once.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
from jax import Array

from snmf_jax.models._config import ModelConfig


class KVCache(NamedTuple):
    """Keys and values of the tokens seen so far.

    Attributes:
      k: (L, B, KV, max_len, hd) rotated keys, slot s of every layer.
      v: (L, B, KV, max_len, hd) values.
      mask: (B, max_len) int32, 1 where the slot holds a real token, 0 for
        padding and for slots not yet written.
      length: () int32, number of slots written (the same for every row);
        the next forward writes its T tokens at slots [length, length + T).
    """

    k: Array
    v: Array
    mask: Array
    length: Array

    @property
    def max_len(self) -> int:
        """Capacity in tokens."""
        return self.k.shape[3]


def init_cache(config: ModelConfig, batch_size: int, max_len: int,
               dtype=jnp.float32) -> KVCache:
    """An empty cache.

    Args:
      config: the model's architecture.
      batch_size: rows B.
      max_len: capacity: prompt length (padding included) plus the number of
        tokens to decode.
      dtype: dtype of keys and values (use the params dtype).

    Returns:
      A KVCache with length 0 and every slot marked empty.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1; got {max_len}")
    shape = (config.n_layers, batch_size, config.n_kv_heads, max_len, config.head_dim)
    return KVCache(
        k=jnp.zeros(shape, dtype),
        v=jnp.zeros(shape, dtype),
        mask=jnp.zeros((batch_size, max_len), jnp.int32),
        length=jnp.zeros((), jnp.int32),
    )
