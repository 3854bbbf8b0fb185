"""SAE training speed: snmf_jax (JAX, jitted step) vs SAELens' own trainer (PyTorch).

    python benchmarks/bench_sae.py [--arch topk] [--d-in 576] [--width 4608] [--k 32]
                                   [--batch 4096] [--steps 20] [--repeats 3]

Same activations (a fixed array of heavy-tailed synthetic rows shaped like
SmolLM2-135M's mlp_out, d=576; or --store PATH for a real ActivationStore),
same architecture, width, k and batch, one process, runs interleaved
(ours, theirs, ours, ...). Reports steady-state tokens/s (after 3 warm-up
steps, which absorb our jit compile) as medians over repeats, and their ratio.
Both use the machine's CPU threads as configured by default.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def make_data(n: int, d: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    atoms = rng.normal(size=(4 * d, d)).astype(np.float32) / np.sqrt(d)
    codes = rng.exponential(size=(n, 4 * d)).astype(np.float32)
    codes *= rng.random((n, 4 * d)) < 0.02  # sparse, heavy-tailed
    return codes @ atoms + 0.1 * rng.normal(size=(n, d)).astype(np.float32)


def ours(X, args) -> float:
    import jax
    import jax.numpy as jnp
    from snmf_jax.baselines import SAEConfig, TrainConfig
    from snmf_jax.baselines._train import make_optimizer, make_train_step
    from snmf_jax.baselines._sae import init_params

    cfg = SAEConfig(d_in=X.shape[1], d_sae=args.width, architecture=args.arch, k=args.k)
    train = TrainConfig(total_tokens=args.batch * (args.steps + 3), batch_size=args.batch,
                        lr=4e-4)
    tx = make_optimizer(train)
    params = init_params(cfg, jax.random.key(0))
    opt = tx.init(params)
    step = make_train_step(cfg, train, tx)
    since = jnp.zeros((cfg.d_sae,), jnp.int32)
    nb = len(X) // args.batch
    t0 = None
    for i in range(args.steps + 3):
        if i == 3:
            jax.block_until_ready(params)
            t0 = time.perf_counter()
        x = jnp.asarray(X[(i % nb) * args.batch:(i % nb + 1) * args.batch])
        params, opt, since, m = step(params, opt, x, since, jnp.int32(i))
    jax.block_until_ready(params)
    return args.steps * args.batch / (time.perf_counter() - t0)


def theirs(X, args) -> float:
    import torch
    from sae_lens import SAETrainer
    from sae_lens.config import SAETrainerConfig
    from sae_lens.saes.standard_sae import StandardTrainingSAE, StandardTrainingSAEConfig
    from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig

    d = X.shape[1]
    if args.arch == "topk":
        sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=d, d_sae=args.width, k=args.k))
    else:
        sae = StandardTrainingSAE(StandardTrainingSAEConfig(d_in=d, d_sae=args.width))
    Xt = torch.from_numpy(X)
    nb = len(X) // args.batch
    batches = (Xt[(i % nb) * args.batch:(i % nb + 1) * args.batch] for i in range(10 ** 9))
    trainer = SAETrainer(SAETrainerConfig(total_training_samples=args.batch * (args.steps + 3),
                                          train_batch_size_samples=args.batch, lr=4e-4,
                                          lr_end=4e-4),
                         sae, batches)
    t0 = None
    for i in range(args.steps + 3):
        if i == 3:
            t0 = time.perf_counter()
        trainer.step(next(batches))
        trainer.n_training_steps += 1
    return args.steps * args.batch / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="topk", choices=["topk", "standard"])
    ap.add_argument("--d-in", type=int, default=576)
    ap.add_argument("--width", type=int, default=4608)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--store", default=None, help="an ActivationStore to read rows from")
    args = ap.parse_args()
    if args.store:
        from snmf_jax.activations import ActivationStore
        store = ActivationStore(args.store)
        X = store.rows(0, min(store.n_rows, 8 * args.batch))
    else:
        X = make_data(8 * args.batch, args.d_in)
    print(f"arch={args.arch} d_in={X.shape[1]} width={args.width} k={args.k} "
          f"batch={args.batch} steps={args.steps} rows={len(X)}", flush=True)
    a, b = [], []
    for r in range(args.repeats):
        a.append(ours(X, args))
        b.append(theirs(X, args))
        print(f"repeat {r}: snmf_jax {a[-1]:,.0f} tok/s   SAELens {b[-1]:,.0f} tok/s   "
              f"ratio {a[-1] / b[-1]:.2f}", flush=True)
    print(f"median: snmf_jax {np.median(a):,.0f} tok/s, SAELens {np.median(b):,.0f} tok/s, "
          f"ratio {np.median(a) / np.median(b):.2f}x")


if __name__ == "__main__":
    main()
