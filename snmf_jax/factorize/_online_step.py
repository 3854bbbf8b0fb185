"""The online fit's per-batch program, its inits, and its checkpoint.

One step on a mini-batch X_b (m, d) with the current features Φ:

1. codes C_b >= 0 for Φ (`_encode.solve_codes`: clamped least-squares warm
   start, then `code_iters` multiplicative updates);
2. the batch's statistics C_bᵀC_b (K, K), C_bᵀX_b (K, d), its loss and
   ‖X_b‖², summed over the mesh's data axis by one psum when sharded;
3. running statistics, kept per row (normalised by the running weight W):
   Ā ← (β W Ā + C_bᵀC_b) / W', B̄ ← (β W B̄ + C_bᵀX_b) / W', W' = β W + m;
4. Φ ← the batch solver's steps 1-3 on (Ā, B̄) (`_solver.scaled_features`:
   the ridge solve, winner-take-all, scale fix), so the features have
   exactly the batch fit's sparsity. The scale fix uses Ā's diagonal, the
   mean square of each code per row: online codes have unit root mean
   square per column where the batch fit's have unit L2 norm over its rows.

The host passes α = βW/W' and γ = 1/W' (computed in float64), so the step
never recompiles as the schedule moves.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh, PartitionSpec as P

from snmf_jax import _io
from snmf_jax.factorize import _checkpoint, _encode, _inits, _rows_mesh, _solver

CHECKPOINT_FILE = "online_checkpoint.safetensors"
_FORMAT = "snmf_jax.online_checkpoint/1"


def _body(x, phi, a, b, alpha, gamma, *, config: _solver.SNMFConfig, iters: int,
          axis_name):
    codes, p, q = _encode.solve_codes(x, phi, iters=iters, mu_eps=config.mu_eps)
    sq = jnp.sum(x * x, axis=1)  # (m,)
    loss = jnp.sum(jnp.maximum(_solver.row_losses(sq, codes, p, q), 0))
    stats = (_solver._gram(codes), _solver._cross(codes, x), loss, jnp.sum(sq))
    if axis_name is not None:
        stats = lax.psum(stats, axis_name)  # the step's only communication
    g, c, loss, sq = stats
    a = alpha * a + gamma * g
    b = alpha * b + gamma * c
    phi, _ = _solver.scaled_features(a, b, config)
    return phi, a, b, loss, sq


@functools.lru_cache(maxsize=16)
def compiled_step(config: _solver.SNMFConfig, iters: int, mesh: Mesh | None):
    """step(x, phi, a, b, alpha, gamma) -> (phi, a, b, loss, ‖X_b‖²), jitted;
    with a mesh, x is sharded over all its axes (shard_map) and the rest
    replicated."""
    if mesh is None:
        return jax.jit(functools.partial(_body, config=config, iters=iters, axis_name=None))
    axes = _rows_mesh.token_axes(mesh)
    body = functools.partial(_body, config=config, iters=iters, axis_name=axes)
    rep = P()
    return jax.jit(jax.shard_map(body, mesh=mesh, in_specs=(P(axes), rep, rep, rep, rep, rep),
                                 out_specs=(rep, rep, rep, rep, rep)))


# ---------------------------------------------------------------------------
# The init from a sample of the first batches (no pass over the data).


def initial_features(sample: np.ndarray, rank: int, init: str, seed: int) -> np.ndarray:
    """Features (K, d) from a sample of the first batches.

    "kmeans": k-means++ seeds, then 15 Lloyd iterations on the sample
    (`_inits.kmeans_plan`), centroids as features; "random": K distinct
    random rows of the sample; "svd": √Σ Vᵀ of the sample (`_inits.svd_init`).
    """
    if sample.shape[0] < rank:
        raise ValueError(f"the first batches hold {sample.shape[0]} rows; rank {rank} needs "
                         f"at least {rank} (raise init_rows or batch_size, or lower rank)")
    x = jnp.asarray(sample, jnp.float32)
    feats = _inits.INITS[init].sample_features(x, rank, jax.random.PRNGKey(seed))
    return np.asarray(feats, np.float32)


# ---------------------------------------------------------------------------
# Checkpoint: statistics, features and position, verified on load.


class OnlineCheckpointer:
    """`directory/online_checkpoint.safetensors`, written atomically.

    Arrays: features, a, b, w (float64), losses and batch_rows (per batch);
    header: format, settings, data identity, position and held-out history
    as JSON, and the SHA-256 of the arrays (checked on load, like the batch
    fits' checkpoints). A checkpoint written for other data or settings is
    refused with a message naming the difference.
    """

    def __init__(self, directory, settings: dict, data_id: dict):
        self.path = Path(directory) / CHECKPOINT_FILE
        self.settings, self.data_id = settings, data_id

    def save(self, state: dict[str, Any]) -> None:
        arrays = {k: np.asarray(state[k]) for k in ("features", "a", "b")}
        arrays["w"] = np.asarray(state["w"], np.float64)
        arrays["losses"] = np.asarray(state["losses"], np.float64)
        arrays["batch_rows"] = np.asarray(state["batch_rows"], np.int64)
        _checkpoint.write_state(self.path, _FORMAT, arrays, self.settings, self.data_id, {
            "position": json.dumps(state["position"], sort_keys=True),
            "held_out": json.dumps(state["held_out"])})

    def restore(self) -> dict[str, Any] | None:
        if not self.path.exists():
            return None
        meta, arrays = _checkpoint.read_state(self.path, _FORMAT, "online checkpoint",
                                              self.settings, self.data_id)
        where = f"{self.path} (header)"
        position = _io.parse_json(meta.get("position", "null"), where)
        if not isinstance(position, dict) or not isinstance(position.get("batches"), int):
            raise ValueError(f"{self.path}: no valid position in its header; delete it")
        return {"features": arrays["features"], "a": arrays["a"], "b": arrays["b"],
                "w": float(arrays["w"]), "losses": arrays["losses"].tolist(),
                "batch_rows": arrays["batch_rows"].tolist(), "position": position,
                "held_out": _io.parse_json(meta.get("held_out", "[]"), where)}
