"""Keeps the CPU LAPACK that every iteration calls from starving XLA.

On CPU, jaxlib runs `jnp.linalg.solve` through the LAPACK that scipy ships
(OpenBLAS in the wheels). OpenBLAS keeps idle worker threads polling for
a while after each call (its OPENBLAS_THREAD_TIMEOUT), so after the feature
solve of every iteration they spin on the very cores XLA's GEMM threads need
next. Measured on 2 cores (8192 x 3072, K=100): the X Φᵀ product took
61-75 ms inside the update against 45 ms alone, and the whole update 136 ms
against 90 ms with BLAS pinned to one thread. The solve itself (K x K, d right-hand sides)
barely notices: pinned vs not, 4.0 vs 5.6 ms at K=100, d=3072 and 108 vs
103 ms at K=400, d=14336 (same machine, one interleaved run).
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import jax
from threadpoolctl import threadpool_limits


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
    with threadpool_limits(limits=limit, user_api="blas"):
        yield
