"""A TopK SAE on real SmolLM2-135M activations: FVE, L0 and dead latents on held-out tokens.

    python benchmarks/sae_quality.py [--layer 15] [--width 2304] [--k 32] [--tokens 600000]
                                     [--out benchmarks/results/sae_smollm2_L15.json]

Text: what every Python install carries offline, Python's own reference
documentation (`pydoc_data.topics`) cut into paragraphs, plus the license texts
in /usr/share/common-licenses when present. Technical English and small (~10^5
tokens): a smoke test of the pipeline on real activations (export to an
ActivationStore, stream minibatches from it, held-out metrics), not the corpus
a real comparison should use (see README, "A training corpus for SAEs").
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np


def corpus() -> list[str]:
    from pydoc_data.topics import topics
    docs = [p.strip() for t in topics.values() for p in t.split("\n\n") if len(p.strip()) > 200]
    lic = Path("/usr/share/common-licenses")
    if lic.is_dir():
        for f in sorted(lic.iterdir()):
            if f.is_file():
                text = f.read_text(encoding="utf-8", errors="ignore")
                docs += [p.strip() for p in text.split("\n\n") if len(p.strip()) > 200]
    return docs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--layer", type=int, default=15)
    ap.add_argument("--site", default="mlp_out")
    ap.add_argument("--width", type=int, default=2304)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--tokens", type=int, default=600_000)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    import snmf_jax as sj
    from snmf_jax.activations import from_texts
    from snmf_jax.baselines import SAEConfig, TrainConfig, sae_metrics, train_sae

    docs = corpus()
    rng = np.random.default_rng(0)
    order = rng.permutation(len(docs))
    n_test = len(docs) // 10
    test_docs = [docs[i] for i in order[:n_test]]
    train_docs = [docs[i] for i in order[n_test:]]
    model = sj.load_model("smollm2-135m", progress=False)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.time()
        store = sj.export_activations(model, from_texts(train_docs), args.layer, site=args.site,
                                      out=Path(tmp) / "train", max_length=128, chunk_rows=16384,
                                      progress=False)
        test = sj.export_activations(model, from_texts(test_docs), args.layer, site=args.site,
                                     max_length=128, progress=False)
        t_export = time.time() - t0
        print(f"exported {store.n_rows} train / {test.n} test tokens in {t_export:.0f}s "
              f"({store.num_chunks} chunks)", flush=True)
        cfg = SAEConfig(d_in=store.d, d_sae=args.width, architecture="topk", k=args.k,
                        hook_name=f"L{args.layer}.{args.site}", model_name="smollm2-135m")
        train = TrainConfig(total_tokens=args.tokens, batch_size=args.batch, lr=4e-4,
                            warmup_steps=50, dead_window=100, log_every=100)
        sae, info = train_sae(store, cfg, train, verbose=True)
        m_test = sae_metrics(sae, test)
        m_train = sae_metrics(sae, store)
    res = {"command": "python benchmarks/sae_quality.py " + " ".join(
               f"--{k} {v}" for k, v in (("layer", args.layer), ("width", args.width),
                                         ("k", args.k), ("tokens", args.tokens))),
           "corpus": "pydoc_data.topics paragraphs + /usr/share/common-licenses",
           "train_tokens_in_store": store.n_rows, "test_tokens": test.n,
           "tokens_seen": info.n_tokens, "epochs": info.n_tokens / store.n_rows,
           "train_seconds": info.seconds, "export_seconds": t_export,
           "held_out": m_test._asdict(), "train": m_train._asdict(),
           "dead_fraction_by_window": info.dead_fraction, "history": info.history}
    print(json.dumps({k: v for k, v in res.items() if k != "history"}, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
