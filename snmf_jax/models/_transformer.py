"""The one forward pass (GPT-2, Llama, Gemma 2/3 are flag settings), and its pieces.

Pure functions over the weights (the module tree's `nnx.State`, or the same
nested dict of arrays): `forward` is `embed`, `run_blocks` (in `_blocks`) and
`unembed`. Other stages call the pieces on their own (run the early blocks
once, stop after the last captured layer, map an MLP-hidden vector to the
residual stream, project onto the vocabulary) instead of cutting a model.
"""

from __future__ import annotations

import math
from typing import Mapping, NamedTuple

import jax
import jax.numpy as jnp
from jax import Array

from snmf_jax import _checks
from snmf_jax.models._blocks import _check_sites, _mlp_out, _norm, _positions, run_blocks
from snmf_jax.models._cache import KVCache
from snmf_jax.models._config import ModelConfig
from snmf_jax.models._state import as_arrays
from snmf_jax.models._patch import SitePatch

Params = Mapping[str, object]


class ForwardOutput(NamedTuple):
    """Result of `forward`.

    Attributes:
      logits: (B, T, V) float32 next-token logits.
      captures: {(layer, site): (B, T, dim)} activations in the params dtype,
        after any patch at that site.
      cache: the updated KVCache, or None when no cache was passed.
    """

    logits: Array
    captures: dict
    cache: KVCache | None


def _check_inputs(params, tokens, config, attention_mask, cache, patch, capture):
    if not isinstance(config, ModelConfig):
        raise TypeError(f"config must be a ModelConfig; got {type(config).__name__}")
    if tokens.ndim != 2:
        raise ValueError(f"tokens must be (B, T); got shape {tokens.shape}")
    if not jnp.issubdtype(tokens.dtype, jnp.integer):
        raise ValueError(f"tokens must be integers; got dtype {tokens.dtype}")
    if attention_mask is not None and attention_mask.shape != tokens.shape:
        raise ValueError(
            f"attention_mask must have the shape of tokens {tokens.shape}; got "
            f"{attention_mask.shape}")
    embed = params["embed"]
    if embed.shape != (config.vocab_size, config.d_model):
        raise ValueError(
            f"params['embed'] must be (vocab_size, d_model) = "
            f"{(config.vocab_size, config.d_model)}; got {embed.shape}")
    if cache is not None:
        b = tokens.shape[0]
        if cache.mask.shape[0] != b:
            raise ValueError(
                f"cache batch size {cache.mask.shape[0]} != tokens batch size {b}")
        if not isinstance(cache.length, jax.core.Tracer):
            length = int(cache.length)
            if length + tokens.shape[1] > cache.max_len:
                raise ValueError(
                    f"cache overflow: {length} cached + {tokens.shape[1]} new tokens "
                    f"> max_len {cache.max_len}")
    if config.positions == "learned":
        longest = tokens.shape[1] if cache is None else cache.max_len
        if longest > config.max_position:
            raise ValueError(
                f"learned positions end at max_position={config.max_position}; "
                f"got {'a cache of max_len' if cache is not None else 'T ='} {longest}")
    _check_sites(config, patch, capture, 0, config.n_layers)
    for (layer, site), sp in (patch or {}).items():
        if not isinstance(sp, SitePatch):
            raise TypeError(
                f"patch[{(layer, site)!r}] must be a SitePatch; got {type(sp).__name__}")
        dim = config.site_dim(site)
        if jnp.shape(sp.vector)[-1:] != (dim,):
            raise ValueError(
                f"patch[{(layer, site)!r}].vector must end in the site width {dim}; "
                f"got shape {jnp.shape(sp.vector)}")
    check_values(tokens, config, cache=cache, patch=patch)


def check_values(tokens, config: ModelConfig, *, cache: KVCache | None = None,
                 patch: Mapping[tuple[int, str], SitePatch] | None = None) -> None:
    """Checks the values `forward` cannot check under jit: token ids in
    [0, vocab_size) (`jnp.take` would clamp them silently), positions within
    max_position (rotary models too: they were never trained past it) and
    finite patch vectors and scales.

    Only concrete values are checked (tracers are skipped), so jitted code gains
    no host syncs or recompiles; `Model.forward` calls this before its jit.

    Args:
      tokens: (B, T) token ids.
      config: the architecture.
      cache: the KVCache the tokens are appended to, or None.
      patch: {(layer, site): SitePatch}, or None.
    """
    if _checks.concrete(tokens):
        _checks.token_ids("tokens", tokens, config.vocab_size)
    offset = 0 if cache is None or not _checks.concrete(cache.length) else int(cache.length)
    if config.positions == "rope" and offset + tokens.shape[-1] > config.max_position:
        raise ValueError(
            f"tokens: {tokens.shape[-1]} tokens (after {offset} cached) exceed "
            f"max_position={config.max_position}")
    for key, sp in (patch or {}).items():
        if isinstance(sp, SitePatch):
            _checks.finite_array(f"patch[{key!r}].vector", sp.vector)
            _checks.finite_array(f"patch[{key!r}].scale", sp.scale)
            _checks.finite_array(f"patch[{key!r}].replace", sp.replace)


