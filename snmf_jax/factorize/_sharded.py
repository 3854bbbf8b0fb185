"""Data-parallel SNMF: tokens sharded over the devices of a Mesh.

Every device holds a block of rows of X and the matching rows of the codes;
features, Gram and cross term are replicated. The solver's `update` already
sums CᵀC (K×K), CᵀX (K×d) and the loss terms over `axis_name`, so under
`jax.shard_map` the only communication of an iteration is one psum of
K·d + K·K + 1 floats, whatever the number of tokens.

Row layout. With P processes of L mesh devices each, the global (padded)
array has P·L·m rows, m = max_p ceil(n_p / L). Process p's block holds its
n_p real rows first, then zero rows. Zero rows carry zero codes, and zero
codes stay zero under the multiplicative update (C ⊙ sqrt(·) with
P = 0·Φᵀ = 0 and C·Q± = 0), so padding contributes nothing to CᵀX, CᵀC or
the loss; it is stripped from the result. Real row r of process p is global
row sum(n_q, q < p) + r, which fixes the random init (counter-based by
global row) and the k-means seeds, so any split of the rows gives the same
initial codes as a single-device fit.

Inits that need the data (svd, kmeans) run blocked: every pass over X is a
per-block product followed by a psum (see `svd_plan`, `kmeans_plan`; the
streaming fit runs the same plans over chunks).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import os
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array, lax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from snmf_jax.factorize import _distributed, _fit, _inits, _solver, _validate
from snmf_jax.factorize._result import SNMFResult

log = logging.getLogger("snmf_jax")

# ---------------------------------------------------------------------------
# Blocked inits: written against `reduce(fn, params)`, which sums
# fn(x_block, valid_block, params) over all row blocks (psum over devices
# here, a loop over chunks in the streaming fit).


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
    """Blocked version of `_inits.svd_init` (randomized range finder).

    Same sketch as the in-memory init (Ω ~ N(0,1) of shape (d, k) from the
    same key, `power_iters` subspace steps on XᵀX), but the tall factor
    Y = XZ is orthonormalised by CholeskyQR2 from Gram matrices summed over
    blocks, so Y is never gathered. Where the in-memory init takes an exact
    SVD (min(n, d) <= 2·rank) the sketch spans the whole range (k = min(n, d)).
    The codes agree with the in-memory init to float32 accuracy of the
    subspace, not bit for bit.

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
    return jnp.maximum(x @ proj, _inits.CODE_FLOOR)


def _assign(x: Array, cent: Array) -> Array:
    # The same expression as _inits.kmeans_init, so ties break the same way.
    sq = jnp.sum(x * x, axis=1)
    dist = sq[:, None] - 2 * (x @ cent.T) + jnp.sum(cent * cent, axis=1)[None]
    return jnp.argmin(dist, axis=1)


def kmeans_stats_block(x, valid, cent):
    """Per-cluster sums (K, d) and counts (K,) of the valid rows of a block."""
    onehot = jax.nn.one_hot(_assign(x, cent), cent.shape[0], dtype=x.dtype)
    onehot = onehot * valid[:, None]  # (r, K)
    return _t_dot(onehot, x), jnp.sum(onehot, axis=0)


def kmeans_seed_rows(key: Array, n: int, rank: int) -> np.ndarray:
    """Global rows chosen as initial centroids (as `_inits.kmeans_init` does)."""
    return np.asarray(jax.random.choice(key, n, (rank,), replace=False))


def kmeans_plan(reduce: Callable, cent: Array, *, iters: int = 15) -> Array:
    """Lloyd iterations from initial centroids (K, d), blocked; returns (K, d)."""
    for _ in range(iters):
        sums, counts = reduce(kmeans_stats_block, cent)
        cent = jnp.where(counts[:, None] > 0, sums / jnp.maximum(counts, 1)[:, None], cent)
    return cent


def kmeans_codes(x: Array, cent: Array, offset: float = 0.2) -> Array:
    """One-hot cluster codes plus `offset` (see `_inits.kmeans_init`): (r, K)."""
    return jax.nn.one_hot(_assign(x, cent), cent.shape[0], dtype=x.dtype) + offset


# ---------------------------------------------------------------------------
# Layout.


