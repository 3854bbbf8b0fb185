"""The decoder-only forward pass of GPT-2, Llama, Gemma 2 and Gemma 3.

One pure function, `forward`, runs every family: the layer weights are stacked
along a leading L axis and the blocks run under `lax.scan`, so compile time
does not grow with depth. Per-layer differences (sliding vs full attention,
local vs global rotary base) are per-layer arrays selected inside the scan.

Named sites ("mlp_hidden", "mlp_out", "resid_post") are where patches apply
and captures are read. Captures are written into a per-site buffer carried
through the scan (one slot per requested layer plus a scratch slot), so asking
for many layers costs one in-place write per layer, not one copy per request.
"""

from __future__ import annotations

import math
from typing import Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from snmf_jax.models import _layers
from snmf_jax.models._cache import KVCache
from snmf_jax.models._config import SITES, ModelConfig
from snmf_jax.models._patch import SitePatch, apply_site_patch

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


def _dense(x: Array, p: Mapping[str, Array]) -> Array:
    """x @ kernel (+ bias); kernel is (in, out)."""
    y = jnp.dot(x, p["kernel"])
    if "bias" in p:
        y = y + p["bias"]
    return y


def _norm(x: Array, p: Mapping[str, Array], config: ModelConfig) -> Array:
    if config.family == "gpt2":
        return _layers.layer_norm(x, p["scale"], p["bias"], config.norm_eps)
    return _layers.rms_norm(x, p["scale"], config.norm_eps,
                            scale_in_float32=config.family != "llama")


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
    if config.family == "gpt2":
        longest = tokens.shape[1] if cache is None else cache.max_len
        if longest > config.max_position:
            raise ValueError(
                f"GPT-2 has learned positions up to max_position={config.max_position}; "
                f"got {'a cache of max_len' if cache is not None else 'T ='} {longest}")
    for key in list(capture) + list(patch or {}):
        if (not isinstance(key, tuple) or len(key) != 2 or key[1] not in SITES
                or not 0 <= int(key[0]) < config.n_layers):
            raise ValueError(
                f"site keys must be (layer, site) with 0 <= layer < {config.n_layers} "
                f"and site in {SITES}; got {key!r}")
    for (layer, site), sp in (patch or {}).items():
        if not isinstance(sp, SitePatch):
            raise TypeError(
                f"patch[{(layer, site)!r}] must be a SitePatch; got {type(sp).__name__}")
        dim = config.site_dim(site)
        if jnp.shape(sp.vector)[-1:] != (dim,):
            raise ValueError(
                f"patch[{(layer, site)!r}].vector must end in the site width {dim}; "
                f"got shape {jnp.shape(sp.vector)}")


