"""Data-parallel SNMF: tokens sharded over the devices of a Mesh.

Every device holds a block of rows of X and the matching rows of the codes;
features, Gram and cross term are replicated. The solver's `update` already
sums CᵀC (K×K), CᵀX (K×d) and the loss terms over `axis_name`, so under
`jax.shard_map` the only communication of an iteration is one psum of
K·d + K·K + 1 floats, whatever the number of tokens. The row layout (and
its zero padding) is described in `_layout`; the svd and kmeans inits run
the blocked plans of `_inits` with a psum as their reduce.
"""

from __future__ import annotations

import functools
import logging
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh, PartitionSpec as P

from snmf_jax import _checks
from snmf_jax.factorize import (_checkpoint, _distributed, _inits, _layout, _loop, _options,
                                _solver, _validate)
from snmf_jax.factorize._result import SNMFResult

log = logging.getLogger("snmf_jax")


# Solver-state fields that hold one row per token; they are sharded (and
# padded) like X, every other field is replicated.
ROW_FIELDS = ("codes", "row_sqnorm")


def _fit_specs(axes) -> _loop.FitState:
    rows, rep = P(axes), P()
    solver = _solver.SNMFState(**{k: rows if k in ROW_FIELDS else rep
                                  for k in _solver.SNMFState._fields})
    return _loop.FitState(solver=solver, best_codes=rows, best_features=rep,
                         best_loss=rep, best_step=rep, stall=rep, done=rep)


@functools.lru_cache(maxsize=32)
def _compiled(mesh: Mesh, kind: str, static: tuple) -> Callable:
    """jit(shard_map(...)) of the fit's device programs, cached per mesh."""
    axes = _layout.token_axes(mesh)
    rows, rep = P(axes), P()
    specs = _fit_specs(axes)
    if kind == "init":
        def body(x, codes, feats):
            s = _solver.init(x, codes, feats, axis_name=axes)
            return _loop.init_fit_state(s)
        f = jax.shard_map(body, mesh=mesh, in_specs=(rows, rows, rep), out_specs=specs)
        return jax.jit(f)
    if kind == "chunk":
        config, rule, chunk = static
        body = functools.partial(_loop.chunk_loop, config=config, rule=rule, chunk=chunk,
                                 axis_name=axes)
        f = jax.shard_map(body, mesh=mesh, in_specs=(rows, specs, rep),
                          out_specs=(specs, rep, rep))
        return jax.jit(f, donate_argnums=(1,))
    if kind == "svd":
        n, d, rank = static

        def body(x, valid, key):
            reduce = lambda fn, p: jax.tree.map(lambda a: lax.psum(a, axes), fn(x, valid, p))
            proj, feats = _inits.svd_plan(reduce, n, d, rank, key, x.dtype)
            return _inits.svd_codes(x, proj) * valid[:, None], feats
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
            cent = _inits.kmeans_plan(reduce, cent)
            return _inits.kmeans_codes(x, cent) * valid[:, None], cent
        f = jax.shard_map(body, mesh=mesh, in_specs=(rows, rows, rep), out_specs=(rows, rep))
        return jax.jit(f)
    raise ValueError(kind)


def _host_state(fs: _loop.FitState, layout: _layout.RowLayout) -> _loop.FitState:
    """The FitState on the host, row fields reduced to this process's real rows."""
    conv = lambda k, v: _layout.local_rows(v, layout) if k in ROW_FIELDS else np.asarray(v)
    solver = _solver.SNMFState(**{k: conv(k, v) for k, v in fs.solver._asdict().items()})
    rest = {k: np.asarray(v) for k, v in fs._asdict().items()
            if k not in ("solver", "best_codes")}
    return _loop.FitState(solver=solver, best_codes=_layout.local_rows(fs.best_codes, layout), **rest)


def _device_state(fs: _loop.FitState, mesh: Mesh, layout: _layout.RowLayout) -> _loop.FitState:
    """Inverse of `_host_state`: pads and shards the row fields, replicates the rest."""
    conv = lambda k, v: (_layout.to_global(np.asarray(v), mesh, layout) if k in ROW_FIELDS
                         else _layout.replicate(v, mesh))
    solver = _solver.SNMFState(**{k: conv(k, v) for k, v in fs.solver._asdict().items()})
    rest = {k: _layout.replicate(v, mesh) for k, v in fs._asdict().items()
            if k not in ("solver", "best_codes")}
    return _loop.FitState(solver=solver, best_codes=_layout.to_global(np.asarray(fs.best_codes), mesh,
                                                              layout), **rest)


class _HostCheckpointer:
    """Adapts a host-side checkpointer (single-process `_checkpoint.Checkpointer` or
    the per-process one of `_distributed`) to sharded FitStates."""

    def __init__(self, inner, mesh: Mesh, layout: _layout.RowLayout):
        self.inner, self.mesh, self.layout = inner, mesh, layout

    def save(self, fs: _loop.FitState, losses: list[float]) -> None:
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


