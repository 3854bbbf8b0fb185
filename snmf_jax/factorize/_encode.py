"""`encode`: nonnegative codes of rows for fixed features.

Given features Φ (K, d), the codes of rows X (n, d) solve the nonnegative
least-squares problem min_{C >= 0} ‖X − C Φ‖²_F, row by row. The rows only
meet Φ through P = XΦᵀ (n, K) and Q = ΦΦᵀ (K, K), so a block of rows costs
one GEMM with X plus O(n·K²) per iteration:

1. Warm start: the unconstrained least-squares codes P (Q + λI)⁻¹, clamped
   to a floor of 1e-3 × the row's mean |code| (a positive floor, because the
   multiplicative update cannot revive an exact zero; a zero row of X, such
   as padding, gets zero codes and keeps them).
2. `iters` Ding–Li–Jordan multiplicative updates with Φ fixed
   (`_solver.multiplicative_update`, the rule of the batch fit).

This is the one definition of "codes for fixed features": the online fit
codes each mini-batch with it, `encode` codes new rows (held-out loss,
interpreting a store larger than any fit), and `encode_loss` scores features
on rows they were not fitted on.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from snmf_jax import _checks, _chunks, _io, _progress
from snmf_jax.factorize import _solver
from snmf_jax.factorize._codes_store import CodesStore
from snmf_jax.factorize._row_sources import as_source

DEFAULT_ITERS = 30
_WARM_FLOOR = 1e-3  # floor of the warm start, relative to the row's mean |code|
_RIDGE = 1e-6  # ridge of the warm start, relative to mean(diag Q)


def warm_start(p: Array, q: Array) -> Array:
    """Clamped least-squares codes: max(P (Q + λI)⁻¹, floor), (n, K).

    Args:
      p: (n, K) XΦᵀ.
      q: (K, K) ΦΦᵀ.

    Returns:
      (n, K) nonnegative codes; zero rows of P give zero rows.
    """
    k = q.shape[0]
    reg = _RIDGE * jnp.maximum(jnp.trace(q) / k, jnp.finfo(q.dtype).tiny)
    ls = _solver.solve_features(q, p.T, reg).T  # (n, K); Q symmetric
    floor = _WARM_FLOOR * jnp.mean(jnp.abs(ls), axis=1, keepdims=True)  # (n, 1)
    return jnp.maximum(ls, floor)


def solve_codes(x: Array, features: Array, *, iters: int = DEFAULT_ITERS,
                mu_eps: float = 1e-6) -> tuple[Array, Array, Array]:
    """Codes of rows for fixed features (jittable; iters is static).

    Args:
      x: (n, d) rows.
      features: (K, d) Φ.
      iters: multiplicative updates after the warm start.
      mu_eps: epsilon of the update's denominator.

    Returns:
      (codes (n, K) >= 0, P = XΦᵀ (n, K), Q = ΦΦᵀ (K, K)); P and Q give the
      per-row loss with `_solver.row_losses`.
    """
    p = _solver._project(x, features)  # (n, K)
    q = features @ features.T  # (K, K)
    codes = warm_start(p, q)
    codes = jax.lax.fori_loop(
        0, iters, lambda _, c: _solver.multiplicative_update(c, p, q, mu_eps), codes)
    return codes, p, q


@functools.partial(jax.jit, static_argnames=("iters", "mu_eps"))
def _encode_block(x, features, *, iters, mu_eps):
    """Codes of one block, its summed loss, ‖X‖² and column sums (for FVE)."""
    codes, p, q = solve_codes(x, features, iters=iters, mu_eps=mu_eps)
    sq = jnp.sum(x * x, axis=1)  # (n,)
    loss = jnp.maximum(_solver.row_losses(sq, codes, p, q), 0)  # (n,)
    return codes, jnp.sum(loss), jnp.sum(sq), jnp.sum(x, axis=0)


class EncodeLoss(NamedTuple):
    """How well fixed features reconstruct rows (codes by `encode`).

    Attributes:
      loss: ‖X − C Φ‖²_F summed over the rows.
      mean_loss: loss / n_rows.
      fve: fraction of variance explained, 1 − loss / Σ‖x − mean‖² (the
        definition `baselines.sae_metrics` uses, so the two compare).
      n_rows: rows scored.
    """

    loss: float
    mean_loss: float
    fve: float
    n_rows: int


def check_features(features, d: int | None = None) -> np.ndarray:
    """Validates features (K, d): 2-D, finite, width d when given."""
    f = np.asarray(features)
    if f.ndim != 2 or 0 in f.shape:
        raise ValueError(f"features must be a non-empty 2-D array (K, d); got shape {f.shape}")
    if f.dtype.kind not in "fiu":
        raise ValueError(f"features must be real-valued; got dtype {f.dtype}")
    f = f.astype(np.float32)
    _checks.finite_array("features", f)
    if d is not None and f.shape[1] != d:
        raise ValueError(f"features have width {f.shape[1]}; the rows have d = {d}")
    return f


def _blocks(src, batch_size: int):
    """(chunk i, lo, x block) over a RowSource, chunks cut into batch_size blocks."""
    b = src.chunk_bounds
    for i in range(src.num_chunks):
        x = np.asarray(src.chunk(i), np.float32)
        lo = int(b[i])
        if x.shape != (int(b[i + 1]) - lo, src.d):
            raise ValueError(f"chunk {i} has shape {x.shape}; its bounds say "
                             f"({int(b[i + 1]) - lo}, {src.d})")
        if not np.isfinite(x).all():
            bad = np.nonzero(~np.isfinite(x).all(axis=1))[0]
            raise ValueError(f"X has non-finite values in {len(bad)} row(s), first at global "
                             f"row(s) {(bad[:5] + lo).tolist()}; remove or repair those tokens")
        for s in range(0, x.shape[0], batch_size):
            yield i, lo + s, x[s:s + batch_size]


def _prepare(x, features, *, layer, batch_size, iters, mu_eps):
    """Validates the arguments (before any work); returns (source, features, settings)."""
    batch_size = _checks.integer("batch_size", batch_size, lo=1)
    iters = _checks.integer("iters", iters, lo=0)
    mu_eps = _checks.real("mu_eps", mu_eps, lo=0, lo_open=True)
    src = as_source(x, layer=layer, chunk_rows=batch_size)
    if int(src.n_rows) == 0:
        raise ValueError("X has no rows to encode")
    feats = check_features(features, int(src.d))
    return src, feats, dict(batch_size=batch_size, iters=iters, mu_eps=mu_eps)


def _run(src, feats: np.ndarray, *, batch_size, iters, mu_eps, progress, on_codes=None):
    """One pass of `_encode_block` over a source; returns (loss, ‖X‖², column sums)."""
    phi = jnp.asarray(feats)
    loss = sq = 0.0
    colsum = np.zeros(int(src.d), np.float64)
    bar = _progress.bar(int(src.n_rows), desc="encode", unit="row", unit_scale=True,
                        progress=progress, leave=False)
    with bar:
        for i, lo, block in _blocks(src, batch_size):
            m = block.shape[0]
            if m < batch_size:  # pad the tail: one compiled shape; zero rows code to zero
                block = np.concatenate([block, np.zeros((batch_size - m, block.shape[1]),
                                                        block.dtype)])
            codes, l, s, c = _encode_block(jnp.asarray(block), phi, iters=iters,
                                           mu_eps=mu_eps)
            loss += float(l)
            sq += float(s)
            colsum += np.asarray(c, np.float64)
            if on_codes is not None:
                on_codes(i, lo, np.asarray(codes[:m]))
            bar.update(m)
    return loss, sq, colsum


def encode(x, features, *, layer: int | None = None, batch_size: int = 4096,
           iters: int = DEFAULT_ITERS, mu_eps: float = 1e-6,
           out: str | os.PathLike | None = None, progress: bool = False):
    """Nonnegative codes of rows for fixed features: argmin_{C >= 0} ‖X − CΦ‖².

    Rows are coded a batch at a time (memory: one batch, whatever the number
    of rows); a store is streamed chunk by chunk. The codes come from the
    clamped least-squares warm start and `iters` multiplicative updates (see
    the module docstring); the online fit codes its mini-batches the same way.

    Args:
      x: (n, d) array, an ActivationStore (or its path), or any RowSource.
      features: (K, d) features Φ, e.g. `result.features`.
      layer: the layer of a multi-layer store.
      batch_size: rows coded per jitted call.
      iters: multiplicative updates after the warm start.
      mu_eps: epsilon of the update.
      out: a folder: the codes are streamed into a `CodesStore` there (in the
        source's chunking, one chunk in memory at a time) instead of being
        returned; its manifest records the features' SHA-256.
      progress: show a progress bar (rows).

    Returns:
      (n, K) float32 codes, or the `CodesStore` written to `out`.
    """
    src, feats, kw = _prepare(x, features, layer=layer, batch_size=batch_size, iters=iters,
                              mu_eps=mu_eps)
    k = feats.shape[0]
    if out is None:
        parts: list[np.ndarray] = []
        _run(src, feats, progress=progress, on_codes=lambda i, lo, c: parts.append(c), **kw)
        return np.concatenate(parts)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out {str(out)!r} exists and is not a directory")
    _chunks.remove_chunk_folder(out)  # a half-written store of an interrupted call
    rows = np.diff(np.asarray(src.chunk_bounds))
    pending: list[np.ndarray] = []
    entries: list[dict] = []

    def on_codes(i, lo, codes):
        pending.append(codes)
        if sum(len(c) for c in pending) == int(rows[i]):  # chunk i complete
            entries.append(CodesStore.write_chunk(out, i, np.concatenate(pending)))
            pending.clear()

    _run(src, feats, progress=progress, on_codes=on_codes, **kw)
    return CodesStore.finish(out, k, entries,
                             features_sha256=_io.arrays_digest({"features": feats}))


def encode_loss(x, features, *, layer: int | None = None, batch_size: int = 4096,
                iters: int = DEFAULT_ITERS, mu_eps: float = 1e-6,
                progress: bool = False) -> EncodeLoss:
    """Reconstruction of rows by fixed features, codes re-solved by `encode`.

    The held-out loss of the online fit, and the fair comparison of two
    fits' features (each scored with codes solved the same way).

    Args:
      x, features, layer, batch_size, iters, mu_eps, progress: as `encode`.

    Returns:
      An EncodeLoss (summed and per-row loss, FVE, rows).
    """
    src, feats, kw = _prepare(x, features, layer=layer, batch_size=batch_size, iters=iters,
                              mu_eps=mu_eps)
    loss, sq, colsum = _run(src, feats, progress=progress, **kw)
    n = int(src.n_rows)
    total_var = sq - float(colsum @ colsum) / n
    return EncodeLoss(loss=loss, mean_loss=loss / n,
                      fve=1.0 - loss / max(total_var, 1e-30), n_rows=n)
