"""How often one `sj.fit` goes back and forth between factorize's files.

Traces one fit of a small array (sys.setprofile, Python-level calls and
returns, a fresh process per scenario so JIT tracing is counted once, as a
reader following the code would meet it) and reduces the events to the
sequence of snmf_jax/factorize files that execute, consecutive repeats
collapsed. Reported per scenario:

  files      distinct factorize files that ran
  moves      file transitions (calls and returns between files)
  re-entries transitions into a file that had been left before
  by call    those re-entries made by a call (a file called into again after
             it was left; the rest are returns to a waiting caller)
  call-ups   calls into a file already on the call stack below (a module
             calling back up into the one that called it)

Usage: python benchmarks/fit_trace.py [--scenario NAME] [--show]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

SCENARIOS = {
    "random": "dict(init='random')",
    "svd": "dict(init='svd')",
    "kmeans": "dict(init='kmeans')",
    "codes_init": "dict(codes_init=np.full((64, 4), 0.5, np.float32))",
    "checkpoint+resume": "dict(checkpoint_dir=CKPT)",
    "mesh": "dict(mesh=jax.sharding.Mesh(jax.devices()[:1], ('tokens',)))",
    "streaming": "dict(chunk_rows=16)",  # sj.fit_streaming of the same rows, 4 chunks
}


def _trace(scenario: str) -> dict:
    import jax
    import numpy as np
    import snmf_jax as sj

    root = os.path.join(os.path.dirname(os.path.abspath(sj.__file__)), "factorize") + os.sep
    x = np.random.default_rng(0).standard_normal((64, 16)).astype(np.float32)
    ckpt = tempfile.mkdtemp()
    kw = eval(SCENARIOS[scenario], {"np": np, "jax": jax, "CKPT": ckpt})  # noqa: S307 (fixed table)
    fit = sj.fit
    if scenario == "streaming":
        fit = sj.fit_streaming
        x = sj.factorize.as_source(x, chunk_rows=kw.pop("chunk_rows"))
    if scenario == "checkpoint+resume":  # a first fit writes the checkpoint the traced one resumes
        sj.fit(x, 4, max_iter=10, patience=None, progress=False, checkpoint_every=5, **kw)
    seq: list[str] = []
    via: list[str] = []  # the event that entered each element of seq
    stack: list[str | None] = []  # factorize file of each Python frame (None: elsewhere)
    callups = 0

    def where(frame):
        f = frame.f_code.co_filename
        return f[len(root):] if f.startswith(root) else None

    def prof(frame, event, arg):
        nonlocal callups
        if event == "call":
            cur = where(frame)
            mine = [s for s in stack if s is not None]
            if cur is not None and cur in mine and mine[-1] != cur:
                callups += 1  # back up into a file that is waiting below
            stack.append(cur)
        elif event == "return":
            if stack:
                stack.pop()
            cur = where(frame.f_back) if frame.f_back is not None else None
        else:
            return
        if cur is not None and (not seq or seq[-1] != cur):
            seq.append(cur)
            via.append(event)

    max_iter = {"checkpoint+resume": 20, "streaming": 2}.get(scenario, 10)
    sys.setprofile(prof)
    try:
        fit(x, 4, max_iter=max_iter, patience=None, progress=False,
               **({"checkpoint_every": 5} if "checkpoint_dir" in kw else {}), **kw)
    finally:
        sys.setprofile(None)
    left, reentries, by_call = set(), 0, 0
    for prev, cur, event in zip(seq, seq[1:], via[1:]):
        left.add(prev)
        if cur in left:
            reentries += 1
            by_call += event == "call"
    return {"scenario": scenario, "files": len(set(seq)), "moves": max(len(seq) - 1, 0),
            "reentries": reentries, "by_call": by_call, "callups": callups, "sequence": seq}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", choices=sorted(SCENARIOS))
    parser.add_argument("--show", action="store_true", help="print each file sequence")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.scenario and args.json:
        print(json.dumps(_trace(args.scenario)))
        return
    names = [args.scenario] if args.scenario else list(SCENARIOS)
    print(f"{'scenario':20s} {'files':>5s} {'moves':>6s} {'re-entries':>10s} {'by call':>8s} "
          f"{'call-ups':>8s}")
    for name in names:
        out = subprocess.run([sys.executable, __file__, "--scenario", name, "--json"],
                             capture_output=True, text=True, check=True,
                             env={**os.environ, "JAX_PLATFORMS": "cpu"})
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{name:20s} {r['files']:5d} {r['moves']:6d} {r['reentries']:10d} "
              f"{r['by_call']:8d} {r['callups']:8d}")
        if args.show:
            print("   " + " > ".join(s.removesuffix('.py') for s in r["sequence"]))


if __name__ == "__main__":
    main()