def fit_sharded(x, rank: int | None = None, *, mesh: Mesh | None = None, codes_init=None,
                checkpoint_dir=None, progress: bool = True,
                callback: Callable[[int, float], Any] | None = None,
                metadata: dict | None = None,
                options: _options.FitOptions | None = None, **option_kwargs) -> SNMFResult:
    """`fit` with the tokens sharded over the devices of a mesh.

    Same options, stopping rule, callbacks and result as `snmf_jax.fit`,
    which calls this when given `mesh=`. Single process: `x` is all of X
    (numpy, or a jax.Array on any devices) and the result holds all codes;
    checkpoints use the single-device fit's file format with the codes
    gathered to the host (unpadded), so a fit can be resumed on a mesh of any
    size (or on one device). Multi-process (after `jax.distributed.initialize`):
    `x` is this process's rows (global order = process order), or a global
    jax.Array sharded along rows; `codes_init` likewise holds this process's
    rows; the result holds this process's codes and the replicated features;
    each process checkpoints its own rows (`_distributed.ProcessCheckpointer`).

    Args:
      x: (n_tokens, d) activations (this process's rows when multi-process).
      rank: K (or give options=).
      mesh: the jax.sharding.Mesh; tokens are split over all its axes. None
        takes the mesh of x's NamedSharding.
      codes_init, checkpoint_dir, progress, callback, metadata, options,
        **option_kwargs: as `snmf_jax.fit`.

    Returns:
      An SNMFResult holding the best iterate.
    """
    opts = _options.resolve("fit_sharded", rank, options, option_kwargs)
    _checks.json_able("metadata", metadata)
    if mesh is None:
        mesh = _mesh_of(x)
        if mesh is None:
            raise ValueError("fit_sharded needs mesh= (or X with a NamedSharding)")
    if not isinstance(mesh, Mesh):
        raise TypeError(f"mesh must be a jax.sharding.Mesh; got {type(mesh).__name__}")
    _checkpoint.check_directory(checkpoint_dir)
    multi = jax.process_count() > 1
    pid = jax.process_index()
    lpd = _layout.devices_per_process(mesh)

    x, bad = _layout.check_local_data(_layout.local_input(x))
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
    opts.check_shape(n, d)
    rank = int(opts.rank)
    dtype = x.dtype
    if codes_init is not None:
        codes_init = _validate.check_codes_init(codes_init, n_loc, rank, dtype)
    layout = _layout.RowLayout(counts=counts,
                               rows_per_device=max(math.ceil(c / lpd) for c in counts),
                               devices_per_process=lpd)
    settings = opts.settings(dtype=dtype, n=n, d=d, has_codes_init=codes_init is not None)

    xg = _layout.to_global(x, mesh, layout)  # (padded, d)
    checkpointer = None
    restored = None
    if checkpoint_dir is not None:
        ident = _checkpoint.array_identity(x, codes_init)
        if multi:
            inner = _distributed.ProcessCheckpointer(
                checkpoint_dir, {**settings, "counts": list(counts)}, ident)
        else:
            inner = _checkpoint.Checkpointer(checkpoint_dir, settings, ident)
        checkpointer = _HostCheckpointer(inner, mesh, layout)
        restored = checkpointer.restore()

    if restored is not None:
        fs, losses = restored
        log.info("resuming sharded SNMF from %s at step %d", checkpoint_dir, len(losses))
    else:
        key = jax.random.PRNGKey(opts.seed)
        feats = _layout.replicate(np.zeros((rank, d), dtype), mesh)
        if codes_init is not None:
            codes = _layout.to_global(codes_init, mesh, layout)
        elif opts.init == "random":
            off = layout.offset(pid)
            local = (_inits.random_codes(key, off, off + n_loc, rank, dtype) if n_loc
                     else jnp.zeros((0, rank), dtype))
            codes = _layout.to_global(local, mesh, layout)
        else:
            valid = _layout.to_global(np.ones((n_loc,), dtype), mesh, layout)  # (padded,)
            if opts.init == "svd":
                codes, feats = _compiled(mesh, "svd", (n, d, rank))(
                    xg, valid, _layout.replicate(key, mesh))
            else:
                pos = layout.padded_position(_inits.kmeans_seed_rows(key, n, rank))
                codes, feats = _compiled(mesh, "kmeans", (rank,))(
                    xg, valid, _layout.replicate(pos.astype(np.int32), mesh))
        fs, losses = _compiled(mesh, "init", ())(xg, codes, feats), []

    run = _compiled(mesh, "chunk", (opts.solver_config, opts.stop_rule, int(opts.chunk_size)))
    fs, losses = _loop.drive(
        lambda fs, k: run(xg, fs, _layout.replicate(np.int32(k), mesh)), fs, losses,
        max_iter=opts.max_iter, chunk=opts.chunk_size, checkpointer=checkpointer,
        checkpoint_every=opts.checkpoint_every, progress=progress and pid == 0,
        callback=callback)
    meta = dict(metadata or {})
    if multi:
        meta.update(process_index=pid, process_count=jax.process_count(),
                    row_offset=layout.offset(pid), rows=n_loc)
    return SNMFResult(features=np.asarray(fs.best_features),
                      codes=_layout.local_rows(fs.best_codes, layout),
                      losses=np.asarray(losses, dtype=np.float64),
                      best_iter=int(fs.best_step), converged=bool(fs.done),
                      settings={**settings, "max_iter": int(opts.max_iter),
                                "devices": int(mesh.size)},
                      metadata=meta)
