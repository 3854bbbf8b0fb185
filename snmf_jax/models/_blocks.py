"""Blocks [start, stop) of any family as one block scanned over stacked weights.

What a block does is read off the config's architecture flags (norm kind,
gated MLP, rope, qk-norm, post-norms), never off the family's name.

The layer weights are stacked along a leading L axis (the module tree builds
its blocks under `nnx.vmap`) and one block body runs under `lax.scan` over
that state, so compile time does not grow with depth. This is what
`nnx.scan` does after splitting a module; scanning the state directly skips
the graph traversal (split/merge) on every trace, which keeps tracing, and
so compile time, where it was. Per-layer choices (sliding vs full attention,
local vs global rotary base) are per-layer arrays selected inside the scan.

Named sites ("mlp_hidden", "mlp_out", "resid_post") are where patches apply
and captures are read. Captures are written into a per-site buffer carried
through the scan (one slot per requested layer plus a scratch slot), so asking
for many layers costs one in-place write per layer, not one copy per request.
"""

from __future__ import annotations

from typing import Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from snmf_jax.models import _layers
from snmf_jax.models._cache import KVCache
from snmf_jax.models._config import SITES, ModelConfig
from snmf_jax.models._state import as_arrays
from snmf_jax.models._patch import SitePatch, apply_site_patch

Params = Mapping[str, object]


def _dense(x: Array, p: Mapping[str, Array]) -> Array:
    """x @ kernel (+ bias); kernel is (in, out)."""
    y = jnp.dot(x, p["kernel"])
    if "bias" in p:
        y = y + p["bias"]
    return y


def _norm(x: Array, p: Mapping[str, Array], config: ModelConfig) -> Array:
    if config.norm == "layer":
        return _layers.layer_norm(x, p["scale"], p["bias"], config.norm_eps)
    return _layers.rms_norm(x, p["scale"], config.norm_eps,
                            scale_in_float32=config.norm_scale_in_float32)


class _Positions(NamedTuple):
    """Where this call's tokens sit: positions, key validity and slot indices."""

    q_pos: Array  # (B, T) position of each new token
    k_pos: Array  # (B, S) position of each key
    q_index: Array  # (T,) slot of each new token
    k_index: Array  # (S,) slot of each key
    k_valid: Array  # (B, S) real keys
    key_mask: Array  # (B, S) int32, the cache's next mask
    offset: Array | int  # first slot written


def _positions(b: int, t: int, attention_mask, cache: KVCache | None) -> _Positions:
    """Positions from the mask: the number of real tokens before each token."""
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
    return _Positions(jnp.maximum(q_pos, 0), jnp.maximum(k_pos, 0), q_index,
                      jnp.arange(key_mask.shape[1]), key_mask.astype(bool), key_mask, offset)


def _check_sites(config: ModelConfig, patch, capture, start: int, stop: int) -> None:
    """Every patch/capture key is (layer, site) with the layer among those run."""
    for key in list(capture) + list(patch or {}):
        if (not isinstance(key, tuple) or len(key) != 2 or key[1] not in SITES
                or not 0 <= int(key[0]) < config.n_layers):
            raise ValueError(
                f"site keys must be (layer, site) with 0 <= layer < {config.n_layers} "
                f"and site in {SITES}; got {key!r}")
        if not start <= int(key[0]) < stop:
            raise ValueError(f"site {key!r} is outside the blocks run, [{start}, {stop})")


