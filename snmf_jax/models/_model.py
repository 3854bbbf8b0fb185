"""A loaded model: frozen config + weights pytree + tokenizer.

`Model.forward` calls a module-level jitted `forward` with the weights as an
argument (never closed over), so every Model with the same config and the
same capture/patch keys shares one compiled program.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from snmf_jax.models._config import ModelConfig
from snmf_jax.models._transformer import ForwardOutput, forward

forward_jit = jax.jit(forward, static_argnames=("config", "capture"))


@dataclasses.dataclass(frozen=True)
class Model:
    """A model ready to run.

    Attributes:
      config: the architecture.
      params: the weights pytree (layers stacked along a leading L axis).
      tokenizer: a `Tokenizer`, or None.
      name: a label (preset name or path).
    """

    config: ModelConfig
    params: Any
    tokenizer: Any = None
    name: str = ""

    @property
    def dtype(self):
        """dtype of the weights (and of the activations)."""
        return self.params["embed"].dtype

    def forward(self, tokens, **kwargs) -> ForwardOutput:
        """Jitted `forward(self.params, tokens, config=self.config, **kwargs)`.

        Args:
          tokens: (B, T) int token ids.
          **kwargs: attention_mask, cache, patch, capture (see `forward`).

        Returns:
          ForwardOutput(logits, captures, cache).
        """
        cache = kwargs.get("cache")
        if cache is not None:
            # Checked here, on the host: inside jit the length is traced.
            length, new = int(cache.length), np.shape(tokens)[1]
            if length + new > cache.max_len:
                raise ValueError(
                    f"cache overflow: {length} cached + {new} new tokens > max_len "
                    f"{cache.max_len}")
        if "capture" in kwargs:
            kwargs["capture"] = tuple((int(layer), str(site))
                                      for layer, site in kwargs["capture"])
        return forward_jit(self.params, jnp.asarray(tokens, jnp.int32),
                           config=self.config, **kwargs)

    def __repr__(self) -> str:
        return (f"Model(name={self.name!r}, family={self.config.family!r}, "
                f"n_layers={self.config.n_layers}, d_model={self.config.d_model}, "
                f"dtype={self.dtype})")


def init_params(config: ModelConfig, key: jax.Array, dtype=jnp.float32) -> dict:
    """Random weights following the params contract (for tests).

    Kernels are N(0, 1/fan_in); norm scales are 1 + N(0, 0.1) so a wrong
    norm is visible; biases N(0, 0.02); embeddings N(0, 1/d_model) (Gemma,
    which scales them by sqrt(d_model)) or N(0, 0.02) (others). Drawn on
    the host with numpy (no compilation), so not traceable under jit.

    Args:
      config: the architecture.
      key: a PRNG key (typed or raw uint32); the draws are deterministic in it.
      dtype: dtype of every leaf.

    Returns:
      The params pytree.
    """
    # Host-side numpy draws: no compilation, so tests building many tiny
    # models stay fast. Deterministic in the key.
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    rng = np.random.default_rng(np.asarray(key, np.uint32).ravel())
    dtype = jnp.dtype(dtype)
    sizes = []

    def count(shape, std, offset=0.0):
        sizes.append(math.prod(shape))

    _build_params(config, count)
    pool = rng.standard_normal(sum(sizes), dtype=np.float32)
    cursor = [0]

    def normal(shape, std, offset=0.0):
        start = cursor[0]
        cursor[0] += math.prod(shape)
        x = pool[start:cursor[0]].reshape(shape)
        return jnp.asarray(np.float32(offset) + np.float32(std) * x, dtype)

    return _build_params(config, normal)


def _build_params(config: ModelConfig, normal) -> dict:
    """The params pytree with leaves from normal(shape, std, offset)."""
    d, f, n_layers = config.d_model, config.d_mlp, config.n_layers
    hq = config.n_heads * config.head_dim
    hkv = config.n_kv_heads * config.head_dim
    gpt2 = config.family == "gpt2"
    gemma = config.family in ("gemma2", "gemma3")

    def kernel(fan_in, fan_out, bias=False):
        p = {"kernel": normal((n_layers, fan_in, fan_out), 1 / math.sqrt(fan_in))}
        if bias:
            p["bias"] = normal((n_layers, fan_out), 0.02)
        return p

    def norm(width, stacked=True, bias=False):
        shape = (n_layers, width) if stacked else (width,)
        p = {"scale": normal(shape, 0.1, 1.0)}
        if bias:
            p["bias"] = normal(shape, 0.02)
        return p

    layers = {
        "attn_norm": norm(d, bias=gpt2),
        "q": kernel(d, hq, gpt2),
        "k": kernel(d, hkv, gpt2),
        "v": kernel(d, hkv, gpt2),
        "o": kernel(hq, d, gpt2),
        "mlp_norm": norm(d, bias=gpt2),
        "up": kernel(d, f, gpt2),
        "down": kernel(f, d, gpt2),
    }
    if not gpt2:
        layers["gate"] = kernel(d, f)
    if gemma:
        layers["post_attn_norm"] = norm(d)
        layers["post_mlp_norm"] = norm(d)
    if config.family == "gemma3":
        layers["q_norm"] = norm(config.head_dim)
        layers["k_norm"] = norm(config.head_dim)
    params = {
        "embed": normal((config.vocab_size, d), 1 / math.sqrt(d) if gemma else 0.02),
        "layers": layers,
        "final_norm": norm(d, stacked=False, bias=gpt2),
    }
    if gpt2:
        params["pos_embed"] = normal((config.max_position, d), 0.02)
    if not config.tie_embeddings:
        params["unembed"] = {"kernel": normal((d, config.vocab_size), 1 / math.sqrt(d))}
    return params
