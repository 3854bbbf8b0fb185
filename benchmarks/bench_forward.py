"""Forward-pass throughput: our jitted JAX forward vs transformers (PyTorch), CPU.

SmolLM2-135M (from its GGUF, dequantized to float32) on a batch of 8 x 128
random tokens. transformers runs the same weights (our params converted back
to a LlamaForCausalLM state dict; logits are checked to agree) under
torch.inference_mode with its default attention (sdpa). Both use every core
(torch.get_num_threads(); XLA's CPU thread pool). Timings are interleaved,
alternating which side goes first, and compile time is reported separately.

Load time and peak RSS of `load_model` are measured for SmolLM2 and Gemma 3,
each in a fresh subprocess (so one load's memory does not hide the other's).

    python benchmarks/bench_forward.py [--batch 8] [--seq 128] [--repeats 7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import numpy as np  # noqa: E402


def hf_llama(model):
    """A transformers LlamaForCausalLM holding `model`'s weights."""
    import torch
    import transformers

    c = model.config
    assert c.family == "llama", c.family
    cfg = transformers.LlamaConfig(
        vocab_size=c.vocab_size, hidden_size=c.d_model, intermediate_size=c.d_mlp,
        num_hidden_layers=c.n_layers, num_attention_heads=c.n_heads,
        num_key_value_heads=c.n_kv_heads, head_dim=c.head_dim,
        max_position_embeddings=c.max_position, rms_norm_eps=c.norm_eps,
        rope_theta=c.rope_theta, tie_word_embeddings=c.tie_embeddings)
    p = jax.tree_util.tree_map(np.asarray, model.params)
    L = p["layers"]
    sd = {"model.embed_tokens.weight": p["embed"], "model.norm.weight": p["final_norm"]["scale"]}
    linear = {"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj",
              "o": "self_attn.o_proj", "gate": "mlp.gate_proj", "up": "mlp.up_proj",
              "down": "mlp.down_proj"}
    for i in range(c.n_layers):
        for ours, theirs in linear.items():
            sd[f"model.layers.{i}.{theirs}.weight"] = L[ours]["kernel"][i].T
        sd[f"model.layers.{i}.input_layernorm.weight"] = L["attn_norm"]["scale"][i]
        sd[f"model.layers.{i}.post_attention_layernorm.weight"] = L["mlp_norm"]["scale"][i]
    if not c.tie_embeddings:
        sd["lm_head.weight"] = p["unembed"]["kernel"].T
    hf = transformers.LlamaForCausalLM(cfg).eval()
    missing, unexpected = hf.load_state_dict(
        {k: torch.from_numpy(np.array(v)) for k, v in sd.items()}, strict=False)
    assert not unexpected and all("lm_head" in k for k in missing), (missing, unexpected)
    return hf


_LOAD_PROBE = """
import os, resource, sys, time
os.environ.setdefault("JAX_PLATFORMS", "cpu")
import jax
from snmf_jax.models import load_model
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
m = load_model(sys.argv[1], progress=False)
jax.block_until_ready(jax.tree_util.tree_leaves(m.params))
dt = time.perf_counter() - t
print(dt, base / 1024, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def bench_load(names=("smollm2-135m", "gemma3-270m")):
    """Wall seconds and peak RSS (MiB) of load_model, each in a fresh process."""
    import subprocess
    import sys
    for name in names:
        out = subprocess.run([sys.executable, "-c", _LOAD_PROBE, name], capture_output=True,
                             text=True, check=True).stdout.split()
        dt, base, peak = map(float, out[-3:])
        print(f"load {name:14s}: {dt:6.2f} s, peak RSS {peak:7.0f} MiB "
              f"(after imports {base:.0f} MiB)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--skip-load", action="store_true")
    args = ap.parse_args()
    if not args.skip_load:
        bench_load()

    import torch

    from snmf_jax.models import load_model

    model = load_model(args.model, progress=False)
    hf = hf_llama(model)
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, model.config.vocab_size, (args.batch, args.seq), dtype=np.int32)
    tokens_pt = torch.from_numpy(tokens.astype(np.int64))
    n_tokens = args.batch * args.seq

    def ours():
        return model.forward(tokens).logits.block_until_ready()

    def theirs():
        with torch.inference_mode():
            return hf(tokens_pt).logits

    t0 = time.perf_counter()
    first = ours()
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref = theirs()  # warm-up (allocator, sdpa dispatch)
    torch_first_s = time.perf_counter() - t0
    diff = float(np.abs(np.asarray(first) - ref.numpy()).max())

    times = {"jax": [], "torch": []}
    for r in range(args.repeats):
        order = [("jax", ours), ("torch", theirs)]
        for name, fn in (order if r % 2 == 0 else order[::-1]):
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    jax_s, torch_s = statistics.median(times["jax"]), statistics.median(times["torch"])
    pair_ratios = [t / j for j, t in zip(times["jax"], times["torch"])]

    print(f"model {args.model}: batch {args.batch} x {args.seq} tokens, float32, CPU, "
          f"{os.cpu_count()} cores, torch threads {torch.get_num_threads()}, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"max |logit(jax) - logit(torch)| = {diff:.2e}")
    print(f"jax   compile + first call: {compile_s:6.2f} s")
    print(f"torch first call          : {torch_first_s:6.2f} s")
    print(f"jax   forward: median {jax_s * 1e3:7.1f} ms  -> {n_tokens / jax_s:8.0f} tokens/s  "
          f"(runs: {', '.join(f'{t * 1e3:.0f}' for t in times['jax'])} ms)")
    print(f"torch forward: median {torch_s * 1e3:7.1f} ms  -> {n_tokens / torch_s:8.0f} tokens/s  "
          f"(runs: {', '.join(f'{t * 1e3:.0f}' for t in times['torch'])} ms)")
    print(f"speed ratio jax/torch (tokens/s): {torch_s / jax_s:.2f}x "
          f"(median of paired ratios {statistics.median(pair_ratios):.2f}x)")


if __name__ == "__main__":
    main()