class RowLayout(NamedTuple):
    """Where the real rows sit in the padded, sharded global array.

    Attributes:
      counts: real rows of each process, in process order.
      rows_per_device: m, rows of every device block (padding included).
      devices_per_process: L, mesh devices of each process.
    """

    counts: tuple[int, ...]
    rows_per_device: int
    devices_per_process: int

    @property
    def n(self) -> int:
        return sum(self.counts)

    @property
    def block(self) -> int:
        """Padded rows of one process."""
        return self.rows_per_device * self.devices_per_process

    @property
    def padded(self) -> int:
        return self.block * len(self.counts)

    def offset(self, process: int) -> int:
        """Global index of process `process`'s first real row."""
        return sum(self.counts[:process])

    def padded_position(self, rows: np.ndarray) -> np.ndarray:
        """Padded-array positions of global real rows."""
        rows = np.asarray(rows, np.int64)
        starts = np.cumsum((0,) + self.counts)
        proc = np.searchsorted(starts, rows, side="right") - 1
        return proc * self.block + rows - starts[proc]


def token_axes(mesh: Mesh) -> tuple[str, ...]:
    """Mesh axes the tokens are sharded over: all of them, in order."""
    return tuple(mesh.axis_names)


def token_sharding(mesh: Mesh) -> NamedSharding:
    """Rows split over every device of the mesh, columns whole."""
    return NamedSharding(mesh, P(token_axes(mesh)))


def _replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def _devices_per_process(mesh: Mesh) -> int:
    procs = [d.process_index for d in mesh.devices.flat]
    counts = {p: procs.count(p) for p in set(procs)}
    if procs != sorted(procs) or len(set(counts.values())) != 1:
        raise ValueError(
            "mesh must list each process's devices contiguously and give every "
            f"process the same number of devices; got process indices {procs}. "
            "Build it with snmf_jax.factorize.global_mesh().")
    if jax.process_index() not in counts:
        raise ValueError(f"mesh has no device of this process ({jax.process_index()})")
    if len(counts) != jax.process_count():
        raise ValueError(f"mesh spans {len(counts)} of {jax.process_count()} processes; "
                         "every process must own devices of the mesh")
    return next(iter(counts.values()))


def _pad_rows(a, rows: int):
    pad = rows - a.shape[0]
    if pad == 0:
        return a
    widths = ((0, pad),) + ((0, 0),) * (a.ndim - 1)
    return np.pad(a, widths) if isinstance(a, np.ndarray) else jnp.pad(a, widths)


def _to_global(local, mesh: Mesh, layout: RowLayout) -> Array:
    """Pads this process's rows to its block and builds the sharded global array."""
    local = _pad_rows(local, layout.block)
    sharding = token_sharding(mesh)
    if jax.process_count() == 1:
        return jax.device_put(local, sharding)
    shape = (layout.padded,) + tuple(local.shape[1:])
    return jax.make_array_from_process_local_data(sharding, np.asarray(local), shape)


def _local_rows(a: Array, layout: RowLayout) -> np.ndarray:
    """This process's real rows of a sharded global array, on the host."""
    if a.is_fully_addressable:  # single process: pad rows sit at the end
        return np.asarray(a)[:layout.n]
    shards = {s.index[0].start or 0: s for s in a.addressable_shards}
    block = np.concatenate([np.asarray(shards[k].data) for k in sorted(shards)])
    return block[:layout.counts[jax.process_index()]]


def _replicate(a, mesh: Mesh) -> Array:
    """A host value (equal on every process) as a replicated global array."""
    a = np.asarray(a)
    if jax.process_count() == 1:
        return jax.device_put(a, _replicated(mesh))
    return jax.make_array_from_process_local_data(_replicated(mesh), a, a.shape)


