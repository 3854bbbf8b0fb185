"""Sampled steered generation on SmolLM2-135M (CPU): drawing among lax.top_k's
candidates (`max_k`, what `generate` does) against filtering the whole 49k
vocabulary (two bisections and a draw over it), ratios measured in one run.

    python benchmarks/bench_sampling.py [--rows 128 256] [--new-tokens 50] [--reps 2]

Each configuration runs `generate_tokens` with the paper's sampling (top-k 30,
top-p 0.3, T = 1) and a batched patch (one random direction per 8 rows);
compile excluded, the two paths interleaved, the best of --reps kept.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, nargs="+", default=[128, 256])
    ap.add_argument("--new-tokens", type=int, default=50)
    ap.add_argument("--reps", type=int, default=2)
    args = ap.parse_args()

    import jax
    import jax.numpy as jnp

    import snmf_jax as sj
    from snmf_jax.steer import Directions
    from snmf_jax.steer._generate import generate_tokens
    from snmf_jax.steer._patches import repeat_rows

    model = sj.load_model("smollm2-135m", progress=False)
    prompt = model.tokenizer.encode("I think that", add_bos=True)
    print(f"SmolLM2-135M, vocabulary {model.config.vocab_size}, {args.new_tokens} new tokens")
    for rows in args.rows:
        n_var = rows // 8
        vecs = np.random.default_rng(0).normal(size=(n_var, model.config.d_model))
        dirs = Directions.from_vectors(vecs.astype(np.float32), layer=10, site="mlp_out",
                                       config=model.config)
        patch = repeat_rows(dict(dirs.patch(np.full(n_var, 4.0, np.float32))), n_var, 8)
        tokens = jnp.asarray(np.tile(np.asarray(prompt, np.int32), (rows, 1)))
        mask = jnp.ones_like(tokens)

        def run(max_k):
            out = generate_tokens(
                model.params, tokens, mask, patch, jax.random.PRNGKey(0), jnp.float32(1.0),
                jnp.int32(30), jnp.float32(0.3), jnp.asarray([-1] * 4, jnp.int32),
                jnp.int32(0), config=model.config, where="all",
                max_new_tokens=args.new_tokens, greedy=False, use_top_k=True,
                use_top_p=True, max_k=max_k)
            return np.asarray(out)

        best = {}
        for max_k in (None, 32):
            run(max_k)  # compile
        for _ in range(args.reps):
            for max_k in (None, 32):
                t = time.perf_counter()
                run(max_k)
                best[max_k] = min(best.get(max_k, np.inf), time.perf_counter() - t)
        tps = {k: rows * args.new_tokens / v for k, v in best.items()}
        print(f"{rows} rows: whole-vocabulary filters {best[None]:.1f} s ({tps[None]:.0f} tok/s), "
              f"top-k candidates {best[32]:.1f} s ({tps[32]:.0f} tok/s): "
              f"{best[None] / best[32]:.2f}x", flush=True)


if __name__ == "__main__":
    main()
