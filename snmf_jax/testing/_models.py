"""The tiny random model every test builds: one config, any family."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from snmf_jax.models import Model, ModelConfig, init_params

# Small enough to compile in well under a second, big enough for grouped-query
# attention (4 query heads over 2 KV heads) and for CharTokenizer's ids (< 64).
SIZES = dict(vocab_size=64, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=8,
             d_mlp=48, max_position=64, eos_token_ids=(1,), tie_embeddings=False)
# Gemma's own settings, so a tiny Gemma exercises them: sliding-window layers
# (from the first, alternating with full ones), a window shorter than the test
# prompts, and queries scaled by query_pre_attn_scalar**-0.5 instead of head_dim's.
GEMMA = dict(sliding_window=4, query_pre_attn_scalar=8.0)
EXTRAS = {"gemma2": GEMMA, "gemma3": GEMMA}  # per preset family, beyond SIZES


def tiny_config(family: str = "llama", **overrides: Any) -> ModelConfig:
    """A tiny `ModelConfig` of a preset family.

    Defaults: vocab 64, d_model 32, 2 layers, 4 query heads over 2 KV heads of
    width 8, d_mlp 48, max_position 64, EOS id 1, untied embeddings (so the
    unembedding is a matrix of its own). Gemma 2 / 3 also get `GEMMA`; a
    config with a sliding window and no `layer_types` alternates "sliding",
    "full", ... over its layers.

    Args:
      family: a preset family ("gpt2", "llama", "gemma2", "gemma3").
      **overrides: any `ModelConfig` field; wins over the defaults (give
        `layer_types=()` and `sliding_window=None` for a Gemma without windows).

    Returns:
      The config.
    """
    kw = {**SIZES, **EXTRAS.get(family, {}), **overrides}
    if kw.get("sliding_window") and "layer_types" not in overrides:
        kw["layer_types"] = tuple("sliding" if i % 2 == 0 else "full"
                                  for i in range(kw["n_layers"]))
    return ModelConfig(family=family, **kw)


def tiny_model(family: str = "llama", *, seed: int = 0, tokenizer: Any = None,
               logit_scale: float = 1.0, dtype=jnp.float32, name: str = "tiny",
               **overrides: Any) -> Model:
    """A tiny random `Model` (`tiny_config`'s architecture).

    Args:
      family: a preset family.
      seed: the weights' seed (`init_params` with `jax.random.key(seed)`).
      tokenizer: the model's tokenizer (e.g. `CharTokenizer()`), or None.
      logit_scale: multiplies the unembedding, so next-token distributions
        are peaked (3.0: sampling and KL calibration have something to move);
        needs untied embeddings.
      dtype: dtype of every weight.
      name: the model's label.
      **overrides: `ModelConfig` fields (see `tiny_config`).

    Returns:
      The Model.
    """
    config = tiny_config(family, **overrides)
    params = init_params(config, jax.random.key(seed), dtype)
    if logit_scale != 1.0:
        if config.tie_embeddings:
            raise ValueError("tiny_model: logit_scale needs tie_embeddings=False")
        params["unembed"]["kernel"] = params["unembed"]["kernel"] * logit_scale
    return Model(config, params, tokenizer, name)
