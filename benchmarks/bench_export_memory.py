"""Peak host memory of `export_activations(..., out=dir)` vs dataset size.

Each export runs in a fresh subprocess. After the model is built and every
bucket shape is compiled (a warm-up export), the child resets its peak-RSS
counter (/proc/self/clear_refs) and then exports; the figure reported is the
growth of VmHWM during the export itself. Disk exports should stay flat
(about one chunk + one batch); in-memory exports grow with the dataset.

The default model is a random llama with d_mlp=1536 (SmolLM2-135M's MLP
width) and tiny attention, so that millions of rows take seconds on a 2-core
CPU; `--model smollm2-135m` uses the real model (slow on CPU: see its
tokens/s and extrapolate).

    python benchmarks/bench_export_memory.py                     # 100k vs 400k tokens
    python benchmarks/bench_export_memory.py --tokens 250000 1000000
    python benchmarks/bench_export_memory.py --model smollm2-135m --tokens 4000 16000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")


def _status(key: str) -> int:
    """A /proc/self/status field in bytes (VmRSS, VmHWM)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS
        return True
    except OSError:
        return False


def _docs(n_tokens: int, seed: int = 0) -> list[str]:
    """Synthetic documents of 20..200 words totalling about n_tokens words."""
    import numpy as np
    rng = np.random.default_rng(seed)
    words = np.array(("the of and to in is was for on that with as by at from his "
                      "her they this had not are but be one all were we when there "
                      "can an which their said if do will each about how up out them "
                      "then she many some so these would other into has more two time "
                      "like see way could people than first water been called who oil "
                      "its now find long down day did get come made may part").split())
    docs, total = [], 0
    while total < n_tokens:
        k = int(min(rng.integers(20, 200), max(n_tokens - total, 1)))
        docs.append(" ".join(rng.choice(words, k)) + ".")
        total += k + 1
    return docs


def _tiny_model(docs):
    import jax
    from tokenizers import Tokenizer as Backend, models, pre_tokenizers, processors

    from snmf_jax.models import Model, ModelConfig, Tokenizer, init_params
    vocab = {"<pad>": 0, "<bos>": 1, "<unk>": 2}
    for w in sorted({w for d in docs[:200] for w in d.replace(".", " .").split()}):
        vocab.setdefault(w, len(vocab))
    backend = Backend(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(
        single="<bos> $A", special_tokens=[("<bos>", 1)])
    tok = Tokenizer(backend, bos_id=1, pad_id=0)
    cfg = ModelConfig(family="llama", vocab_size=len(vocab), d_model=64, n_layers=1,
                      n_heads=2, n_kv_heads=1, head_dim=32, d_mlp=1536, max_position=256)
    return Model(cfg, init_params(cfg, jax.random.key(0)), tok, "random-llama-d1536")


def child(args) -> None:
    import numpy as np

    from snmf_jax.activations import export_activations
    docs = _docs(args.n_tokens)
    if args.model == "tiny":
        model = _tiny_model(docs)
    else:
        from snmf_jax.models import load_model
        model = load_model(args.model)
    kw = dict(batch_size=args.batch_size, max_length=args.max_length,
              progress=False, chunk_rows=args.chunk_rows)
    # Warm-up: compile every bucket shape on a small sample, so that the
    # measured export holds no compilation memory.
    export_activations(model, sorted(docs, key=len)[::max(len(docs) // 64, 1)],
                       args.layer, **kw)
    import gc
    gc.collect()
    rss0 = _status("VmRSS")
    reset = _reset_peak()
    t0 = time.perf_counter()
    out = export_activations(model, docs, args.layer,
                             out=args.out if args.mode == "disk" else None, **kw)
    dt = time.perf_counter() - t0
    n_rows = out.n_rows if args.mode == "disk" else out.n
    d = out.d
    peak = _status("VmHWM")
    print(json.dumps({"mode": args.mode, "docs": len(docs), "rows": int(n_rows), "d": d,
                      "seconds": dt, "rss_before": rss0, "peak": peak,
                      "peak_growth": peak - rss0 if reset else None,
                      "peak_reset": reset,
                      "x_bytes": int(n_rows) * d * 4,
                      "chunk_bytes": args.chunk_rows * d * 4,
                      "batch_bytes": args.batch_size * args.max_length * d * 4}))
    del out
    np.zeros(1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="tiny", help="'tiny' (random, d_mlp=1536) or a preset")
    p.add_argument("--tokens", type=int, nargs="+", default=[100_000, 400_000])
    p.add_argument("--layer", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--chunk-rows", type=int, default=8192)
    p.add_argument("--modes", nargs="+", default=["disk", "memory"])
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--mode", default="disk", help=argparse.SUPPRESS)
    p.add_argument("--n-tokens", type=int, help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args)

    mib = lambda b: f"{b / 2**20:8.1f}"
    print(f"model={args.model} layer={args.layer} batch_size={args.batch_size} "
          f"max_length={args.max_length} chunk_rows={args.chunk_rows}")
    print(f"{'mode':>6} {'tokens':>9} {'rows':>9} {'X MiB':>9} {'peak growth MiB':>16} "
          f"{'chunk+batch MiB':>16} {'s':>7} {'rows/s':>9}")
    results = []
    for mode in args.modes:
        for n in args.tokens:
            with tempfile.TemporaryDirectory(prefix="bench_export_") as tmp:
                cmd = [sys.executable, __file__, "--child", "--mode", mode,
                       "--n-tokens", str(n), "--out", os.path.join(tmp, "store"),
                       "--model", args.model, "--layer", str(args.layer),
                       "--batch-size", str(args.batch_size),
                       "--max-length", str(args.max_length),
                       "--chunk-rows", str(args.chunk_rows)]
                res = subprocess.run(cmd, capture_output=True, text=True)
                if res.returncode:
                    sys.exit(f"child failed:\n{res.stderr[-4000:]}")
                r = json.loads(res.stdout.strip().splitlines()[-1])
            results.append(r)
            growth = r["peak_growth"] if r["peak_growth"] is not None else r["peak"]
            print(f"{mode:>6} {n:>9} {r['rows']:>9} {mib(r['x_bytes'])} {mib(growth):>16} "
                  f"{mib(r['chunk_bytes'] + r['batch_bytes']):>16} {r['seconds']:7.1f} "
                  f"{r['rows'] / r['seconds']:9.0f}")
    disk = [r for r in results if r["mode"] == "disk"]
    if len(disk) >= 2 and all(r["peak_growth"] is not None for r in disk):
        lo, hi = disk[0], disk[-1]
        print(f"disk: {hi['rows'] / lo['rows']:.1f}x the rows -> "
              f"{hi['peak_growth'] / max(lo['peak_growth'], 1):.2f}x the peak growth; "
              f"largest peak growth / X size = {hi['peak_growth'] / hi['x_bytes']:.3f}")
    mem = [r for r in results if r["mode"] == "memory"]
    if len(mem) >= 2 and all(r["peak_growth"] is not None for r in mem):
        print(f"memory: {mem[-1]['rows'] / mem[0]['rows']:.1f}x the rows -> "
              f"{mem[-1]['peak_growth'] / max(mem[0]['peak_growth'], 1):.2f}x the peak growth")


if __name__ == "__main__":
    main()
