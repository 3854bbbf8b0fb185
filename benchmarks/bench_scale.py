"""Scale-out costs of SNMF on CPU, measured in one run.

1. Communication per iteration of the sharded fit: the analytic psum payload
   (CᵀC K×K, CᵀX K×d, loss 1 float) for growing n, checked against the
   all-reduce operands in the compiled HLO of the shard_map'ed iteration on
   8 simulated CPU devices (a subprocess, so this process keeps one device).
2. Time per iteration of the streaming fit (chunks read from an activation
   store on disk) against the in-memory fit at the same size, as a ratio.

    python benchmarks/bench_scale.py [--n 65536] [--d 1024] [--rank 64]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

_HLO = r"""
import os, sys, json, re
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
os.environ["JAX_PLATFORMS"] = "cpu"
import jax, numpy as np
from jax.sharding import Mesh, PartitionSpec as P
from snmf_jax import factorize as F
from snmf_jax.factorize import _rows_mesh
mesh = Mesh(np.array(jax.devices()), ("tokens",))
rows = _rows_mesh.token_sharding(mesh)
out = []
for n, d, k in json.loads(sys.argv[1]):
    # One iteration of the public solver, shard_map'ed over the token axis as
    # fit_sharded runs it: per-token fields sharded, the rest replicated.
    solver = F.snmf(F.SNMFConfig(rank=k))
    x = jax.device_put(np.zeros((n, d), np.float32), rows)
    c = jax.device_put(np.ones((n, k), np.float32), rows)
    spec = F.SNMFState(**{f: P("tokens") if f in ("codes", "row_sqnorm") else P()
                          for f in F.SNMFState._fields})
    init = jax.jit(jax.shard_map(lambda x, c: solver.init(x, c, axis_name="tokens"),
                                 mesh=mesh, in_specs=(P("tokens"), P("tokens")), out_specs=spec))
    step = jax.jit(jax.shard_map(lambda x, s: solver.update(x, s, axis_name="tokens"),
                                 mesh=mesh, in_specs=(P("tokens"), spec), out_specs=spec))
    hlo = step.lower(x, init(x, c)).compile().as_text()
    sizes = {"f32": 4, "f64": 8, "s32": 4, "pred": 1}
    total, ops = 0, []
    for line in hlo.splitlines():
        m = re.match(r"\s*(?:ROOT\s+)?\S+\s*=\s*(.*?)\s+all-reduce(?:-start)?\(", line)
        if not m:
            continue
        shapes = re.findall(r"(f32|f64|s32|pred)\[([\d,]*)\]", m.group(1))
        b = sum(sizes[t] * int(np.prod([int(v) for v in dims.split(",") if v] or [1]))
                for t, dims in shapes)
        ops.append(m.group(1))
        total += b
    out.append({"n": n, "d": d, "k": k, "hlo_bytes": total, "all_reduces": ops})
print(json.dumps(out))
"""


def comm_table(d: int, k: int, ns: list[int]) -> None:
    print(f"\n== communication per iteration (d={d}, K={k}, 8 devices) ==")
    shapes = [[n, d, k] for n in ns]
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    res = subprocess.run([sys.executable, "-c", _HLO, json.dumps(shapes)], capture_output=True,
                         text=True, env=env, timeout=900)
    if res.returncode != 0:
        print("HLO check failed:", res.stderr[-2000:])
        hlo = [None] * len(ns)
    else:
        hlo = json.loads(res.stdout.strip().splitlines()[-1])
    analytic = 4 * (k * d + k * k + 1)
    print(f"{'n':>10} {'X bytes':>12} {'psum bytes':>11} {'HLO all-reduce bytes':>21} "
          f"{'psum / X':>10}")
    for n, h in zip(ns, hlo):
        xb = 4 * n * d
        hb = h["hlo_bytes"] if h else float("nan")
        print(f"{n:>10} {xb:>12} {analytic:>11} {hb:>21} {analytic / xb:>10.2e}")
    if hlo and hlo[0]:
        print("all-reduce operands in the compiled iteration:", hlo[0]["all_reduces"])
    print("ring all-reduce traffic per device = 2·(D−1)/D × psum bytes, independent of n")


def time_streaming(n: int, d: int, k: int, iters: int, chunk_rows: int) -> None:
    import snmf_jax as sj  # pylint: disable=g-import-not-at-top
    from snmf_jax.activations import StoreWriter  # pylint: disable=g-import-not-at-top

    rng = np.random.default_rng(0)
    x = (rng.random((n, 16), dtype=np.float32) @ rng.standard_normal((16, d), dtype=np.float32)
         + 0.1 * rng.standard_normal((n, d), dtype=np.float32))
    kw = dict(sparsity=0.01, patience=None, progress=False)
    # Streaming: one iteration per host round and a commit after each, so the
    # per-iteration callbacks time single iterations (callbacks of a chunk of
    # iterations all arrive when it ends).
    skw = dict(kw, chunk_size=1, checkpoint_every=1)
    print(f"\n== time per iteration, n={n}, d={d}, K={k}, X = {x.nbytes / 2**20:.0f} MiB, "
          f"chunks of {chunk_rows} rows ==")
    with tempfile.TemporaryDirectory() as tmp:
        w = StoreWriter(f"{tmp}/acts", layers=(0,), d=d, chunk_rows=chunk_rows, n_rows=n,
                        settings={})
        for i in range(0, n, chunk_rows):
            w.append({0: x[i:i + chunk_rows]}, {})
        w.finish()

        sj.fit(x, k, max_iter=2, **kw)  # compile
        t = time.perf_counter()
        sj.fit(x, k, max_iter=iters, **kw)
        t_mem = (time.perf_counter() - t) / iters

        stamps = []
        sj.fit_streaming(f"{tmp}/acts", k, max_iter=iters + 1, checkpoint_dir=f"{tmp}/w",
                         callback=lambda s, l: stamps.append(time.perf_counter()), **skw)
        t_stream = (stamps[-1] - stamps[0]) / (len(stamps) - 1)  # first iteration compiles
        # The same, with the activations in memory (isolates the per-chunk overhead
        # from disk reads).
        stamps.clear()
        sj.fit_streaming(sj.factorize.as_source(x, chunk_rows=chunk_rows), k, max_iter=iters + 1,
                         checkpoint_dir=f"{tmp}/w2",
                         callback=lambda s, l: stamps.append(time.perf_counter()), **skw)
        t_stream_mem = (stamps[-1] - stamps[0]) / (len(stamps) - 1)
    gflop = 4 * n * d * k / 1e9
    print(f"in-memory fit          {t_mem * 1e3:8.1f} ms/it  ({gflop / t_mem:6.1f} GFLOP/s)")
    print(f"streaming, store       {t_stream * 1e3:8.1f} ms/it  ratio {t_stream / t_mem:5.2f}")
    print(f"streaming, in memory   {t_stream_mem * 1e3:8.1f} ms/it  ratio "
          f"{t_stream_mem / t_mem:5.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=65536)
    ap.add_argument("--d", type=int, default=1024)
    ap.add_argument("--rank", type=int, default=64)
    ap.add_argument("--iters", type=int, default=8)
    ap.add_argument("--chunk-rows", type=int, default=8192)
    args = ap.parse_args()
    comm_table(args.d, args.rank, [8192, 65536, 524288])
    time_streaming(args.n, args.d, args.rank, args.iters, args.chunk_rows)


if __name__ == "__main__":
    main()