def run_blocks(params: Params, x: Array, *, config: ModelConfig, start: int = 0,
               stop: int | None = None, attention_mask: Array | None = None,
               cache: KVCache | None = None,
               patch: Mapping[tuple[int, str], SitePatch] | None = None,
               capture: tuple[tuple[int, str], ...] = ()
               ) -> tuple[Array, dict, KVCache | None]:
    """Runs blocks [start, stop) on a residual stream, one scanned block.

    Jittable with config, start, stop, capture and the patch keys static.

    Args:
      params: the weights (nnx.State or nested dict).
      x: (B, T) x D residual stream entering block `start`.
      config: the architecture.
      start, stop: the blocks to run (stop None: to the last).
      attention_mask, cache: as in `forward`; with a cache, only the layers
        run are written.
      patch: {(layer, site): SitePatch}, layers in [start, stop).
      capture: (layer, site) pairs to return, layers in [start, stop).

    Returns:
      (x (B, T, D) after block stop - 1, captures {(layer, site): (B, T, dim)},
      the updated cache or None).
    """
    p = as_arrays(params)
    stop = config.n_layers if stop is None else int(stop)
    start = int(start)
    if not 0 <= start <= stop <= config.n_layers:
        raise ValueError(f"need 0 <= start <= stop <= n_layers={config.n_layers}; got "
                         f"start={start}, stop={stop}")
    capture = tuple((int(layer), str(site)) for layer, site in capture)
    patch = dict(patch or {})
    _check_sites(config, patch, capture, start, stop)
    b, t, _ = x.shape
    dtype = x.dtype
    n_run = stop - start
    pos = _positions(b, t, attention_mask, cache)

    sliding = np.asarray(config.sliding_layers, bool)[start:stop]
    has_sliding = bool(sliding.any())
    full_mask = _layers.attention_mask(pos.q_index, pos.q_pos, pos.k_index, pos.k_pos,
                                       pos.k_valid, None)
    window_mask = (_layers.attention_mask(pos.q_index, pos.q_pos, pos.k_index, pos.k_pos,
                                          pos.k_valid, config.sliding_window)
                   if has_sliding else None)
    use_rope = config.positions == "rope"
    if use_rope:
        global_rope = _layers.rope_cos_sin(
            pos.q_pos, _layers.rope_inv_freq(config.head_dim, config.rope_theta,
                                             config.rope_scaling), dtype)
        local_rope = (_layers.rope_cos_sin(
            pos.q_pos, _layers.rope_inv_freq(config.head_dim, config.rope_local_theta), dtype)
            if has_sliding else None)

    # Capture buffers: slot j holds the j-th requested layer of a site; the
    # last slot is scratch for layers nobody asked for.
    slots, buffers = {}, {}
    for site in SITES:
        layers = sorted({layer for layer, s in capture if s == site})
        if not layers:
            continue
        table = np.full((n_run,), len(layers), np.int32)
        table[np.asarray(layers) - start] = np.arange(len(layers))
        slots[site] = (layers, table)
        buffers[site] = jnp.zeros((len(layers) + 1, b, t, config.site_dim(site)), dtype)

    if config.query_pre_attn_scalar is not None:
        attn_scale = config.query_pre_attn_scalar ** -0.5
    else:
        attn_scale = config.head_dim ** -0.5
    h_, kv_, hd = config.n_heads, config.n_kv_heads, config.head_dim
    offset = pos.offset

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
        w, layer_idx, is_sliding, site_slot = xs
        if w is None:  # a sub-range: read this layer from the full stack
            w = jax.tree.map(lambda a: jax.lax.dynamic_index_in_dim(a, layer_idx, 0, False),
                             p["layers"])

        h = _norm(x, w["attn_norm"], config)
        q = _dense(h, w["q"]).reshape(b, t, h_, hd)  # (B, T, H, hd)
        k = _dense(h, w["k"]).reshape(b, t, kv_, hd)  # (B, T, KV, hd)
        v = _dense(h, w["v"]).reshape(b, t, kv_, hd)  # (B, T, KV, hd)
        if config.qk_norm:
            q = _layers.rms_norm(q, w["q_norm"]["scale"], config.norm_eps, scale_in_float32=True)
            k = _layers.rms_norm(k, w["k_norm"]["scale"], config.norm_eps, scale_in_float32=True)
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
        a = _dense(a, w["o"])
        if config.post_attn_norm:
            a = _norm(a, w["post_attn_norm"], config)
        x = x + a

        h = _norm(x, w["mlp_norm"], config)
        act = config.mlp_activation
        if config.gated_mlp:
            hidden = _layers.activation(_dense(h, w["gate"]), act) * _dense(h, w["up"])
        else:
            hidden = _layers.activation(_dense(h, w["up"]), act)
        hidden, bufs = at_site("mlp_hidden", hidden, layer_idx, site_slot, bufs)
        out = _mlp_out(hidden, w, config)
        out, bufs = at_site("mlp_out", out, layer_idx, site_slot, bufs)
        x = x + out
        x, bufs = at_site("resid_post", x, layer_idx, site_slot, bufs)
        return (x, ck, cv, bufs), None

    # All blocks: scan over the stacked weights. A sub-range scans over layer
    # indices and reads each layer from the full stack inside the loop: a
    # slice w[start:stop] fed to the loop would be copied on every call.
    layer_weights = p["layers"] if (start, stop) == (0, config.n_layers) else None
    xs = (layer_weights, jnp.arange(start, stop), jnp.asarray(sliding),
          {site: jnp.asarray(table) for site, (_, table) in slots.items()})
    ck = cv = None
    if cache is not None:
        ck, cv = cache.k, cache.v
    if n_run:
        (x, ck, cv, buffers), _ = jax.lax.scan(block, (x, ck, cv, buffers), xs)

    captures = {}
    for site, (layers, _) in slots.items():
        for j, layer in enumerate(layers):
            captures[(layer, site)] = buffers[site][j]
    captures = {key: captures[key] for key in capture}
    new_cache = None
    if cache is not None:
        new_cache = KVCache(k=ck, v=cv, mask=pos.key_mask, length=cache.length + t)
    return x, captures, new_cache


def _mlp_out(hidden: Array, w: Mapping, config: ModelConfig, bias: bool = True) -> Array:
    """Down projection (+ bias), then any post-MLP norm (Gemma's)."""
    out = jnp.dot(hidden, w["down"]["kernel"])
    if bias and "bias" in w["down"]:
        out = out + w["down"]["bias"]
    if config.post_mlp_norm:
        out = _norm(out, w["post_mlp_norm"], config)
    return out


