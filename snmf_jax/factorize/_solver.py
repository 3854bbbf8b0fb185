"""The SNMF iteration as an optax-style pure pair: `init` and `update`.

One iteration (X tokens-major (n, d), codes C (n, K), features Φ (K, d)):

1. Φ = (CᵀC + λI)⁻¹ CᵀX, from the Gram G = CᵀC and cross term B = CᵀX
   carried in the state (so a sharded or streaming driver only has to sum
   them over its pieces of X).
2. Winner-take-all: keep the ceil(p·d) largest |Φ| of each feature.
3. Scale fix: columns of C to unit norm, rows of Φ scaled to compensate.
4. Ding–Li–Jordan multiplicative update of C.
5. New G, B and the loss ‖X − CΦ‖² by the trace identity, combined per
   token (never materialising CΦ).

The two products with X (CᵀX and XΦᵀ) are the only O(n·d·K) work and are
arranged so that X is never transposed (XLA:CPU runs `c.T @ x` and
`(Φ Xᵀ)ᵀ` up to 2x faster than the other orientations; benchmarks/bench_snmf.py).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, NamedTuple

import jax.numpy as jnp
from jax import lax, Array

from snmf_jax import _numerics


@dataclasses.dataclass(frozen=True)
class SNMFConfig:
    """Static settings of the SNMF update.

    Attributes:
      rank: number of features K.
      sparsity: keep-fraction p of the winner-take-all step, in (0, 1].
      reg: ridge λ of the closed-form feature update.
      mu_eps: epsilon of the multiplicative update's denominator.
      norm_floor: floor of the column norms in the scale fix.
    """

    rank: int
    sparsity: float = 0.01
    reg: float = 1e-6
    mu_eps: float = 1e-6
    norm_floor: float = 1e-8

    def keep(self, d: int) -> int:
        """Neurons kept per feature for data of width d."""
        return min(d, max(1, math.ceil(self.sparsity * d)))


class SNMFState(NamedTuple):
    """Iterate of the solver.

    Attributes:
      codes: (n, K) C >= 0.
      features: (K, d) Φ of the last update (the init's features before).
      gram: (K, K) CᵀC of `codes`.
      cross: (K, d) CᵀX of `codes`.
      loss: () ‖X − C Φ‖²_F of (codes, features); +inf before the first update.
      sqnorm: () ‖X‖²_F.
      row_sqnorm: (n,) ‖x_i‖² of each token (sharded with the codes).
      step: () int32, updates done.
    """

    codes: Array
    features: Array
    gram: Array
    cross: Array
    loss: Array
    sqnorm: Array
    row_sqnorm: Array
    step: Array


def _psum(x, axis_name):
    return x if axis_name is None else lax.psum(x, axis_name)


# GEMM orientations measured on XLA:CPU (jax 0.10, 8192 x 3072 x 100, one
# run, interleaved): CᵀX as `c.T @ x` 49 ms vs dot_general(C, X, contracting
# (0, 0)) 80-90 ms (numpy 60 ms); XΦᵀ as dot_general(Φ, X, (1, 1)).T 48 ms vs
# `x @ phi.T` 56 ms (numpy 45 ms). X itself is never transposed.


def _gram(c: Array) -> Array:
    """CᵀC (K, K)."""
    return c.T @ c


def _cross(c: Array, x: Array) -> Array:
    """CᵀX (K, d); only the small factor C is transposed."""
    return c.T @ x


def _project(x: Array, phi: Array) -> Array:
    """XΦᵀ (n, K), computed as (Φ Xᵀ)ᵀ: contracts both operands' last axis."""
    return lax.dot_general(phi, x, (((1,), (1,)), ((), ()))).T


def row_losses(row_sqnorm: Array, codes: Array, p: Array, q: Array) -> Array:
    """Per-token ‖x_i − c_i Φ‖² = ‖x_i‖² − 2⟨c_i, p_i⟩ + c_iᵀ Q c_i, (n,).

    The trace identity summed over all of X cancels large float32 terms
    (errors ~1e-6 of ‖X‖²); combining per token first and summing the small
    residuals is 10–100× more accurate, for n·K² extra flops.
    """
    return row_sqnorm - 2 * jnp.sum(codes * p, axis=1) + jnp.sum((codes @ q) * codes, axis=1)


def init(x: Array, codes: Array, features: Array | None = None,
         *, axis_name: str | None = None) -> SNMFState:
    """Builds the state from initial codes.

    Args:
      x: (n, d) data, tokens-major.
      codes: (n, K) initial codes, >= 0.
      features: optional (K, d) initial features (overwritten by the first
        update; kept so the init can be inspected).
      axis_name: mapped axis the tokens are sharded over, if any.

    Returns:
      The initial SNMFState.
    """
    codes = codes.astype(x.dtype)
    k, d = codes.shape[1], x.shape[1]
    if features is None:
        features = jnp.zeros((k, d), x.dtype)
    row_sqnorm = jnp.sum(x * x, axis=1)  # (n,)
    return SNMFState(
        codes=codes,
        features=features.astype(x.dtype),
        gram=_psum(_gram(codes), axis_name),
        cross=_psum(_cross(codes, x), axis_name),
        loss=jnp.asarray(jnp.inf, x.dtype),
        sqnorm=_psum(jnp.sum(row_sqnorm), axis_name),
        row_sqnorm=row_sqnorm,
        step=jnp.zeros((), jnp.int32),
    )


def solve_features(gram: Array, cross: Array, reg: float) -> Array:
    """Φ = (G + λI)⁻¹ B by an LU solve, with an eigen-solve fallback.

    A rank-deficient G (dead or duplicate codes) can make the float32 LU
    solve produce inf/NaN; the fallback clamps G's spectrum instead, so
    degenerate data never yields NaN.

    Args:
      gram: (K, K) CᵀC.
      cross: (K, d) CᵀX.
      reg: ridge λ.

    Returns:
      (K, d) features.
    """
    k = gram.shape[0]
    a = gram + reg * jnp.eye(k, dtype=gram.dtype)
    phi = jnp.linalg.solve(a, cross)

    def eig_solve():
        w, v = jnp.linalg.eigh(a)
        floor = jnp.finfo(a.dtype).eps * jnp.maximum(jnp.max(jnp.abs(w)), 1.0) * k
        w = jnp.maximum(w, jnp.maximum(floor, reg))
        return v @ ((v.T @ cross) / w[:, None])

    return lax.cond(jnp.all(jnp.isfinite(phi)), lambda: phi, eig_solve)


def winner_take_all(features: Array, keep: int) -> Array:
    """Keeps the `keep` largest-|value| entries of each row; ties are kept.

    The threshold is found by bisection on the integer bit pattern of |Φ|
    (monotone in the value for non-negative floats): ~31 cheap passes over
    Φ instead of a sort, which is slow on XLA:CPU; it finds the exact k-th
    largest value.

    Args:
      features: (K, d) features.
      keep: entries kept per row, 1 <= keep <= d.

    Returns:
      (K, d) features with all but the winners zeroed.
    """
    d = features.shape[-1]
    if keep >= d:
        return features
    itype = jnp.int64 if features.dtype == jnp.float64 else jnp.int32
    bits = lax.bitcast_convert_type(jnp.abs(features), itype)  # (K, d)
    t = _numerics.largest_threshold(bits, lambda kept: jnp.sum(kept, -1, keepdims=True) >= keep)
    return jnp.where(bits >= t, features, jnp.zeros_like(features))


def scaled_features(gram: Array, cross: Array, config: SNMFConfig) -> tuple[Array, Array]:
    """Steps 1-3 of `update`: the features from CᵀC and CᵀX, and the norms of C's columns.

    Returns:
      (features (K, d) already multiplied by the norms, norms (K,)).
    """
    phi = solve_features(gram, cross, config.reg)  # (K, d)
    phi = winner_take_all(phi, config.keep(cross.shape[1]))
    norms = jnp.maximum(jnp.sqrt(jnp.maximum(jnp.diagonal(gram), 0)),
                        jnp.asarray(config.norm_floor, cross.dtype))  # (K,)
    return phi * norms[:, None], norms


def multiplicative_update(codes: Array, p: Array, q: Array, mu_eps: float) -> Array:
    """Step 4: one Ding–Li–Jordan update of codes for fixed features.

    C ← C ⊙ sqrt((P⁺ + C Q⁻) / (P⁻ + C Q⁺ + ε)), with P = XΦᵀ and Q = ΦΦᵀ.
    The batch iteration, the online fit and `encode` all step codes with it.

    Args:
      codes: (n, K) current codes, >= 0 (an exact zero stays zero).
      p: (n, K) XΦᵀ.
      q: (K, K) ΦΦᵀ.
      mu_eps: epsilon of the denominator.

    Returns:
      (n, K) updated codes.
    """
    p_pos, p_neg = jnp.maximum(p, 0), jnp.maximum(-p, 0)
    q_pos, q_neg = jnp.maximum(q, 0), jnp.maximum(-q, 0)
    numer = p_pos + codes @ q_neg
    denom = p_neg + codes @ q_pos + jnp.asarray(mu_eps, codes.dtype)
    return codes * jnp.sqrt(numer / denom)


def update(x: Array, state: SNMFState, config: SNMFConfig,
           *, axis_name: str | None = None,
           prepared: tuple[Array, Array] | None = None) -> SNMFState:
    """One SNMF iteration.

    On CPU, run loops of it inside `limit_blas_threads()` as the fits do:
    the feature solve's LAPACK threads otherwise spin on XLA's cores.

    Args:
      x: (n, d) data (this device's rows when sharded).
      state: current SNMFState.
      config: static settings.
      axis_name: mapped axis the tokens are sharded over; the Gram, cross
        term and loss terms are summed over it (the only communication).
      prepared: `scaled_features(state.gram, state.cross, config)`, when the
        caller runs this update on many row blocks of one state (the
        streaming fit) and computes it once.

    Returns:
      The next SNMFState.
    """
    if prepared is None:
        prepared = scaled_features(state.gram, state.cross, config)
    phi, norms = prepared
    codes = state.codes / norms

    p = _project(x, phi)  # (n, K)
    q = phi @ phi.T  # (K, K)
    codes = multiplicative_update(codes, p, q, config.mu_eps)

    new_gram = _psum(_gram(codes), axis_name)
    new_cross = _psum(_cross(codes, x), axis_name)
    loss = _psum(jnp.sum(row_losses(state.row_sqnorm, codes, p, q)), axis_name)
    # Rounding can push a near-perfect fit's loss below zero.
    loss = jnp.maximum(loss, 0)
    return state._replace(codes=codes, features=phi, gram=new_gram, cross=new_cross,
                          loss=loss, step=state.step + 1)


class SNMF(NamedTuple):
    """The solver as a pair of pure functions (optax style), built by `snmf`.

    Attributes:
      init: init(x, codes, features=None, *, axis_name=None) -> SNMFState.
      update: update(x, state, *, axis_name=None, prepared=None) -> SNMFState.
    """

    init: Callable[..., SNMFState]
    update: Callable[..., SNMFState]


def snmf(config: SNMFConfig) -> SNMF:
    """The SNMF solver for `config`: an (init, update) pair, both jittable.

    The hyperparameters are captured here, not passed per call; drivers only
    decide where the rows live (one device, a mesh, disk chunks, hosts) and
    pass `axis_name` when the rows are sharded.

    Args:
      config: static settings.

    Returns:
      SNMF(init, update).
    """
    def update_fn(x, state, *, axis_name=None, prepared=None):
        return update(x, state, config, axis_name=axis_name, prepared=prepared)

    return SNMF(init=init, update=update_fn)


def dense_loss(x: Array, codes: Array, features: Array) -> Array:
    """‖X − C Φ‖²_F by materialising the residual (for tests and small data)."""
    r = x - codes @ features
    return jnp.sum(r * r)
