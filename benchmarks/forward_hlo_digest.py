"""Digest of the lowered forward pass, one line per model family.

A refactor of models/ that must not change what runs (issue 23: families as
config flags) shows it exactly: run this before and after, from each tree's
root, and compare. Equal digests mean the same StableHLO program (source
locations stripped), hence the same compiled code and speed, which the timings
of bench_forward.py on a busy CPU cannot show to better than tens of percent.

    PYTHONPATH=. python benchmarks/forward_hlo_digest.py
"""

from __future__ import annotations

import hashlib
import os
import re

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from snmf_jax.models import (PRESETS, ModelConfig, as_arrays, config_from_gguf,  # noqa: E402
                             forward, read_gguf)
from snmf_jax.models._modules import abstract_model  # noqa: E402


def configs() -> dict[str, ModelConfig]:
    """The real presets that are installed, and a tiny GPT-2 and Gemma 2."""
    out = {name: config_from_gguf(read_gguf(p.path()))
           for name, p in PRESETS.items() if p.available()}
    sizes = dict(vocab_size=64, d_model=32, n_layers=3, n_heads=4, n_kv_heads=2, head_dim=8,
                 d_mlp=48, max_position=64)
    out["tiny-gpt2"] = ModelConfig(family="gpt2", **dict(sizes, n_kv_heads=4))
    out["tiny-gemma2"] = ModelConfig(
        family="gemma2", **sizes, layer_types=("sliding", "full", "sliding"),
        sliding_window=4, attn_logit_softcap=50.0, final_logit_softcap=30.0,
        query_pre_attn_scalar=8.0)
    return out


def digest(config: ModelConfig) -> str:
    """sha256 prefix of forward's StableHLO for (2, 16) tokens, one capture."""
    _, state = abstract_model(config)
    params = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), as_arrays(state))
    fn = jax.jit(forward, static_argnames=("config", "capture"))
    text = fn.lower(params, jax.ShapeDtypeStruct((2, 16), jnp.int32), config=config,
                    capture=((1, "mlp_hidden"),)).as_text()
    text = re.sub(r"#loc\d*[^\n]*\n", "", re.sub(r"loc\([^)]*\)", "", text))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


if __name__ == "__main__":
    for name, config in configs().items():
        print(f"{name:14s} {digest(config)}")
