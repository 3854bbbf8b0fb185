"""Keeps the CPU LAPACK that every iteration calls from starving XLA.

On CPU, jaxlib runs `jnp.linalg.solve` through the LAPACK that scipy ships
(OpenBLAS in the wheels). OpenBLAS parks its worker threads in a busy-wait
for about 0.1 s after each call, so after the feature solve of every
iteration they spin on the very cores XLA's GEMM threads need next: measured
on 2 cores (8192 x 3072, K=100), the X Φᵀ product took 61-75 ms inside the
update against 45 ms alone, and the whole update 136 ms against 90 ms with
BLAS pinned to one thread. The solve itself is K x K with d right-hand sides,
so one thread costs it nothing measurable.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import jax


@contextlib.contextmanager
def limit_blas_threads(limit: int | None = 1) -> Iterator[None]:
    """Limits the process's BLAS/LAPACK thread pools while the block runs.

    `fit`, `fit_sharded` and `fit_streaming` run their iterations inside it;
    use it around a hand-driven loop of `update` on CPU. On other backends,
    or with `limit=None`, it does nothing. The previous limits are restored
    on exit.

    Args:
      limit: threads each BLAS library may use; None leaves them alone.

    Yields:
      None.
    """
    if limit is None or jax.default_backend() != "cpu":
        yield
        return
    from threadpoolctl import threadpool_limits  # pylint: disable=g-import-not-at-top
    with threadpool_limits(limits=limit, user_api="blas"):
        yield
