"""Initial codes: random, SVD (Ding, Li & Jordan 2010, eqs. 17-18), k-means."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import Array

_BLOCK = 4096  # rows per random block; fixes the stream regardless of sharding
CODE_FLOOR = 1e-6


def random_codes(key: Array, start: int, stop: int, rank: int,
                 dtype=jnp.float32) -> Array:
    """Rows [start, stop) of the random initial codes U(0, 1), floored at 1e-6.

    Row i is drawn from block i // 4096 of a counter-based stream, so any
    split of the rows (devices, hosts, store chunks) gets the same codes.

    Args:
      key: PRNG key.
      start, stop: global row range.
      rank: K.
      dtype: output dtype.

    Returns:
      (stop - start, rank) codes.
    """
    first, last = start // _BLOCK, (stop - 1) // _BLOCK
    blocks = [jax.random.uniform(jax.random.fold_in(key, b), (_BLOCK, rank), dtype)
              for b in range(first, last + 1)]
    u = jnp.concatenate(blocks, axis=0)  # (n_blocks * _BLOCK, K)
    off = start - first * _BLOCK
    return jnp.maximum(u[off:off + stop - start], CODE_FLOOR)


def svd_init(x: Array, rank: int, key: Array, *, oversample: int = 10,
             power_iters: int = 4) -> tuple[Array, Array]:
    """SVD initialisation of Ding et al.: C = max(U√Σ, 1e-6), Φ = √Σ Vᵀ.

    In the paper's orientation A = Xᵀ ≈ Z Y, the signed factor is Z = U_A√Σ
    and the nonnegative one is Y = √Σ V_Aᵀ clamped; for X = U Σ Vᵀ these are
    Φ = √Σ Vᵀ and C = U√Σ. Each singular pair's sign is chosen so the code
    column sums to a nonnegative value (keeping the larger half after the
    clamp), which makes the init deterministic. A randomised range finder
    keeps the cost at O(n·d·K) for large X.

    Args:
      x: (n, d) data.
      rank: K.
      key: PRNG key of the range finder.

    Returns:
      codes (n, K), features (K, d).
    """
    n, d = x.shape
    k = min(rank + oversample, n, d)
    if k >= min(n, d) or min(n, d) <= 2 * rank:
        u, s, vt = jnp.linalg.svd(x, full_matrices=False)
    else:
        omega = jax.random.normal(key, (d, k), x.dtype)
        y = x @ omega  # (n, k)
        for _ in range(power_iters):
            y, _ = jnp.linalg.qr(y)
            z = x.T @ y  # (d, k)
            z, _ = jnp.linalg.qr(z)
            y = x @ z
        qmat, _ = jnp.linalg.qr(y)  # (n, k)
        b = qmat.T @ x  # (k, d)
        ub, s, vt = jnp.linalg.svd(b, full_matrices=False)
        u = qmat @ ub
    u, s, vt = u[:, :rank], s[:rank], vt[:rank]
    # Ranks beyond the data's own rank get tiny constant codes.
    if u.shape[1] < rank:
        pad = rank - u.shape[1]
        u = jnp.concatenate([u, jnp.zeros((n, pad), x.dtype)], axis=1)
        s = jnp.concatenate([s, jnp.zeros((pad,), x.dtype)])
        vt = jnp.concatenate([vt, jnp.zeros((pad, d), x.dtype)], axis=0)
    sign = jnp.where(jnp.sum(u, axis=0) < 0, -1.0, 1.0).astype(x.dtype)
    root = jnp.sqrt(s)
    codes = jnp.maximum(u * (sign * root)[None, :], CODE_FLOOR)
    features = (sign * root)[:, None] * vt
    return codes, features


def kmeans_init(x: Array, rank: int, key: Array, *, iters: int = 15,
                offset: float = 0.2) -> tuple[Array, Array]:
    """k-means initialisation: one-hot cluster codes, centroids as features.

    The codes are one-hot plus `offset` (Ding et al. use 0.2): multiplicative
    updates cannot revive an exact zero, so a pure one-hot start would freeze
    every token to its cluster.

    Args:
      x: (n, d) data.
      rank: K (<= n).
      key: PRNG key choosing the initial centroids among the rows.
      iters: Lloyd iterations.
      offset: added to the one-hot codes.

    Returns:
      codes (n, K), features (K, d).
    """
    n = x.shape[0]
    idx = jax.random.choice(key, n, (rank,), replace=False)
    cent = x[idx]  # (K, d)
    sq = jnp.sum(x * x, axis=1)  # (n,)

    def assign(cent):
        dist = sq[:, None] - 2 * (x @ cent.T) + jnp.sum(cent * cent, axis=1)[None]
        return jnp.argmin(dist, axis=1)

    def step(cent, _):
        onehot = jax.nn.one_hot(assign(cent), rank, dtype=x.dtype)  # (n, K)
        counts = jnp.sum(onehot, axis=0)  # (K,)
        sums = jax.lax.dot_general(onehot, x, (((0,), (0,)), ((), ())))  # (K, d)
        # An empty cluster keeps its centroid.
        new = jnp.where(counts[:, None] > 0,
                        sums / jnp.maximum(counts, 1)[:, None], cent)
        return new, None

    cent, _ = jax.lax.scan(step, cent, None, length=iters)
    codes = jax.nn.one_hot(assign(cent), rank, dtype=x.dtype) + offset
    return codes, cent