def embed(params: Params, tokens: Array, *, config: ModelConfig,
          attention_mask: Array | None = None, cache: KVCache | None = None) -> Array:
    """Token embedding (times sqrt(D) if scale_embeddings; plus learned positions).

    Args:
      params: the weights (nnx.State or nested dict).
      tokens: (B, T) int token ids.
      config: the architecture.
      attention_mask, cache: as in `forward` (they fix learned positions).

    Returns:
      (B, T, D) residual stream entering block 0, in the weights' dtype.
    """
    p = as_arrays(params)
    x = jnp.take(p["embed"], tokens, axis=0)  # (B, T, D)
    if config.scale_embeddings:
        # transformers scales in the embedding dtype (sqrt(D) rounded to it).
        x = x * jnp.asarray(math.sqrt(config.d_model), x.dtype)
    if config.positions == "learned":
        pos = _positions(*tokens.shape, attention_mask, cache)
        x = x + jnp.take(p["pos_embed"], pos.q_pos, axis=0)
    return x


def mlp_output_map(params: Params, hidden: Array, *, config: ModelConfig, layer: int,
                   bias: bool = True) -> Array:
    """The map from a block's mlp_hidden site to its mlp_out site.

    The down projection and any post-MLP norm (Gemma 2/3's): what
    the block adds to the residual stream for MLP hidden activations `hidden`.

    Args:
      params: the weights (nnx.State or nested dict).
      hidden: (..., d_mlp) vectors at the mlp_hidden site.
      config: the architecture.
      layer: the block.
      bias: add the down projection's bias (GPT-2); False gives the linear
        part, the image of a direction.

    Returns:
      (..., d_model) in the dtype of hidden and weights.
    """
    p = as_arrays(params)
    if not 0 <= int(layer) < config.n_layers:
        raise ValueError(f"layer must be in [0, {config.n_layers}); got {layer}")
    hidden = jnp.asarray(hidden)
    if hidden.shape[-1:] != (config.d_mlp,):
        raise ValueError(f"hidden must end in d_mlp={config.d_mlp}; got shape {hidden.shape}")
    names = ("down", "post_mlp_norm")
    w = {k: jax.tree.map(lambda a: a[layer], p["layers"][k]) for k in names
         if k in p["layers"]}
    return _mlp_out(hidden, w, config, bias=bias)


def unembedding_matrix(params: Params, config: ModelConfig) -> Array:
    """(D, V) LM head (the embedding's transpose when tied)."""
    p = as_arrays(params)
    return p["embed"].T if config.tie_embeddings else p["unembed"]["kernel"]


def unembed(params: Params, x: Array, *, config: ModelConfig) -> Array:
    """Final norm, LM head and any final soft-cap.

    Args:
      params: the weights (nnx.State or nested dict).
      x: (..., D) residual stream after the last block.
      config: the architecture.

    Returns:
      (..., V) float32 logits.
    """
    p = as_arrays(params)
    x = _norm(x, p["final_norm"], config)
    if config.tie_embeddings:
        logits = jnp.einsum("...d,vd->...v", x, p["embed"])
    else:
        logits = jnp.dot(x, p["unembed"]["kernel"])
    logits = logits.astype(jnp.float32)
    if config.final_logit_softcap is not None:
        cap = config.final_logit_softcap
        logits = jnp.tanh(logits / cap) * cap
    return logits


def forward(params: Params, tokens: Array, *, config: ModelConfig,
            attention_mask: Array | None = None, cache: KVCache | None = None,
            patch: Mapping[tuple[int, str], SitePatch] | None = None,
            capture: tuple[tuple[int, str], ...] = ()) -> ForwardOutput:
    """Runs the model on a batch of token ids: `embed`, `run_blocks`, `unembed`.

    Pure and jittable with `config` and `capture` static; the keys of `patch`
    are static too (its leaves are traced, so new vectors never recompile).

    Positions come from the mask: position = number of real tokens before
    this one (in the cache and in this call), so a left-padded row gives the
    same logits on its real tokens as the unpadded row.

    Args:
      params: the weights: the model's nnx.State (or the same nested dict of
        arrays), passed as an argument, never closed over.
      tokens: (B, T) int token ids.
      config: the architecture (static).
      attention_mask: (B, T) 1 for real tokens, 0 for padding, covering ONLY
        the tokens of this call; None means all real. With a cache, earlier
        tokens are masked by the cache's own `mask`, so a left-padded prompt
        is prefilled with its mask and then decoded with attention_mask=None.
      cache: a KVCache to append to (from `init_cache`, or returned by the
        previous call). The T tokens are written at slots [length, length+T)
        and attend to every real token before them. None: no cache.
      patch: {(layer, site): SitePatch} edits applied where the site's value
        is produced, before it flows on. A SitePatch's `positions` is (B, T)
        over the tokens of this call (with a cache: the new tokens only).
      capture: static tuple of (layer, site) to return; each value is
        (B, T) over the tokens of this call.

    Padding tokens still produce (meaningless) logits and activations: mask
    them out downstream. Token ids must lie in [0, vocab_size) and patches be
    finite: checked on concrete values, not under jit (`Model.forward`
    checks them before its jit).

    Returns:
      ForwardOutput(logits (B, T, V) float32, captures, cache).
    """
    p = as_arrays(params)
    capture = tuple((int(layer), str(site)) for layer, site in capture)
    patch = dict(patch or {})
    _check_inputs(p, tokens, config, attention_mask, cache, patch, capture)
    x = embed(p, tokens, config=config, attention_mask=attention_mask, cache=cache)
    x, captures, new_cache = run_blocks(p, x, config=config, attention_mask=attention_mask,
                                        cache=cache, patch=patch, capture=capture)
    return ForwardOutput(logits=unembed(p, x, config=config), captures=captures,
                         cache=new_cache)
