"""KV-cache decoding gives the logits of the full forward pass."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from snmf_jax.models import KVCache, Model, forward, init_cache, init_params
from snmf_jax.testing import tiny_config

TOL = 1e-4
VOCAB = 97

CONFIGS = {
    "gpt2": tiny_config("gpt2", vocab_size=VOCAB, n_kv_heads=4, d_mlp=64, tie_embeddings=True),
    "llama": tiny_config("llama", vocab_size=VOCAB, d_mlp=64),
    "gemma2": tiny_config("gemma2", vocab_size=VOCAB, d_mlp=64, tie_embeddings=True,
                          query_pre_attn_scalar=12.0, attn_logit_softcap=2.0,
                          final_logit_softcap=3.0),
    "gemma3": tiny_config("gemma3", vocab_size=VOCAB, n_kv_heads=1, d_mlp=64,
                          tie_embeddings=True, query_pre_attn_scalar=12.0,
                          rope_local_theta=100.0),
}
# (Gemma: layers "sliding", "full" with a window of 4, tiny_config's defaults.)

# LLVM -O0 compiles the tiny test programs ~3x faster; the HLO (and so the
# float semantics, which XLA keeps strict) is the same as in production.
FAST_COMPILE = {"xla_backend_optimization_level": 0}
_FORWARD = jax.jit(forward, static_argnames=("config", "capture"),
                   compiler_options=FAST_COMPILE)


def _decode(params, tokens, cache, config):
    """Teacher-forced decoding, one token per step, under lax.scan (so the
    cache length is traced, as in a jitted generation loop)."""

    def step(cache, tok):
        out = forward(params, tok[:, None], config=config, cache=cache)
        return out.cache, out.logits[:, 0]

    cache, logits = jax.lax.scan(step, cache, tokens.T)
    return logits.transpose(1, 0, 2), cache  # (B, n, V)


_DECODE = jax.jit(_decode, static_argnames=("config",), compiler_options=FAST_COMPILE)


@pytest.mark.parametrize("family", list(CONFIGS))
def test_prefill_then_decode_matches_full_forward(family):
    config = CONFIGS[family]
    params = init_params(config, jax.random.key(1))
    rng = np.random.default_rng(0)
    prompt_len, n_new = 9, 7  # longer than the sliding window of 4
    lengths = [prompt_len, prompt_len - 4]  # row 1 is left-padded by 4
    total = prompt_len + n_new
    tokens = rng.integers(1, VOCAB, size=(2, total)).astype(np.int32)
    mask = np.ones((2, total), np.int32)
    mask[1, : prompt_len - lengths[1]] = 0
    tokens[mask == 0] = 0
    full = _FORWARD(params, jnp.asarray(tokens), config=config,
                    attention_mask=jnp.asarray(mask)).logits

    cache = init_cache(config, batch_size=2, max_len=total + 3)
    pre = _FORWARD(params, jnp.asarray(tokens[:, :prompt_len]), config=config,
                   attention_mask=jnp.asarray(mask[:, :prompt_len]), cache=cache)
    assert int(pre.cache.length) == prompt_len
    np.testing.assert_array_equal(np.asarray(pre.cache.mask[:, :prompt_len]),
                                  mask[:, :prompt_len])
    real = mask[:, :prompt_len] == 1
    np.testing.assert_allclose(np.asarray(pre.logits)[real], np.asarray(full[:, :prompt_len])[real],
                               atol=TOL, rtol=0)

    logits, cache = _DECODE(params, jnp.asarray(tokens[:, prompt_len:]), pre.cache, config)
    assert int(cache.length) == total
    np.testing.assert_array_equal(np.asarray(cache.mask[:, total:]), 0)
    np.testing.assert_allclose(np.asarray(logits), np.asarray(full[:, prompt_len:]),
                               atol=TOL, rtol=0, err_msg=family)


def test_chunked_prefill_and_left_padded_row_match_unpadded():
    """Chunks of several tokens through the cache; the left-padded row's
    logits equal those of the same tokens without padding."""
    config = CONFIGS["gemma3"]
    params = init_params(config, jax.random.key(2))
    rng = np.random.default_rng(3)
    row = rng.integers(1, VOCAB, size=12).astype(np.int32)
    unpadded = _FORWARD(params, jnp.asarray(np.stack([row, row])), config=config).logits
    pad = 3
    tokens = np.zeros((2, 12 + pad), np.int32)
    tokens[0, pad:], tokens[1, :12] = row, row
    mask = np.zeros_like(tokens)
    mask[0, pad:], mask[1, :12] = 1, 1
    cache = init_cache(config, 2, 12 + pad)
    chunks = []
    for start in range(0, 12 + pad, 5):
        out = _FORWARD(params, jnp.asarray(tokens[:, start:start + 5]), config=config,
                       attention_mask=jnp.asarray(mask[:, start:start + 5]), cache=cache)
        cache = out.cache
        chunks.append(np.asarray(out.logits))
    logits = np.concatenate(chunks, axis=1)
    np.testing.assert_allclose(logits[0, pad:], np.asarray(unpadded[0]), atol=TOL, rtol=0)
    np.testing.assert_allclose(logits[1, :12], np.asarray(unpadded[1]), atol=TOL, rtol=0)


def test_init_cache_shapes_and_errors():
    config = CONFIGS["llama"]
    cache = init_cache(config, 3, 10, jnp.bfloat16)
    assert isinstance(cache, KVCache)
    assert cache.k.shape == (2, 3, 2, 10, 8) and cache.k.dtype == jnp.bfloat16
    assert cache.mask.shape == (3, 10) and int(cache.length) == 0
    assert cache.max_len == 10
    with pytest.raises(ValueError, match="max_len"):
        init_cache(config, 1, 0)
    params = init_params(config, jax.random.key(0))
    with pytest.raises(ValueError, match="cache overflow: 0 cached \\+ 11 new tokens > max_len 10"):
        forward(params, jnp.zeros((3, 11), jnp.int32), config=config, cache=cache)
    with pytest.raises(ValueError, match="cache batch size 3 != tokens batch size 2"):
        forward(params, jnp.zeros((2, 4), jnp.int32), config=config, cache=cache)
    # Model.forward checks on the host (inside jit the length is traced).
    model = Model(config, params)
    with pytest.raises(ValueError, match="cache overflow: 0 cached \\+ 11 new tokens"):
        model.forward(np.zeros((3, 11), np.int32), cache=cache)
    gpt2 = CONFIGS["gpt2"]
    with pytest.raises(ValueError, match="max_position=64; got a cache of max_len 65"):
        forward(init_params(gpt2, jax.random.key(0)), jnp.zeros((1, 2), jnp.int32),
                config=gpt2, cache=init_cache(gpt2, 1, 65))
