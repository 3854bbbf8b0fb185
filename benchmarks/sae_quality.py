"""TopK SAEs on real SmolLM2-135M activations: FVE, L0 and dead latents on
held-out tokens, at SNMF's capacity (width = K) and wide.

    python benchmarks/sae_quality.py [--layer 10] [--widths 40 2304 4608] [--k 32] \
        [--corpus-tokens 200000] [--tokens 1000000] [--out benchmarks/results/sae_smollm2_L10.json]

Text: the offline corpus of `sae_corpus.documents()` (WordNet glosses + Debian's
fortunes), its first --corpus-tokens tokens; every 20th document is held out.
The training tokens are exported to an `ActivationStore` and streamed from it
chunk by chunk, as a corpus larger than memory would be. k is capped at the
width (an SAE of width K = 40 keeps min(k, 40) latents).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--layer", type=int, default=10)
    ap.add_argument("--site", default="mlp_out")
    ap.add_argument("--widths", type=int, nargs="+", default=[40, 2304, 4608])
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--corpus-tokens", type=int, default=200_000)
    ap.add_argument("--tokens", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=2048)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    import snmf_jax as sj
    from sae_corpus import documents
    from snmf_jax._io import write_json
    from snmf_jax.activations import from_texts
    from snmf_jax.baselines import SAEConfig, TrainConfig, sae_metrics, train_sae

    model = sj.load_model("smollm2-135m", progress=False)
    docs, total = [], 0
    for d in documents():
        docs.append(d)
        total += min(len(model.tokenizer.encode(d)), 128)
        if total >= args.corpus_tokens:
            break
    test_docs, train_docs = docs[::20], [d for i, d in enumerate(docs) if i % 20]
    res = {"command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
           "corpus": "sae_corpus.documents(): WordNet glosses + Debian fortunes", "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.time()
        store = sj.export_activations(model, from_texts(train_docs), args.layer, site=args.site,
                                      out=Path(tmp) / "train", max_length=128, chunk_rows=16384,
                                      progress=False)
        test = sj.export_activations(model, from_texts(test_docs), args.layer, site=args.site,
                                     max_length=128, progress=False)
        res.update(train_tokens_in_store=store.n_rows, test_tokens=test.n,
                   export_seconds=time.time() - t0)
        print(f"exported {store.n_rows} train / {test.n} test tokens in {time.time() - t0:.0f}s "
              f"({store.num_chunks} chunks)", flush=True)
        for width in args.widths:
            cfg = SAEConfig(d_in=store.d, d_sae=width, architecture="topk",
                            k=min(args.k, width), hook_name=f"L{args.layer}.{args.site}",
                            model_name="smollm2-135m")
            train = TrainConfig(total_tokens=args.tokens, batch_size=args.batch,
                                dead_window=100, log_every=100)
            sae, info = train_sae(store, cfg, train)
            run = {"width": width, "k": cfg.k, "tokens_seen": info.n_tokens,
                   "epochs": info.n_tokens / store.n_rows, "train_seconds": info.seconds,
                   "tokens_per_second": info.n_tokens / info.seconds,
                   "held_out": sae_metrics(sae, test)._asdict(),
                   "train": sae_metrics(sae, store)._asdict(),
                   "dead_fraction_by_window": info.dead_fraction, "history": info.history}
            res["runs"].append(run)
            h = run["held_out"]
            print(f"width {width} k {cfg.k}: held-out FVE {h['fve']:.3f}, L0 {h['l0']:.1f}, "
                  f"dead {h['dead_fraction']:.3f}; {info.n_tokens} tokens in "
                  f"{info.seconds:.0f}s", flush=True)
            if args.out:
                write_json(args.out, res)


if __name__ == "__main__":
    main()
