"""Seconds per SNMF iteration: snmf_jax vs the two unavoidable GEMMs (numpy)
and vs a straightforward NumPy implementation of the same algorithm.

All timings are taken in one run, interleaved, and reported as ratios (the
machines are shared and noisy). snmf_jax is timed as `fit` runs it, with
CPU BLAS pinned to one thread (`factorize.limit_blas_threads`, as every fit
does), and the bare update loop of the public solver (`factorize.snmf`)
without the pinning, to show what that buys. Usage:

    python benchmarks/bench_snmf.py [--sizes 8192x3072 32768x1536] [--rank 100]
"""

from __future__ import annotations

import argparse
import math
import time

import jax
import jax.numpy as jnp
import numpy as np

import snmf_jax as sj
from snmf_jax.factorize import FitConfig


def numpy_gemm_pair(x, c, phi):
    """The unavoidable work: CᵀX (K, d) and XΦᵀ (n, K), 4·n·d·K flops."""
    return c.T @ x, x @ phi.T


def numpy_iteration(x, c, p_keep, reg=1e-6, eps=1e-6):
    """The algorithm written plainly in NumPy (inverse-free, trace-identity loss)."""
    k = c.shape[1]
    g = c.T @ c
    phi = np.linalg.solve(g + reg * np.eye(k, dtype=x.dtype), c.T @ x)
    keep = math.ceil(p_keep * x.shape[1])
    thresh = -np.partition(-np.abs(phi), keep - 1, axis=1)[:, keep - 1]
    phi = np.where(np.abs(phi) >= thresh[:, None], phi, 0)
    norms = np.maximum(np.linalg.norm(c, axis=0), 1e-8)
    c = c / norms
    phi = phi * norms[:, None]
    p = x @ phi.T
    q = phi @ phi.T
    c = c * np.sqrt((np.maximum(p, 0) + c @ np.maximum(-q, 0))
                    / (np.maximum(-p, 0) + c @ np.maximum(q, 0) + eps))
    loss = np.sum(x * x) - 2 * np.sum(c * p) + np.sum((c.T @ c) * q)
    return c, loss


def _time(fn, repeats):
    best = []
    for _ in range(repeats):
        # BLAS worker threads keep polling for a while after a call; let the
        # previous contender's threads go idle so no timing pays for another's.
        time.sleep(0.3)
        t = time.perf_counter()
        fn()
        best.append(time.perf_counter() - t)
    return min(best), float(np.median(best))


def bench(n, d, k, iters, repeats):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, d), dtype=np.float32)
    c = rng.uniform(size=(n, k)).astype(np.float32) + 1e-3
    phi = rng.standard_normal((k, d), dtype=np.float32)

    xj, cj = jnp.asarray(x), jnp.asarray(c)
    # The whole public fit (validation, init state, one device call of
    # `iters` iterations, result to host), from the same initial codes.
    opts = FitConfig(rank=k, sparsity=0.01, patience=None, max_iter=iters, chunk_size=iters)
    t0 = time.perf_counter()
    sj.fit(xj, codes_init=cj, options=opts, progress=False)
    compile_s = time.perf_counter() - t0

    def ours():  # fits pin BLAS to one thread while they iterate
        sj.fit(xj, codes_init=cj, options=opts, progress=False)

    # The solver's update loop (public factory) without the pinning.
    solver = sj.factorize.snmf(opts.solver_config)
    loop = jax.jit(lambda x, s: jax.lax.fori_loop(0, iters, lambda _, s: solver.update(x, s), s))
    s0 = solver.init(xj, cj)
    jax.block_until_ready(loop(xj, s0))

    def unpinned():
        jax.block_until_ready(loop(xj, s0))

    def gemms():
        for _ in range(iters):
            numpy_gemm_pair(x, c, phi)

    def plain():
        cc = c
        for _ in range(iters):
            cc, _ = numpy_iteration(x, cc, 0.01)

    res = {"ours": [], "gemm": [], "numpy": [], "unpinned": []}
    for _ in range(repeats):  # interleaved so load drifts hit all four alike
        res["ours"].append(_time(ours, 1)[0] / iters)
        res["gemm"].append(_time(gemms, 1)[0] / iters)
        res["numpy"].append(_time(plain, 1)[0] / iters)
        res["unpinned"].append(_time(unpinned, 1)[0] / iters)
    med = {k_: float(np.median(v)) for k_, v in res.items()}
    flops = 4 * n * d * k
    print(f"n={n} d={d} K={k} float32, {iters} iterations x {repeats} repeats "
          f"(medians), backend={jax.default_backend()}")
    print(f"  first fit (compiles)        {compile_s:8.2f} s")
    print(f"  numpy GEMM pair             {med['gemm']:8.4f} s/it  "
          f"({flops / med['gemm'] / 1e9:6.1f} GFLOP/s)")
    print(f"  numpy plain implementation  {med['numpy']:8.4f} s/it")
    print(f"  snmf_jax                    {med['ours']:8.4f} s/it  "
          f"({flops / med['ours'] / 1e9:6.1f} GFLOP/s)")
    print(f"  snmf_jax, BLAS unpinned     {med['unpinned']:8.4f} s/it")
    print(f"  ratio snmf_jax / GEMM pair  {med['ours'] / med['gemm']:8.2f}x  (target <= 1.3x on CPU)")
    print(f"  ratio unpinned / GEMM pair  {med['unpinned'] / med['gemm']:8.2f}x")
    print(f"  speed-up vs plain numpy     {med['numpy'] / med['ours']:8.2f}x")
    return med


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["8192x3072", "32768x1536"])
    parser.add_argument("--rank", type=int, default=100)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    for size in args.sizes:
        n, d = map(int, size.split("x"))
        bench(n, d, args.rank, args.iters, args.repeats)


if __name__ == "__main__":
    main()
