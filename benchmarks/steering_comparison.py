"""SNMF vs SAE vs DiffMean: held-out concept detection and causal steering on a real model.

    python benchmarks/steering_comparison.py --model smollm2-135m --layers 10 24 \
        --concepts 6 --targets 0.025 0.1 0.25 0.5 --signs + --samples 4 \
        --out benchmarks/results/steering_smollm2

Datasets: the paper's 20-concept set (read from ../shared/data/paper/, never
copied) and the package's own concept set (`sj.load_concepts()`), each cut to
the first --concepts concepts. Per layer one SAE corpus export is shared by
both datasets: Python's reference docs + license texts (as in
benchmarks/sae_quality.py), first --corpus-docs paragraphs. The judge is the
offline MiniLM judge (`evaluate.offline_judge`). Results are rewritten after
every (layer, dataset), so an interrupted run keeps what it finished.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
PAPER = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "paper" / \
    "final_dataset_20_concepts.json"


def cut(data, n):
    from snmf_jax.activations._text import TextDataset
    if not n:
        return data
    keep = list(range(min(n, len(data.label_names))))
    rows = [i for i, l in enumerate(data.labels) if l in keep]
    return TextDataset(tuple(data.texts[i] for i in rows), tuple(int(data.labels[i]) for i in rows),
                       tuple(data.label_names[i].strip() for i in keep), dict(data.metadata))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--layers", type=int, nargs="+", default=[10, 24])
    ap.add_argument("--datasets", nargs="+", default=["paper20", "package"])
    ap.add_argument("--concepts", type=int, default=6)
    ap.add_argument("--targets", type=float, nargs="+", default=[0.025, 0.1, 0.25, 0.5])
    ap.add_argument("--signs", default="+", choices=("+", "-", "+-"))
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=50)
    ap.add_argument("--sae-tokens", type=int, default=150_000)
    ap.add_argument("--sae-width", type=int, default=2304)
    ap.add_argument("--corpus-docs", type=int, default=300)
    ap.add_argument("--unsupervised", type=int, default=3)
    ap.add_argument("--out", default="benchmarks/results/steering_smollm2")
    args = ap.parse_args()

    import snmf_jax as sj
    from sae_quality import corpus
    from snmf_jax.activations import from_texts
    from snmf_jax.evaluate._compare import CompareConfig, compare_methods
    from snmf_jax.evaluate._outputs import write_comparisons
    from snmf_jax.evaluate._steering import SteeringConfig

    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    model = sj.load_model(args.model, progress=False)
    sets = {"paper20": lambda: sj.read_dataset(str(PAPER.resolve())),
            "package": sj.load_concepts}
    signs = {"+": (1,), "-": (-1,), "+-": (1, -1)}[args.signs]
    steer = SteeringConfig(targets=tuple(args.targets), signs=signs, n_samples=args.samples,
                           max_new_tokens=args.max_new_tokens)
    docs = corpus()[:args.corpus_docs]
    comps = {}
    for layer in args.layers:
        t0 = time.time()
        extra = sj.export_activations(model, from_texts(docs), layer, site="mlp_out",
                                      max_length=128, progress=False).X
        print(f"L{layer}: corpus {extra.shape[0]} tokens in {time.time() - t0:.0f}s", flush=True)
        for name in args.datasets:
            t0 = time.time()
            data = cut(sets[name](), args.concepts)
            cfg = CompareConfig(sae_tokens=args.sae_tokens, sae_width=args.sae_width, unsupervised=args.unsupervised)
            comp = compare_methods(model, data, layer=layer, config=cfg, steering=steer,
                                   corpus=extra)
            comp.info["seconds"] = time.time() - t0
            comp.info["sae_corpus"] = (f"first {len(docs)} paragraphs of pydoc_data.topics + "
                                       "/usr/share/common-licenses")
            comps[f"{args.model} L{layer} {name}"] = comp
            write_comparisons(args.out, comps, command=command)
            print(f"L{layer} {name}: {time.time() - t0:.0f}s", flush=True)


if __name__ == "__main__":
    main()