def data_id(x, codes_init=None) -> str:
    """A hash of this process's rows that does not depend on the mesh.

    Shape, dtype, float64 column sums (accumulated over row blocks, so X is
    never copied whole) and 16 sampled rows, like `_fit.fingerprint` but
    computed on the host so any mesh or device count gives the same id.
    """
    n, d = x.shape
    step = max(1, (1 << 22) // max(1, d))
    col = np.zeros((d,), np.float64)
    for i in range(0, n, step):
        col += np.asarray(x[i:i + step], np.float64).sum(axis=0)
    rows = np.unique(np.linspace(0, max(n - 1, 0), num=min(n, 16)).astype(np.int64))
    h = hashlib.sha256()
    h.update(json.dumps([list(x.shape), str(np.dtype(x.dtype))]).encode())
    h.update(col.astype(np.float32).tobytes())
    h.update(np.asarray(x[rows] if n else x[:0]).tobytes())
    if codes_init is not None:
        h.update(np.asarray(codes_init).tobytes())
    return h.hexdigest()[:32]


def _local_input(x) -> Any:
    """This process's rows of X: the array itself, or (for a global array
    spanning other processes) the concatenation of its addressable shards."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        shards: dict[int, Any] = {}
        for s in x.addressable_shards:
            rs, cs = s.index[0], s.index[1]
            if (cs.start or 0) != 0 or (cs.stop is not None and cs.stop != x.shape[1]):
                raise ValueError("a global X spanning several processes must be "
                                 "sharded along rows only (columns whole)")
            shards.setdefault(rs.start or 0, s)
        keys = sorted(shards)
        parts = [np.asarray(shards[k].data) for k in keys]
        ends = [k + p.shape[0] for k, p in zip(keys, parts)]
        if any(e != k for e, k in zip(ends[:-1], keys[1:])):
            raise ValueError("this process's shards of X are not one contiguous row range")
        return np.concatenate(parts)
    return x


def check_local_data(x, name: str = "X"):
    """Validates this process's rows without moving them to a device.

    Returns:
      (x with a computable float dtype, None or a message on non-finite rows).
    """
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_tokens, d_mlp); got shape {tuple(x.shape)}")
    dtype = _validate.compute_dtype(x.dtype, name)
    if isinstance(x, np.ndarray):
        x = x.astype(dtype, copy=False)
        step = max(1, (1 << 24) // max(1, x.shape[1]))  # bounded temporaries
        finite = all(np.isfinite(x[i:i + step]).all() for i in range(0, x.shape[0], step))
    else:
        x = x.astype(dtype)
        finite = bool(jnp.all(jnp.isfinite(x)))
    msg = None if finite else _validate.describe_nonfinite(jnp.asarray(x), name)
    return x, msg


# ---------------------------------------------------------------------------
# The fit.


# Solver-state fields that hold one row per token; they are sharded (and
# padded) like X, every other field is replicated.
ROW_FIELDS = ("codes", "row_sqnorm")


def _fit_specs(axes) -> _fit.FitState:
    rows, rep = P(axes), P()
    solver = _solver.SNMFState(**{k: rows if k in ROW_FIELDS else rep
                                  for k in _solver.SNMFState._fields})
    return _fit.FitState(solver=solver, best_codes=rows, best_features=rep,
                         best_loss=rep, best_step=rep, stall=rep, done=rep)


@functools.lru_cache(maxsize=32)
def _compiled(mesh: Mesh, kind: str, static: tuple) -> Callable:
    """jit(shard_map(...)) of the fit's device programs, cached per mesh."""
    axes = token_axes(mesh)
    rows, rep = P(axes), P()
    specs = _fit_specs(axes)
    if kind == "init":
        def body(x, codes, feats):
            s = _solver.init(x, codes, feats, axis_name=axes)
            return _fit.init_fit_state(s)
        f = jax.shard_map(body, mesh=mesh, in_specs=(rows, rows, rep), out_specs=specs)
        return jax.jit(f)
    if kind == "chunk":
        config, rule, chunk = static
        body = functools.partial(_fit.chunk_loop, config=config, rule=rule, chunk=chunk,
                                 axis_name=axes)
        f = jax.shard_map(body, mesh=mesh, in_specs=(rows, specs, rep),
                          out_specs=(specs, rep, rep))
        return jax.jit(f, donate_argnums=(1,))
    if kind == "svd":
        n, d, rank = static

        def body(x, valid, key):
            reduce = lambda fn, p: jax.tree.map(lambda a: lax.psum(a, axes), fn(x, valid, p))
            proj, feats = svd_plan(reduce, n, d, rank, key, x.dtype)
            return svd_codes(x, proj) * valid[:, None], feats
        f = jax.shard_map(body, mesh=mesh, in_specs=(rows, rows, rep), out_specs=(rows, rep))
        return jax.jit(f)
    if kind == "kmeans":
        (rank,) = static

        def body(x, valid, pos):
            m = x.shape[0]
            local = pos - lax.axis_index(axes) * m  # (K,)
            own = (local >= 0) & (local < m)
            seeds = jnp.where(own[:, None], x[jnp.clip(local, 0, m - 1)], 0)
            cent = lax.psum(seeds, axes)  # (K, d): each seed row comes from one device
            reduce = lambda fn, p: jax.tree.map(lambda a: lax.psum(a, axes), fn(x, valid, p))
            cent = kmeans_plan(reduce, cent)
            return kmeans_codes(x, cent) * valid[:, None], cent
        f = jax.shard_map(body, mesh=mesh, in_specs=(rows, rows, rep), out_specs=(rows, rep))
        return jax.jit(f)
    raise ValueError(kind)


def _host_state(fs: _fit.FitState, layout: RowLayout) -> _fit.FitState:
    """The FitState on the host, row fields reduced to this process's real rows."""
    conv = lambda k, v: _local_rows(v, layout) if k in ROW_FIELDS else np.asarray(v)
    solver = _solver.SNMFState(**{k: conv(k, v) for k, v in fs.solver._asdict().items()})
    rest = {k: np.asarray(v) for k, v in fs._asdict().items()
            if k not in ("solver", "best_codes")}
    return _fit.FitState(solver=solver, best_codes=_local_rows(fs.best_codes, layout), **rest)


def _device_state(fs: _fit.FitState, mesh: Mesh, layout: RowLayout) -> _fit.FitState:
    """Inverse of `_host_state`: pads and shards the row fields, replicates the rest."""
    conv = lambda k, v: (_to_global(np.asarray(v), mesh, layout) if k in ROW_FIELDS
                         else _replicate(v, mesh))
    solver = _solver.SNMFState(**{k: conv(k, v) for k, v in fs.solver._asdict().items()})
    rest = {k: _replicate(v, mesh) for k, v in fs._asdict().items()
            if k not in ("solver", "best_codes")}
    return _fit.FitState(solver=solver, best_codes=_to_global(np.asarray(fs.best_codes), mesh,
                                                              layout), **rest)


class _HostCheckpointer:
    """Adapts a host-side checkpointer (single-process `_fit.Checkpointer` or
    the per-process one of `_distributed`) to sharded FitStates."""

    def __init__(self, inner, mesh: Mesh, layout: RowLayout):
        self.inner, self.mesh, self.layout = inner, mesh, layout

    def save(self, fs: _fit.FitState, losses: list[float]) -> None:
        self.inner.save(_host_state(fs, self.layout), losses)

    def restore(self):
        got = self.inner.restore()
        if got is None:
            return None
        fs, losses = got
        return _device_state(fs, self.mesh, self.layout), losses


def _mesh_of(x) -> Mesh | None:
    sharding = getattr(x, "sharding", None)
    mesh = getattr(sharding, "mesh", None)
    return mesh if isinstance(mesh, Mesh) else None


def fit_sharded(x, rank: int, *, mesh: Mesh | None = None, sparsity: float = 0.01,
                init: str = "random", seed: int = 0, codes_init=None, max_iter: int = 1000,
                patience: int | None = 50, tol: float = 1e-5, tol_mode: str = "relative",
                reg: float = 1e-6, mu_eps: float = 1e-6,
                checkpoint_dir: str | os.PathLike | None = None, checkpoint_every: int = 100,
                chunk_size: int = 25, progress: bool = True,
                callback: Callable[[int, float], Any] | None = None,
                metadata: dict | None = None) -> SNMFResult:
    """`fit` with the tokens sharded over the devices of a mesh.

    Same arguments, stopping rule and result as `snmf_jax.fit`, which calls
    this when given `mesh=`. Single process: `x` is all of X (numpy, or a
    jax.Array on any devices) and the result holds all codes; checkpoints
    use the single-device fit's file format with the codes gathered to the
    host (unpadded), so a fit can be resumed on a mesh of any size; its data
    id is computed on the host (`data_id`), so a single-device fit's
    checkpoint is not taken for a sharded one's. Multi-process
    (after `jax.distributed.initialize`): `x` is this process's rows (global
    order = process order), or a global jax.Array sharded along rows;
    `codes_init` likewise holds this process's rows; the result holds this
    process's codes and the replicated features; each process checkpoints
    its own rows (see `_distributed.ProcessCheckpointer`).

    Args:
      x: (n_tokens, d) activations (this process's rows when multi-process).
      rank: K.
      mesh: the jax.sharding.Mesh; tokens are split over all its axes. None
        takes the mesh of x's NamedSharding.
      **kwargs: as `snmf_jax.fit`.

    Returns:
      An SNMFResult holding the best iterate.
    """
    if mesh is None:
        mesh = _mesh_of(x)
        if mesh is None:
            raise ValueError("fit_sharded needs mesh= (or X with a NamedSharding)")
    if not isinstance(mesh, Mesh):
        raise TypeError(f"mesh must be a jax.sharding.Mesh; got {type(mesh).__name__}")
    multi = jax.process_count() > 1
    pid = jax.process_index()
    lpd = _devices_per_process(mesh)

    x, bad = check_local_data(_local_input(x))
    n_loc, d = int(x.shape[0]), int(x.shape[1])
    info = _distributed.allgather_ints([n_loc, d, int(bad is None), int(codes_init is not None)])
    if bad is not None:
        raise ValueError(bad)
    if not info[:, 2].all():
        raise ValueError(f"X has non-finite values in the rows of process(es) "
                         f"{np.nonzero(info[:, 2] == 0)[0].tolist()}")
    if len(set(info[:, 1].tolist())) != 1:
        raise ValueError(f"every process's X must have the same width d; got {info[:, 1].tolist()}")
    if len(set(info[:, 3].tolist())) != 1:
        raise ValueError("codes_init must be given on every process or on none")
    counts = tuple(int(c) for c in info[:, 0])
    n = sum(counts)
    if n == 0:
        raise ValueError(f"X is empty: 0 rows over {len(counts)} process(es)")
    _validate.check_settings(n=n, d=d, rank=rank, sparsity=sparsity, init=init,
                             max_iter=max_iter, patience=patience, tol=tol, tol_mode=tol_mode)
    if checkpoint_every < 1 or chunk_size < 1:
        raise ValueError(f"checkpoint_every and chunk_size must be >= 1; got "
                         f"{checkpoint_every}, {chunk_size}")
    dtype = x.dtype
    if codes_init is not None:
        codes_init = _validate.check_codes_init(codes_init, n_loc, rank, dtype)
    layout = RowLayout(counts=counts, rows_per_device=max(math.ceil(c / lpd) for c in counts),
                       devices_per_process=lpd)

    config, rule, settings = _fit.fit_settings(
        rank=rank, sparsity=sparsity, init=init, seed=seed, patience=patience, tol=tol,
        tol_mode=tol_mode, reg=reg, mu_eps=mu_eps, dtype=dtype, n=n, d=d,
        has_codes_init=codes_init is not None)

    xg = _to_global(x, mesh, layout)  # (padded, d)
    checkpointer = None
    restored = None
    if checkpoint_dir is not None:
        os.makedirs(checkpoint_dir, exist_ok=True)
        if multi:
            inner = _distributed.ProcessCheckpointer(
                checkpoint_dir, {**settings, "counts": list(counts)}, data_id(x, codes_init))
        else:
            inner = _fit.Checkpointer(checkpoint_dir, settings, data_id(x, codes_init))
        checkpointer = _HostCheckpointer(inner, mesh, layout)
        restored = checkpointer.restore()

    if restored is not None:
        fs, losses = restored
        log.info("resuming sharded SNMF from %s at step %d", checkpoint_dir, len(losses))
    else:
        key = jax.random.PRNGKey(seed)
        feats = _replicate(np.zeros((rank, d), dtype), mesh)
        if codes_init is not None:
            codes = _to_global(codes_init, mesh, layout)
        elif init == "random":
            off = layout.offset(pid)
            local = _inits.random_codes(key, off, off + n_loc, int(rank), dtype) if n_loc else \
                jnp.zeros((0, rank), dtype)
            codes = _to_global(local, mesh, layout)
        else:
            valid = _to_global(np.ones((n_loc,), dtype), mesh, layout)  # (padded,)
            if init == "svd":
                codes, feats = _compiled(mesh, "svd", (n, d, int(rank)))(
                    xg, valid, _replicate(key, mesh))
            else:
                pos = layout.padded_position(kmeans_seed_rows(key, n, int(rank)))
                codes, feats = _compiled(mesh, "kmeans", (int(rank),))(
                    xg, valid, _replicate(pos.astype(np.int32), mesh))
        fs, losses = _compiled(mesh, "init", ())(xg, codes, feats), []

    run = _compiled(mesh, "chunk", (config, rule, int(chunk_size)))
    fs, losses = _fit.drive(lambda fs, k: run(xg, fs, _replicate(np.int32(k), mesh)), fs, losses,
                            max_iter=max_iter, chunk=chunk_size, checkpointer=checkpointer,
                            checkpoint_every=checkpoint_every,
                            progress=progress and pid == 0, callback=callback)
    meta = dict(metadata or {})
    if multi:
        meta.update(process_index=pid, process_count=jax.process_count(),
                    row_offset=layout.offset(pid), rows=n_loc)
    return SNMFResult(features=np.asarray(fs.best_features),
                      codes=_local_rows(fs.best_codes, layout),
                      losses=np.asarray(losses, dtype=np.float64),
                      best_iter=int(fs.best_step), converged=bool(fs.done),
                      settings={**settings, "max_iter": int(max_iter),
                                "devices": int(mesh.size)},
                      metadata=meta)
