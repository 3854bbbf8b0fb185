"""The Flax NNX module tree: the one definition of every model's weight layout.

`Transformer(config)` holds the weights as `nnx.Param`s named as the forward
reads them (``embed``, ``layers.q.kernel``, ...). The blocks are created
under `nnx.vmap` over a leading layer axis, so every block weight is stacked
(L, ...) and the forward scans one compiled block over them.

Every parameter carries logical axis names (``out_sharding``, e.g.
("layers", "embed", "mlp")); `_sharding.shard_params` maps them onto a
(data, model) mesh. Loaders never build shapes themselves: they fill
`abstract_state(config)` (from `nnx.eval_shape`, no memory) through
`state_from_arrays`, which checks every name and shape against it.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from snmf_jax.models._config import ModelConfig
from snmf_jax.models._transformer import forward


def _param(shape: tuple[int, ...], dtype, axes: tuple[str, ...]) -> nnx.Param:
    # Zeros: the module tree is only ever built abstractly (eval_shape) and
    # then filled, so these values are never materialised.
    return nnx.Param(jnp.zeros(shape, dtype), out_sharding=axes, eager_sharding=False)


class Linear(nnx.Module):
    """y = x @ kernel (+ bias); kernel is (in, out)."""

    def __init__(self, d_in: int, d_out: int, axes: tuple[str, str], *, bias: bool, dtype):
        self.kernel = _param((d_in, d_out), dtype, axes)
        self.bias = _param((d_out,), dtype, axes[1:]) if bias else None


class Norm(nnx.Module):
    """RMSNorm scale (Gemma's 1 + w folded in) or LayerNorm scale and bias."""

    def __init__(self, width: int, axis: str, *, bias: bool, dtype):
        self.scale = _param((width,), dtype, (axis,))
        self.bias = _param((width,), dtype, (axis,)) if bias else None


class Block(nnx.Module):
    """One transformer block's weights (attention + MLP, pre- and post-norms)."""

    def __init__(self, config: ModelConfig, dtype):
        d, f = config.d_model, config.d_mlp
        hq = config.n_heads * config.head_dim
        hkv = config.n_kv_heads * config.head_dim
        bias = config.linear_bias
        qkv_bias = bias or config.qkv_bias
        norm_bias = config.norm == "layer"
        self.attn_norm = Norm(d, "embed", bias=norm_bias, dtype=dtype)
        self.q = Linear(d, hq, ("embed", "heads"), bias=qkv_bias, dtype=dtype)
        self.k = Linear(d, hkv, ("embed", "kv"), bias=qkv_bias, dtype=dtype)
        self.v = Linear(d, hkv, ("embed", "kv"), bias=qkv_bias, dtype=dtype)
        self.o = Linear(hq, d, ("heads", "embed"), bias=bias, dtype=dtype)
        if config.qk_norm:
            self.q_norm = Norm(config.head_dim, "head_dim", bias=False, dtype=dtype)
            self.k_norm = Norm(config.head_dim, "head_dim", bias=False, dtype=dtype)
        if config.post_attn_norm:
            self.post_attn_norm = Norm(d, "embed", bias=norm_bias, dtype=dtype)
        self.mlp_norm = Norm(d, "embed", bias=norm_bias, dtype=dtype)
        if config.gated_mlp:
            self.gate = Linear(d, f, ("embed", "mlp"), bias=bias, dtype=dtype)
        self.up = Linear(d, f, ("embed", "mlp"), bias=bias, dtype=dtype)
        self.down = Linear(f, d, ("mlp", "embed"), bias=bias, dtype=dtype)
        if config.post_mlp_norm:
            self.post_mlp_norm = Norm(d, "embed", bias=norm_bias, dtype=dtype)


class Transformer(nnx.Module):
    """A decoder-only transformer (GPT-2, Llama, Gemma 2/3) as an NNX module.

    Attributes:
      config: the architecture (static).
      embed: (V, D) token embedding.
      pos_embed: (max_position, D) learned positions (positions="learned" only).
      layers: the blocks, every weight stacked on a leading (L,) axis.
      final_norm: the norm before the unembedding.
      unembed: (D, V) LM head (untied models only).
    """

    def __init__(self, config: ModelConfig, dtype=jnp.float32):
        self.config = config
        d = config.d_model
        self.embed = _param((config.vocab_size, d), dtype, ("vocab", "embed"))
        if config.positions == "learned":
            self.pos_embed = _param((config.max_position, d), dtype, ("position", "embed"))

        # Scan-over-layers layout: one Block built per layer under vmap, so
        # each weight gets a leading L axis named "layers".
        @nnx.vmap(in_axes=(), out_axes=0, axis_size=config.n_layers,
                  transform_metadata={nnx.PARTITION_NAME: "layers"})
        def make_blocks():
            return Block(config, dtype)

        self.layers = make_blocks()
        self.final_norm = Norm(d, "embed", bias=config.norm == "layer", dtype=dtype)
        if not config.tie_embeddings:
            self.unembed = Linear(d, config.vocab_size, ("embed", "vocab"), bias=False,
                                  dtype=dtype)

    def __call__(self, tokens, **kwargs):
        """`forward(nnx.state(self), tokens, config=self.config, **kwargs)`."""
        return forward(nnx.state(self, nnx.Param), tokens, config=self.config, **kwargs)


@functools.lru_cache(maxsize=64)
def abstract_model(config: ModelConfig, dtype=jnp.float32) -> tuple[nnx.GraphDef, nnx.State]:
    """The module structure and its abstract state (shapes only, no memory).

    Args:
      config: the architecture.
      dtype: dtype of every weight.

    Returns:
      (graphdef, state) with jax.ShapeDtypeStruct values.
    """
    model = nnx.eval_shape(lambda: Transformer(config, jnp.dtype(dtype)))
    return nnx.split(model)


def _flat(tree: Mapping, prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def layout(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Weight name ("layers.q.kernel") -> shape, read off the module tree."""
    _, state = abstract_model(config)
    return {k: tuple(v.shape) for k, v in _flat(nnx.to_pure_dict(state)).items()}


def check_layout(config: ModelConfig, arrays: Mapping, *, source: str = "params",
                 error=ValueError) -> None:
    """Checks every name and shape of a weights dict against the module tree.

    Args:
      config: the architecture the weights must follow.
      arrays: nested dict of arrays (anything with .shape).
      source: what the weights came from, for the message.
      error: the exception class to raise.

    Raises:
      error: one message listing missing, unexpected and misshapen weights.
    """
    want = layout(config)
    got = {k: tuple(np.shape(v)) for k, v in _flat(arrays).items()}
    problems = [f"{k} missing (expected shape {s})" for k, s in want.items() if k not in got]
    problems += [f"{k} unexpected" for k in got if k not in want]
    problems += [f"{k} has shape {got[k]}, expected {s}"
                 for k, s in want.items() if k in got and got[k] != s]
    if problems:
        raise error(f"{source}: weights do not match the {config.family} architecture of "
                    f"the config: " + "; ".join(problems[:6])
                    + (f" (+{len(problems) - 6} more)" if len(problems) > 6 else ""))


def state_from_arrays(config: ModelConfig, arrays: Mapping, *, source: str = "params",
                      error=ValueError) -> nnx.State:
    """Fills the abstract model with weights after checking names and shapes.

    Args:
      config: the architecture.
      arrays: nested dict of arrays following `layout(config)`.
      source: what the weights came from, for error messages.
      error: the exception class raised on a mismatch.

    Returns:
      The model's nnx.State (Params holding the given arrays, with their
      logical axis annotations).
    """
    check_layout(config, arrays, source=source, error=error)
    _, state = abstract_model(config)
    state = jax.tree.map(lambda x: x, state)  # a copy: the cached one stays abstract
    nnx.replace_by_pure_dict(state, arrays)
    return state


def init_params(config: ModelConfig, key: jax.Array, dtype=jnp.float32) -> nnx.State:
    """Random weights for the module tree (for tests).

    Kernels are N(0, 1/fan_in); norm scales are 1 + N(0, 0.1) so a wrong
    norm is visible; biases N(0, 0.02); embeddings N(0, 1/d_model) where the
    forward scales them by sqrt(d_model) (Gemma), else N(0, 0.02). Drawn on
    the host with numpy (no compilation), so not traceable under jit.

    Args:
      config: the architecture.
      key: a PRNG key (typed or raw uint32); the draws are deterministic in it.
      dtype: dtype of every leaf.

    Returns:
      The model's nnx.State.
    """
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    rng = np.random.default_rng(np.asarray(key, np.uint32).ravel())
    shapes = layout(config)
    pool = rng.standard_normal(sum(math.prod(s) for s in shapes.values()), dtype=np.float32)
    arrays: dict = {}
    cursor = 0
    for name, shape in shapes.items():
        leaf = name.rsplit(".", 1)[-1]
        if leaf == "scale":
            std, offset = 0.1, 1.0
        elif leaf in ("bias", "pos_embed"):
            std, offset = 0.02, 0.0
        elif leaf == "embed":
            std = 1 / math.sqrt(config.d_model) if config.scale_embeddings else 0.02
            offset = 0.0
        else:  # kernels: (..., fan_in, fan_out)
            std, offset = 1 / math.sqrt(shape[-2]), 0.0
        x = pool[cursor:cursor + math.prod(shape)].reshape(shape)
        cursor += math.prod(shape)
        node = arrays
        for part in name.split(".")[:-1]:
            node = node.setdefault(part, {})
        node[leaf] = jnp.asarray(np.float32(offset) + np.float32(std) * x, dtype)
    return state_from_arrays(config, arrays)
