"""Multi-process (multi-host) helpers for the sharded fit.

Every process runs the same program (SPMD, multi-controller): it calls
`initialize`, loads its own rows (`process_chunk_range` splits a store's
chunks, `process_row_range` an array's rows), builds the mesh of all
devices (`global_mesh`) and calls `fit_sharded(local_rows, ..., mesh=mesh)`.
The fit's only cross-process traffic is its per-iteration psum (gloo on CPU,
NCCL on GPU, ICI on TPU).

Checkpoints (`ProcessCheckpointer`): each process writes its own rows'
state to `checkpoint_dir/process-<i>-of-<N>/slot<j>/`, alternating two
slots so the newest complete one is never overwritten. Resuming takes the
newest step that every process has (an allgather of the slots' steps),
so a crash while some processes had written step s and others had not
falls back to the previous common step. The folder may be shared or local
to each host.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Sequence

import jax
import numpy as np
from jax.sharding import Mesh

from snmf_jax import _checks
from snmf_jax.factorize import _checkpoint, _loop

log = logging.getLogger("snmf_jax")


def initialize(coordinator_address: str, num_processes: int, process_id: int, *,
               local_device_count: int | None = None,
               initialization_timeout: int = 300) -> None:
    """Joins a multi-process JAX run (call before any other JAX work).

    On CPU, cross-process collectives need an implementation: gloo (the
    default from jax 0.5 on; set here for older versions). GPUs and TPUs
    need nothing extra.

    Args:
      coordinator_address: "host:port" of process 0 (it listens there).
      num_processes: processes in the run.
      process_id: this process's index, 0 <= process_id < num_processes.
      local_device_count: CPU devices to expose in this process (testing a
        mesh of several devices per process on one machine).
      initialization_timeout: seconds to wait for all processes to join.
    """
    if not (_checks.is_int(num_processes) and num_processes >= 1):
        raise ValueError(f"num_processes must be an int >= 1; got {num_processes!r}")
    if not (_checks.is_int(process_id) and 0 <= process_id < num_processes):
        raise ValueError(f"process_id must be in [0, {num_processes}); got {process_id!r}")
    if ":" not in str(coordinator_address):
        raise ValueError(f"coordinator_address must be 'host:port'; got {coordinator_address!r}")
    if jax.config.jax_cpu_collectives_implementation in (None, "", "none"):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if local_device_count is not None:
        jax.config.update("jax_num_cpu_devices", int(local_device_count))
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id,
                               initialization_timeout=initialization_timeout)


def global_mesh(axis_name: str = "tokens") -> Mesh:
    """A 1-D mesh of every device of every process, grouped by process.

    The sharded fit needs each process's devices to be contiguous on the
    token axis (a process's rows are one block of the global array).
    """
    devices = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
    return Mesh(np.array(devices), (axis_name,))


def process_row_range(n_rows: int, process_index: int | None = None,
                      process_count: int | None = None) -> tuple[int, int]:
    """Rows [start, stop) of process `process_index` in an even contiguous split."""
    i = jax.process_index() if process_index is None else process_index
    p = jax.process_count() if process_count is None else process_count
    return n_rows * i // p, n_rows * (i + 1) // p


def process_chunk_range(chunk_bounds: Sequence[int], process_index: int | None = None,
                        process_count: int | None = None) -> tuple[int, int]:
    """Chunks [first, last) of a chunked source owned by a process.

    A chunk belongs to the process whose even share of the rows holds the
    chunk's middle row, so ownership is contiguous and roughly balanced in
    rows (with fewer chunks than processes, some processes own none).
    """
    b = np.asarray(chunk_bounds, np.int64)
    i = jax.process_index() if process_index is None else process_index
    p = jax.process_count() if process_count is None else process_count
    mid = (b[:-1] + b[1:]) / 2
    owner = np.minimum((mid * p // max(int(b[-1]), 1)).astype(np.int64), p - 1)
    mine = np.nonzero(owner == i)[0]
    if len(mine) == 0:
        first = int(np.searchsorted(owner, i))
        return first, first
    return int(mine[0]), int(mine[-1]) + 1


def load_process_rows(source, process_index: int | None = None,
                      process_count: int | None = None) -> tuple[np.ndarray, int]:
    """This process's rows of a chunked source (its chunks, concatenated).

    Returns:
      (rows (m, d) float32, global index of the first row).
    """
    first, last = process_chunk_range(source.chunk_bounds, process_index, process_count)
    b = np.asarray(source.chunk_bounds, np.int64)
    if first == last:
        return np.zeros((0, int(source.d)), np.float32), int(b[first])
    rows = np.concatenate([np.asarray(source.chunk(i), np.float32) for i in range(first, last)])
    return rows, int(b[first])


def allgather_ints(values: Sequence[int]) -> np.ndarray:
    """(process_count, len(values)) int64 from every process."""
    v = np.asarray(values, np.int64)
    if jax.process_count() == 1:
        return v[None]
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    return np.asarray(multihost_utils.process_allgather(v)).reshape(jax.process_count(), -1)


def barrier(name: str) -> None:
    """Waits until every process reaches the barrier `name`."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
        multihost_utils.sync_global_devices(name)


class ProcessCheckpointer:
    """Per-process checkpoint of a multi-process sharded fit (two slots).

    Same interface as `_checkpoint.Checkpointer` (`save(fs, losses)`, `restore()`),
    with `fs` holding this process's rows of the per-token fields.

    Args:
      directory: checkpoint folder (shared, or local to each host).
      settings: the fit's settings (must match on resume).
      data_id: identity of this process's rows (`_checkpoint.array_identity`).
    """

    def __init__(self, directory: str | os.PathLike, settings: dict, data_id: dict):
        i, p = jax.process_index(), jax.process_count()
        self.root = Path(directory) / f"process-{i:05d}-of-{p:05d}"
        self.slots = [_checkpoint.Checkpointer(self.root / f"slot{j}", settings, data_id)
                      for j in (0, 1)]
        self.live: int | None = None

    def _step(self, j: int) -> int:
        path = self.slots[j].path
        if not path.exists():
            return -1
        from safetensors import safe_open  # pylint: disable=g-import-not-at-top
        with safe_open(str(path), framework="numpy") as f:
            return int(f.get_tensor("losses").shape[0])

    def restore(self):
        steps = [self._step(0), self._step(1)]
        every = allgather_ints(steps)  # (processes, 2)
        common = set(every[0].tolist())
        for row in every[1:]:
            common &= set(row.tolist())
        common.discard(-1)
        if not common:
            for j in (0, 1):  # nothing every process can resume from
                if steps[j] >= 0:
                    self.slots[j].path.unlink()
            return None
        step = max(common)
        j = steps.index(step)
        if steps[1 - j] > step:
            self.slots[1 - j].path.unlink()  # a step not every process reached
        self.live = j
        return self.slots[j].restore()

    def save(self, fs: _loop.FitState, losses: list[float]) -> None:
        j = 0 if self.live is None else 1 - self.live
        self.slots[j].path.parent.mkdir(parents=True, exist_ok=True)
        self.slots[j].save(fs, losses)
        self.live = j

    def clear(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
