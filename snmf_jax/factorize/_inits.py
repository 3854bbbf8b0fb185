"""Initial codes: random, SVD (Ding, Li & Jordan 2010, eqs. 17-18), k-means.

Each init is written once, in blocked form: every pass over X is written
against `reduce(fn, params)`, which sums fn(x_block, valid_block, params)
over all row blocks. The sharded fit reduces with a psum over devices, the
streaming fit with a loop over chunks, and the in-memory inits (`svd_init`,
`kmeans_init`) are the same plans over a single block (`single_block`).
The random init is counter-based by global row, so any split of the rows
gives the same codes.
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array, lax

from snmf_jax.factorize import _loop, _solver

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



# ---------------------------------------------------------------------------
# Blocked plans.


def _t_dot(a: Array, b: Array) -> Array:
    """aᵀb contracting the row axis: (r, i), (r, j) -> (i, j)."""
    return lax.dot_general(a, b, (((0,), (0,)), ((), ())))


def svd_power_block(x, valid, z):
    """(Xz)ᵀX (k, d): one power step; small operand first (fast orientation)."""
    del valid
    return _t_dot(x @ z, x)


def svd_gram_block(x, valid, z):
    """(Xz)ᵀ(Xz) (k, k)."""
    del valid
    y = x @ z  # (r, k)
    return _t_dot(y, y)


def svd_final_block(x, valid, z):
    """(Xz)ᵀ(Xz) (k, k), (Xz)ᵀX (k, d) and the column sums of X (d,)."""
    del valid
    y = x @ z  # (r, k)
    return _t_dot(y, y), _t_dot(y, x), jnp.sum(x, axis=0)


def _orth_factor(g: Array) -> Array:
    """F with Fᵀ G F = I on G's numerical range (G = YᵀY; Y F is orthonormal).

    An eigen-factor rather than a Cholesky one, so a rank-deficient Y (fewer
    tokens than columns, duplicate rows) gives zero columns instead of NaN.
    """
    w, v = jnp.linalg.eigh(g)
    floor = jnp.max(w) * jnp.finfo(g.dtype).eps * g.shape[0] * 10
    inv = jnp.where(w > floor, lax.rsqrt(jnp.maximum(w, floor)), 0)
    return v * inv[None, :]


def svd_plan(reduce: Callable, n: int, d: int, rank: int, key: Array, dtype,
             *, oversample: int = 10, power_iters: int = 4) -> tuple[Array, Array]:
    """The SVD init as a blocked plan (randomized range finder).

    Same sketch as the in-memory init (Ω ~ N(0,1) of shape (d, k) from the
    same key, `power_iters` subspace steps on XᵀX), but the tall factor
    Y = XZ is orthonormalised by CholeskyQR2 from Gram matrices summed over
    blocks, so Y is never gathered. Where the in-memory init takes an exact
    SVD (min(n, d) <= 2·rank) the sketch spans the whole range (k = min(n, d)).

    Args:
      reduce: reduce(fn, params) sums fn(x_block, valid_block, params).
      n, d: global shape of X.
      rank: K.
      key: PRNG key (the init's seed key).
      dtype: float dtype.

    Returns:
      proj (d, K) with codes = max(X @ proj, 1e-6) row by row, and the
      features (K, d).
    """
    k = min(rank + oversample, n, d)
    if k >= min(n, d) or min(n, d) <= 2 * rank:
        k = min(n, d)
    z = jax.random.normal(key, (d, k), dtype)  # same Ω as svd_init's sketch
    for _ in range(power_iters):
        z, _ = jnp.linalg.qr(reduce(svd_power_block, z).T)  # (d, k)
    z = z @ _orth_factor(reduce(svd_gram_block, z))  # XZ now nearly orthonormal
    g2, b, colsum = reduce(svd_final_block, z)
    f2 = _orth_factor(g2)
    b = f2.T @ b  # (k, d) = QᵀX with Q = X z f2 orthonormal
    ub, s, vt = jnp.linalg.svd(b, full_matrices=False)
    proj = z @ f2 @ ub[:, :rank]  # (d, K): U = X proj
    s, vt = s[:rank], vt[:rank]
    sign = jnp.where(colsum @ proj < 0, -1.0, 1.0).astype(dtype)
    scale = sign * jnp.sqrt(s)
    return proj * scale[None, :], scale[:, None] * vt


def svd_codes(x: Array, proj: Array) -> Array:
    """Codes of a block of rows for `svd_plan`'s projection: (r, K)."""
    return jnp.maximum(x @ proj, CODE_FLOOR)


def _assign(x: Array, cent: Array) -> Array:
    """Index of the nearest centroid of each row: (r,)."""
    sq = jnp.sum(x * x, axis=1)
    dist = sq[:, None] - 2 * (x @ cent.T) + jnp.sum(cent * cent, axis=1)[None]
    return jnp.argmin(dist, axis=1)


def kmeans_stats_block(x, valid, cent):
    """Per-cluster sums (K, d) and counts (K,) of the valid rows of a block."""
    onehot = jax.nn.one_hot(_assign(x, cent), cent.shape[0], dtype=x.dtype)
    onehot = onehot * valid[:, None]  # (r, K)
    return _t_dot(onehot, x), jnp.sum(onehot, axis=0)


def kmeans_seed_rows(key: Array, n: int, rank: int) -> np.ndarray:
    """Global rows chosen as initial centroids (host numpy; see `kmeans_init`)."""
    return np.asarray(jax.random.choice(key, n, (rank,), replace=False))


def kmeans_plan(reduce: Callable, cent: Array, *, iters: int = 15) -> Array:
    """Lloyd iterations from initial centroids (K, d), blocked; returns (K, d)."""
    for _ in range(iters):
        sums, counts = reduce(kmeans_stats_block, cent)
        cent = jnp.where(counts[:, None] > 0, sums / jnp.maximum(counts, 1)[:, None], cent)
    return cent


def kmeans_codes(x: Array, cent: Array, offset: float = 0.2) -> Array:
    """One-hot cluster codes plus `offset` (see `kmeans_init`): (r, K)."""
    return jax.nn.one_hot(_assign(x, cent), cent.shape[0], dtype=x.dtype) + offset


def single_block(x: Array) -> Callable:
    """The reduce of in-memory data: all rows are one block."""
    valid = jnp.ones((x.shape[0],), x.dtype)
    return lambda fn, params: fn(x, valid, params)


def svd_init(x: Array, rank: int, key: Array, *, oversample: int = 10,
             power_iters: int = 4) -> tuple[Array, Array]:
    """SVD initialisation of Ding et al.: C = max(U√Σ, 1e-6), Φ = √Σ Vᵀ.

    In the paper's orientation A = Xᵀ ≈ Z Y, the signed factor is Z = U_A√Σ
    and the nonnegative one is Y = √Σ V_Aᵀ clamped; for X = U Σ Vᵀ these are
    Φ = √Σ Vᵀ and C = U√Σ. Each singular pair's sign is chosen so the code
    column sums to a nonnegative value. `svd_plan` over one block.

    Args:
      x: (n, d) data.
      rank: K.
      key: PRNG key of the range finder.

    Returns:
      codes (n, K), features (K, d).
    """
    n, d = x.shape
    proj, feats = svd_plan(single_block(x), n, d, rank, key, x.dtype,
                           oversample=oversample, power_iters=power_iters)
    return svd_codes(x, proj), feats


def kmeans_init(x: Array, rank: int, key: Array, *, iters: int = 15,
                offset: float = 0.2) -> tuple[Array, Array]:
    """k-means initialisation: one-hot cluster codes, centroids as features.

    The codes are one-hot plus `offset` (Ding et al. use 0.2): multiplicative
    updates cannot revive an exact zero, so a pure one-hot start would freeze
    every token to its cluster. `kmeans_plan` over one block.

    Args:
      x: (n, d) data.
      rank: K (<= n).
      key: PRNG key choosing the initial centroids among the rows.
      iters: Lloyd iterations.
      offset: added to the one-hot codes.

    Returns:
      codes (n, K), features (K, d).
    """
    idx = jax.random.choice(key, x.shape[0], (rank,), replace=False)  # = kmeans_seed_rows
    cent = kmeans_plan(single_block(x), x[idx], iters=iters)
    return kmeans_codes(x, cent, offset), cent


# ---------------------------------------------------------------------------
# The one dispatch of init names: every fit (in memory, sharded, streamed,
# online) looks its init up here.


@functools.partial(jax.jit, static_argnames=("k",))
def kmeans_pp(x, key, *, k: int):
    """Greedy k-means++ seeding: (k, d) rows of x.

    D² sampling (Arthur & Vassilvitskii, 2007) with 2 + ⌊ln k⌋ candidates per
    centre, keeping the one that lowers the total squared distance most (the
    greedy variant scikit-learn uses: plain D² sampling too often puts two
    centres in one cluster and none in another).
    """
    sq = jnp.sum(x * x, axis=1)  # (n,)
    trials = 2 + int(np.log(k))

    def dist(c):  # (..., d) centres -> (..., n) squared distances
        return jnp.maximum(sq - 2 * (c @ x.T) + jnp.sum(c * c, -1)[..., None], 0)

    first = jax.random.randint(jax.random.fold_in(key, 0), (), 0, x.shape[0])
    cent = jnp.zeros((k, x.shape[1]), x.dtype).at[0].set(x[first])

    def body(i, carry):
        cent, d2 = carry
        logits = jnp.where(d2 > 0, jnp.log(jnp.maximum(d2, 1e-30)), -jnp.inf)
        # Every row on a chosen centre already: fall back to a uniform draw.
        logits = jnp.where(jnp.any(d2 > 0), logits, jnp.zeros_like(d2))
        cand = jax.random.categorical(jax.random.fold_in(key, i), logits, shape=(trials,))
        new = jnp.minimum(d2[None], dist(x[cand]))  # (trials, n)
        best = jnp.argmin(jnp.sum(new, axis=1))
        return cent.at[i].set(x[cand[best]]), new[best]

    cent, _ = lax.fori_loop(1, k, body, (cent, dist(x[first])))
    return cent


class Init(NamedTuple):
    """How one init name starts a fit, whatever holds the rows.

    Attributes:
      seed_rows: (key, n, rank) -> (K,) global rows whose X the plan starts
        from (host numpy), or None.
      plan: (reduce, seeds, n, d, rank, key, dtype) -> (params, features or
        None): the passes over X, blocked (`reduce`, module docstring);
        `seeds` the (K, d) rows of `seed_rows`. None: no pass (random).
      codes: (x_block, params) -> (r, K) codes of a block of rows (with a
        plan); without one, (key, start, stop, rank, dtype) -> codes of a
        range of global rows.
      sample_features: (sample, rank, key) -> (K, d) features from a sample
        of rows (the online fit's init).
    """

    seed_rows: Callable | None
    plan: Callable | None
    codes: Callable
    sample_features: Callable


def _svd_plan(reduce, seeds, n, d, rank, key, dtype):
    del seeds
    return svd_plan(reduce, n, d, rank, key, dtype)


def _kmeans_plan(reduce, seeds, n, d, rank, key, dtype):
    del n, d, rank, key, dtype
    cent = kmeans_plan(reduce, seeds)
    return cent, cent


def _kmeans_sample(x, rank, key):
    return kmeans_plan(single_block(x), kmeans_pp(x, key, k=rank))


INITS: dict[str, Init] = {
    "random": Init(seed_rows=None, plan=None, codes=random_codes,
                   sample_features=lambda x, rank, key: x[jax.random.choice(
                       key, x.shape[0], (rank,), replace=False)]),
    "svd": Init(seed_rows=None, plan=_svd_plan, codes=svd_codes,
                sample_features=lambda x, rank, key: svd_init(x, rank, key)[1]),
    "kmeans": Init(seed_rows=kmeans_seed_rows, plan=_kmeans_plan, codes=kmeans_codes,
                   sample_features=_kmeans_sample),
}


def initial_state(x: Array, opts, codes_init: Array | None):
    """Step 3 of the in-memory fit: the starting FitState (codes_init, or
    the init `opts.init` over X as a single block)."""
    if codes_init is not None:
        codes, feats = codes_init, None
    else:
        rank, spec = int(opts.rank), INITS[opts.init]
        key = jax.random.PRNGKey(opts.seed)
        if spec.plan is None:
            codes, feats = spec.codes(key, 0, x.shape[0], rank, x.dtype), None
        else:
            seeds = None if spec.seed_rows is None else x[spec.seed_rows(key, x.shape[0], rank)]
            params, feats = spec.plan(single_block(x), seeds, x.shape[0], x.shape[1], rank,
                                      key, x.dtype)
            codes = spec.codes(x, params)
    return _loop.init_fit_state(_solver.init(x, codes, feats))
