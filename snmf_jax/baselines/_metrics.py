"""Reconstruction and sparsity of a trained sparse autoencoder."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from snmf_jax.baselines._sae import SAEConfig, SparseAutoencoder, decode, encode
from snmf_jax.baselines._stream import _chunk_reader


class SAEMetrics(NamedTuple):
    """Attributes:
      fve: fraction of variance explained, 1 - sum|x - x_hat|^2 / sum|x - mean|^2.
      l0: mean number of active latents per token.
      dead_fraction: latents that never fired on these tokens.
      n_tokens: tokens evaluated.
    """

    fve: float
    l0: float
    dead_fraction: float
    n_tokens: int


def _batch_stats(params, x, config: SAEConfig):
    z = encode(params, x, config)  # (B, d_sae)
    err = decode(params, z) - x
    return (jnp.sum(err * err), jnp.sum(x, 0), jnp.sum(x * x),
            jnp.sum(z > 0), jnp.any(z > 0, 0))


_batch_stats_jit = jax.jit(_batch_stats, static_argnames="config")


def sae_metrics(sae: SparseAutoencoder, data: Any, *, layer: int | None = None,
                batch_size: int = 4096, max_tokens: int | None = None) -> SAEMetrics:
    """FVE, L0 and dead latents of `sae` on activations.

    Args:
      sae: the autoencoder.
      data: (n, d) array, Activations or ActivationStore (read in order).
      layer: layer of a multi-layer store.
      batch_size: rows per jitted batch (the last partial batch is padded away).
      max_tokens: stop after this many rows.
    """
    n_chunks, chunk, d = _chunk_reader(data, layer)
    if d != sae.config.d_in:
        raise ValueError(f"data: activations have width {d}; the SAE expects "
                         f"d_in={sae.config.d_in}")
    params = sae.params()
    sse = sq = l0 = 0.0
    tot = np.zeros(d, np.float64)
    fired = np.zeros(sae.config.d_sae, bool)
    n = 0
    for i in range(n_chunks):
        X = chunk(i)
        if max_tokens is not None:
            X = X[:max(max_tokens - n, 0)]
        for s in range(0, len(X), batch_size):
            x = X[s:s + batch_size]
            e, xs, xx, nz, f = jax.device_get(_batch_stats_jit(params, jnp.asarray(x),
                                                               sae.config))
            sse += float(e); tot += xs; sq += float(xx); l0 += float(nz)
            fired |= f
            n += len(x)
    if n == 0:
        raise ValueError("data: no rows to evaluate")
    total_var = sq - float(tot @ tot) / n
    return SAEMetrics(fve=1.0 - sse / max(total_var, 1e-30), l0=l0 / n,
                      dead_fraction=float(1.0 - fired.mean()), n_tokens=n)
