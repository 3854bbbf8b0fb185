"""The sharded fit's rows on a mesh: placing them (step 2), and the mesh's
versions of the init (step 3: the `_inits` table run under shard_map) and
of the loop's device program (step 4: `_loop.chunk_loop` under shard_map).

Every device holds a block of rows of X and the matching rows of the codes;
features, Gram and cross term are replicated. The solver's `update` already
sums CᵀC (K×K), CᵀX (K×d) and the loss terms over `axis_name`, so under
`jax.shard_map` the only communication of an iteration is one psum of
K·d + K·K + 1 floats, whatever the number of tokens. The svd and kmeans
inits run the blocked plans of `_inits` with a psum as their reduce.

With P processes of L mesh devices each, the global (padded) array has
P·L·m rows, m = max_p ceil(n_p / L). Process p's block holds its n_p real
rows first, then zero rows. Zero rows carry zero codes, and zero codes stay
zero under the multiplicative update (C ⊙ sqrt(·) with P = 0·Φᵀ = 0 and
C·Q± = 0), so padding contributes nothing to CᵀX, CᵀC or the loss; it is
stripped from the result. Real row r of process p is global row
sum(n_q, q < p) + r, which fixes the random init (counter-based by global
row) and the k-means seeds, so any split of the rows gives the same initial
codes as a single-device fit.
"""

from __future__ import annotations

import functools
import logging
import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array, lax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from snmf_jax.factorize import _check, _checkpoint, _distributed, _inits, _loop, _solver

log = logging.getLogger("snmf_jax")


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


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def devices_per_process(mesh: Mesh) -> int:
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


def to_global(local, mesh: Mesh, layout: RowLayout) -> Array:
    """Pads this process's rows to its block and builds the sharded global array."""
    local = _pad_rows(local, layout.block)
    sharding = token_sharding(mesh)
    if jax.process_count() == 1:
        return jax.device_put(local, sharding)
    shape = (layout.padded,) + tuple(local.shape[1:])
    return jax.make_array_from_process_local_data(sharding, np.asarray(local), shape)


def local_rows(a: Array, layout: RowLayout) -> np.ndarray:
    """This process's real rows of a sharded global array, on the host."""
    if a.is_fully_addressable:  # single process: pad rows sit at the end
        return np.asarray(a)[:layout.n]
    shards = {s.index[0].start or 0: s for s in a.addressable_shards}
    block = np.concatenate([np.asarray(shards[k].data) for k in sorted(shards)])
    return block[:layout.counts[jax.process_index()]]


def replicate(a, mesh: Mesh) -> Array:
    """A host value (equal on every process) as a replicated global array."""
    a = np.asarray(a)
    if jax.process_count() == 1:
        return jax.device_put(a, replicated(mesh))
    return jax.make_array_from_process_local_data(replicated(mesh), a, a.shape)


def local_input(x) -> Any:
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


def mesh_of(x) -> Mesh | None:
    """The mesh of x's NamedSharding, or None."""
    sharding = getattr(x, "sharding", None)
    mesh = getattr(sharding, "mesh", None)
    return mesh if isinstance(mesh, Mesh) else None


class Placed(NamedTuple):
    """The rows of a sharded fit, placed: X padded and sharded over the mesh."""

    x: Array  # (padded, d) global
    mesh: Mesh
    layout: RowLayout
    x_local: Any  # this process's rows, checked (for the data identity)
    codes_init: Any  # this process's initial codes, checked, or None
    settings: dict


def place(x, mesh: Mesh | None, opts, codes_init) -> Placed:
    """Checks this process's rows against every other process's and places
    them on the mesh (zero rows pad each process to its block).

    Args:
      x: this process's (n_p, d) rows, or a global jax.Array.
      mesh: the Mesh (None: the mesh of x's NamedSharding).
      opts: the FitConfig.
      codes_init: this process's initial codes, or None.

    Returns:
      The placed rows.
    """
    mesh = _check.mesh(mesh, mesh_of(x))
    lpd = devices_per_process(mesh)
    x, bad = _check.local_data(local_input(x))
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
    if codes_init is not None:
        codes_init = _check.check_codes_init(codes_init, n_loc, int(opts.rank), x.dtype)
    layout = RowLayout(counts=counts, rows_per_device=max(math.ceil(c / lpd) for c in counts),
                       devices_per_process=lpd)
    settings = opts.settings(dtype=x.dtype, n=n, d=d, has_codes_init=codes_init is not None)
    return Placed(to_global(x, mesh, layout), mesh, layout, x, codes_init, settings)


# ---------------------------------------------------------------------------
# The fit's device programs and states on the mesh.

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
    axes = token_axes(mesh)
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
    if kind == "codes":  # an init with a plan (svd, kmeans): its passes, then its codes
        name, n, d, rank = static
        spec = _inits.INITS[name]

        def body(x, valid, key, pos):
            seeds = None
            if spec.seed_rows is not None:
                m = x.shape[0]
                local = pos - lax.axis_index(axes) * m  # (K,)
                own = (local >= 0) & (local < m)
                seeds = jnp.where(own[:, None], x[jnp.clip(local, 0, m - 1)], 0)
                seeds = lax.psum(seeds, axes)  # (K, d): each seed row comes from one device
            reduce = lambda fn, p: jax.tree.map(lambda a: lax.psum(a, axes), fn(x, valid, p))
            params, feats = spec.plan(reduce, seeds, n, d, rank, key, x.dtype)
            return spec.codes(x, params) * valid[:, None], feats
        f = jax.shard_map(body, mesh=mesh, in_specs=(rows, rows, rep, rep),
                          out_specs=(rows, rep))
        return jax.jit(f)
    raise ValueError(kind)


