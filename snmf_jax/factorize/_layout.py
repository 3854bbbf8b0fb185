"""Where the rows live on a mesh: the padded row layout of the sharded fit.

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

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from snmf_jax.factorize import _validate


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