def forward(params: Params, tokens: Array, *, config: ModelConfig,
            attention_mask: Array | None = None, cache: KVCache | None = None,
            patch: Mapping[tuple[int, str], SitePatch] | None = None,
            capture: tuple[tuple[int, str], ...] = ()) -> ForwardOutput:
    """Runs the model on a batch of token ids.

    Pure and jittable with `config` and `capture` static; the keys of `patch`
    are static too (its leaves are traced, so new vectors never recompile).

    Positions come from the mask: position = number of real tokens before
    this one (in the cache and in this call), so a left-padded row gives the
    same logits on its real tokens as the unpadded row.

    Args:
      params: the weights pytree (see the model contract).
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
    them out downstream. Token ids must lie in [0, vocab_size) (not checked
    under jit).

    Returns:
      ForwardOutput(logits (B, T, V) float32, captures, cache).
    """
    capture = tuple((int(layer), str(site)) for layer, site in capture)
    patch = dict(patch or {})
    _check_inputs(params, tokens, config, attention_mask, cache, patch, capture)
    b, t = tokens.shape
    dtype = params["embed"].dtype
    n_layers = config.n_layers

    # Positions, key validity and slot indices (the cache's history first).
    new_mask = (jnp.ones((b, t), jnp.int32) if attention_mask is None
                else jnp.asarray(attention_mask).astype(jnp.int32))
    q_pos = jnp.cumsum(new_mask, axis=1) - 1  # (B, T)
    if cache is None:
        offset = 0
        key_mask = new_mask
        k_pos = q_pos
        q_index = jnp.arange(t)
    else:
        offset = cache.length
        q_pos = q_pos + jnp.sum(cache.mask, axis=1, keepdims=True)
        key_mask = jax.lax.dynamic_update_slice(cache.mask, new_mask, (0, offset))  # (B, S)
        k_pos = jnp.cumsum(key_mask, axis=1) - 1
        q_index = offset + jnp.arange(t)
    q_pos = jnp.maximum(q_pos, 0)
    k_pos = jnp.maximum(k_pos, 0)
    k_index = jnp.arange(key_mask.shape[1])
    k_valid = key_mask.astype(bool)

    sliding = np.asarray(config.sliding_layers)
    has_sliding = bool(sliding.any())
    full_mask = _layers.attention_mask(q_index, q_pos, k_index, k_pos, k_valid, None)
    window_mask = (_layers.attention_mask(q_index, q_pos, k_index, k_pos, k_valid,
                                          config.sliding_window)
                   if has_sliding else None)

    use_rope = config.family != "gpt2"
    if use_rope:
        global_rope = _layers.rope_cos_sin(
            q_pos, _layers.rope_inv_freq(config.head_dim, config.rope_theta,
                                         config.rope_scaling), dtype)
        local_rope = (_layers.rope_cos_sin(
            q_pos, _layers.rope_inv_freq(config.head_dim, config.rope_local_theta), dtype)
            if has_sliding else None)

    # Embedding.
    x = jnp.take(params["embed"], tokens, axis=0)  # (B, T, D)
    if config.family in ("gemma2", "gemma3"):
        # transformers scales in the embedding dtype (sqrt(D) rounded to it).
        x = x * jnp.asarray(math.sqrt(config.d_model), dtype)
    if config.family == "gpt2":
        x = x + jnp.take(params["pos_embed"], q_pos, axis=0)

    # Capture buffers: slot j holds the j-th requested layer of a site; the
    # last slot is scratch for layers nobody asked for.
    slots, buffers = {}, {}
    for site in SITES:
        layers = sorted({layer for layer, s in capture if s == site})
        if not layers:
            continue
        table = np.full((n_layers,), len(layers), np.int32)
        table[layers] = np.arange(len(layers))
        slots[site] = (layers, table)
        buffers[site] = jnp.zeros((len(layers) + 1, b, t, config.site_dim(site)), dtype)

    if config.query_pre_attn_scalar is not None:
        attn_scale = config.query_pre_attn_scalar ** -0.5
    else:
        attn_scale = config.head_dim ** -0.5
    gemma = config.family in ("gemma2", "gemma3")
    h_, kv_, hd = config.n_heads, config.n_kv_heads, config.head_dim

    def at_site(site, value, layer_idx, site_slot, bufs):
        for (p_layer, p_site), sp in patch.items():
            if p_site == site:
                value = jnp.where(layer_idx == p_layer, apply_site_patch(value, sp), value)
        if site in bufs:
            bufs = dict(bufs)
            bufs[site] = jax.lax.dynamic_update_index_in_dim(
                bufs[site], value, site_slot[site], axis=0)
        return value, bufs

    def block(carry, xs):
        x, ck, cv, bufs = carry
        p, layer_idx, is_sliding, site_slot = xs

        h = _norm(x, p["attn_norm"], config)
        q = _dense(h, p["q"]).reshape(b, t, h_, hd)  # (B, T, H, hd)
        k = _dense(h, p["k"]).reshape(b, t, kv_, hd)  # (B, T, KV, hd)
        v = _dense(h, p["v"]).reshape(b, t, kv_, hd)  # (B, T, KV, hd)
        if config.family == "gemma3":
            q = _layers.rms_norm(q, p["q_norm"]["scale"], config.norm_eps, scale_in_float32=True)
            k = _layers.rms_norm(k, p["k_norm"]["scale"], config.norm_eps, scale_in_float32=True)
        if use_rope:
            cos, sin = global_rope
            if has_sliding:
                cos = jnp.where(is_sliding, local_rope[0], cos)
                sin = jnp.where(is_sliding, local_rope[1], sin)
            q = _layers.apply_rope(q, cos, sin)
            k = _layers.apply_rope(k, cos, sin)
        k = k.transpose(0, 2, 1, 3)  # (B, KV, T, hd)
        v = v.transpose(0, 2, 1, 3)  # (B, KV, T, hd)
        if ck is not None:
            ck = jax.lax.dynamic_update_slice(ck, k[None].astype(ck.dtype),
                                              (layer_idx, 0, 0, offset, 0))
            cv = jax.lax.dynamic_update_slice(cv, v[None].astype(cv.dtype),
                                              (layer_idx, 0, 0, offset, 0))
            k = jax.lax.dynamic_index_in_dim(ck, layer_idx, 0, keepdims=False).astype(dtype)
            v = jax.lax.dynamic_index_in_dim(cv, layer_idx, 0, keepdims=False).astype(dtype)
        mask = jnp.where(is_sliding, window_mask, full_mask) if has_sliding else full_mask
        a = _layers.attention(q, k, v, mask, scale=attn_scale,
                              softcap=config.attn_logit_softcap)  # (B, T, H*hd)
        a = _dense(a, p["o"])
        if gemma:
            a = _norm(a, p["post_attn_norm"], config)
        x = x + a

        h = _norm(x, p["mlp_norm"], config)
        act = config.mlp_activation
        if config.family == "gpt2":
            hidden = _layers.activation(_dense(h, p["up"]), act)
        else:
            hidden = _layers.activation(_dense(h, p["gate"]), act) * _dense(h, p["up"])
        hidden, bufs = at_site("mlp_hidden", hidden, layer_idx, site_slot, bufs)
        out = _dense(hidden, p["down"])
        if gemma:
            out = _norm(out, p["post_mlp_norm"], config)
        out, bufs = at_site("mlp_out", out, layer_idx, site_slot, bufs)
        x = x + out
        x, bufs = at_site("resid_post", x, layer_idx, site_slot, bufs)
        return (x, ck, cv, bufs), None

    xs = (params["layers"], jnp.arange(n_layers), jnp.asarray(sliding),
          {site: jnp.asarray(table) for site, (_, table) in slots.items()})
    ck = cv = None
    if cache is not None:
        ck, cv = cache.k, cache.v
    (x, ck, cv, buffers), _ = jax.lax.scan(block, (x, ck, cv, buffers), xs)

    x = _norm(x, params["final_norm"], config)
    if config.tie_embeddings:
        logits = jnp.einsum("btd,vd->btv", x, params["embed"])
    else:
        logits = jnp.dot(x, params["unembed"]["kernel"])
    logits = logits.astype(jnp.float32)
    if config.final_logit_softcap is not None:
        cap = config.final_logit_softcap
        logits = jnp.tanh(logits / cap) * cap

    captures = {}
    for site, (layers, _) in slots.items():
        for j, layer in enumerate(layers):
            captures[(layer, site)] = buffers[site][j]
    captures = {key: captures[key] for key in capture}

    new_cache = None
    if cache is not None:
        new_cache = KVCache(k=ck, v=cv, mask=key_mask, length=cache.length + t)
    return ForwardOutput(logits=logits, captures=captures, cache=new_cache)