def initial_state(placed: Placed, opts) -> _loop.FitState:
    """Step 3 of the sharded fit: the starting FitState on the mesh."""
    mesh, layout, dtype = placed.mesh, placed.layout, placed.x.dtype
    n, d, rank = layout.n, int(placed.x.shape[1]), int(opts.rank)
    n_loc = int(placed.x_local.shape[0])
    key = jax.random.PRNGKey(opts.seed)
    feats = replicate(np.zeros((rank, d), dtype), mesh)
    spec = _inits.INITS[opts.init]
    if placed.codes_init is not None:
        codes = to_global(placed.codes_init, mesh, layout)
    elif spec.plan is None:  # codes by global row: this process's range
        off = layout.offset(jax.process_index())
        local = (spec.codes(key, off, off + n_loc, rank, dtype) if n_loc
                 else jnp.zeros((0, rank), dtype))
        codes = to_global(local, mesh, layout)
    else:
        valid = to_global(np.ones((n_loc,), dtype), mesh, layout)  # (padded,)
        pos = (np.zeros((rank,), np.int64) if spec.seed_rows is None
               else layout.padded_position(spec.seed_rows(key, n, rank)))
        codes, feats = _compiled(mesh, "codes", (opts.init, n, d, rank))(
            placed.x, valid, replicate(key, mesh), replicate(pos.astype(np.int32), mesh))
    return _compiled(mesh, "init", ())(placed.x, codes, feats)


def runner(placed: Placed, opts) -> Callable:
    """`_loop.drive`'s run(fs, n) on the mesh."""
    run = _compiled(placed.mesh, "chunk", (opts.solver_config, opts.stop_rule,
                                           int(opts.chunk_size)))
    return lambda fs, k: run(placed.x, fs, replicate(np.int32(k), placed.mesh))


def _host_state(fs: _loop.FitState, layout: RowLayout) -> _loop.FitState:
    """The FitState on the host, row fields reduced to this process's real rows."""
    conv = lambda k, v: local_rows(v, layout) if k in ROW_FIELDS else np.asarray(v)
    solver = _solver.SNMFState(**{k: conv(k, v) for k, v in fs.solver._asdict().items()})
    rest = {k: np.asarray(v) for k, v in fs._asdict().items()
            if k not in ("solver", "best_codes")}
    return _loop.FitState(solver=solver, best_codes=local_rows(fs.best_codes, layout), **rest)


def _device_state(fs: _loop.FitState, mesh: Mesh, layout: RowLayout) -> _loop.FitState:
    """Inverse of `_host_state`: pads and shards the row fields, replicates the rest."""
    conv = lambda k, v: (to_global(np.asarray(v), mesh, layout) if k in ROW_FIELDS
                         else replicate(v, mesh))
    solver = _solver.SNMFState(**{k: conv(k, v) for k, v in fs.solver._asdict().items()})
    rest = {k: replicate(v, mesh) for k, v in fs._asdict().items()
            if k not in ("solver", "best_codes")}
    return _loop.FitState(solver=solver, best_codes=to_global(np.asarray(fs.best_codes), mesh,
                                                              layout), **rest)


class _HostCheckpointer:
    """Adapts a host-side checkpointer (single-process `_checkpoint.Checkpointer` or
    the per-process one of `_distributed`) to sharded FitStates."""

    def __init__(self, inner, mesh: Mesh, layout: RowLayout):
        self.inner, self.mesh, self.layout = inner, mesh, layout

    def save(self, fs: _loop.FitState, losses: list[float]) -> None:
        self.inner.save(_host_state(fs, self.layout), losses)

    def restore(self):
        got = self.inner.restore()
        if got is None:
            return None
        fs, losses = got
        return _device_state(fs, self.mesh, self.layout), losses


def open_checkpoint(placed: Placed, checkpoint_dir):
    """The sharded fit's checkpointer and the state it resumes from (as
    `_checkpoint.open_checkpoint`): the single-device file format with this
    process's rows gathered to the host, one file per process when several."""
    if checkpoint_dir is None:
        return None, None
    ident = _checkpoint.array_identity(placed.x_local, placed.codes_init)
    if jax.process_count() > 1:
        inner = _distributed.ProcessCheckpointer(
            checkpoint_dir, {**placed.settings, "counts": list(placed.layout.counts)}, ident)
    else:
        inner = _checkpoint.Checkpointer(checkpoint_dir, placed.settings, ident)
    ckpt = _HostCheckpointer(inner, placed.mesh, placed.layout)
    restored = ckpt.restore()
    if restored is not None:
        log.info("resuming sharded SNMF from %s at step %d", checkpoint_dir, len(restored[1]))
    return ckpt, restored


def outputs(placed: Placed, fs: _loop.FitState) -> tuple[np.ndarray, dict, dict]:
    """This process's best codes, and what the result records of the mesh."""
    layout, pid = placed.layout, jax.process_index()
    meta = {}
    if jax.process_count() > 1:
        meta = dict(process_index=pid, process_count=jax.process_count(),
                    row_offset=layout.offset(pid), rows=int(placed.x_local.shape[0]))
    return local_rows(fs.best_codes, layout), {"devices": int(placed.mesh.size)}, meta
