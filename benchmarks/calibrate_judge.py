"""Measure the offline judge's calibration on held-out texts (the README's figures).

    python benchmarks/calibrate_judge.py [--no-lm] [--samples 48] [--out FILE.json]

Concept score: the package's 35-concept set and the paper's 20-concept set,
each concept's sentences split 2:1 into calibration / held-out; AUROC per
concept of the held-out sentences against the other concepts' held-out sentences.
Fluency: SmolLM2-135M's own unsteered generations after "I think that" (the
paper's sampling) plus the concept sentences, split in half; AUROC of the
held-out natural texts against fresh corruptions of them, with and without
the LM log-probability feature.
"""

import argparse
import json
import time
from collections import defaultdict

import numpy as np

from snmf_jax.activations import load_concepts, read_dataset
from snmf_jax.evaluate._minilm import SentenceEmbedder
from snmf_jax.evaluate._offline_judge import ConceptJudge, FluencyJudge


def split(groups, frac=2 / 3, seed=0):
    rng = np.random.default_rng(seed)
    a, b = {}, {}
    for c, v in groups.items():
        idx = rng.permutation(len(v))
        k = int(round(frac * len(v)))
        a[c], b[c] = [v[i] for i in idx[:k]], [v[i] for i in idx[k:]]
    return a, b


def groups_of(ds):
    g = defaultdict(list)
    for t, l in zip(ds.texts, ds.labels):
        g[ds.label_names[l]].append(t)
    return dict(g)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=48)
    ap.add_argument("--no-lm", action="store_true")
    ap.add_argument("--out", default=None, help="write the figures as JSON here")
    args = ap.parse_args()
    emb = SentenceEmbedder()
    out = {}
    paper = "../shared/data/paper/final_dataset_20_concepts.json"
    for name, ds in (("package-35", load_concepts()), ("paper-20", read_dataset(paper))):
        cal, held = split(groups_of(ds))
        judge = ConceptJudge(emb, cal)
        au = judge.auroc(held)
        p = judge.score([t for v in held.values() for t in v])
        own = np.array([[c == d for d in judge.names] for c, v in held.items() for _ in v])
        out[name] = {"concepts": len(au), "crossfit_auroc": judge.crossfit_auroc,
                     "held_out_auroc_mean": float(np.mean(list(au.values()))),
                     "held_out_auroc_min": float(np.min(list(au.values()))),
                     "mean_p_own": float(p[own].mean()), "mean_p_other": float(p[~own].mean())}
        print(name, json.dumps(out[name]), flush=True)

    natural = [t for v in groups_of(load_concepts()).values() for t in v]
    logprob = None
    if not args.no_lm:
        from snmf_jax.models import load_model
        from snmf_jax.evaluate._model_access import generate_texts, lm_logprob_fn
        model = load_model("smollm2-135m", progress=False)
        t0 = time.time()
        gens = generate_texts(model, "I think that", n=args.samples, seed=0)
        print(f"generated {len(gens)} in {time.time() - t0:.1f}s; e.g. {gens[0]!r}", flush=True)
        natural = gens + natural
        logprob = lm_logprob_fn(model)
    rng = np.random.default_rng(1)
    idx = rng.permutation(len(natural))
    cal = [natural[i] for i in idx[::2]]
    held = [natural[i] for i in idx[1::2]]
    for use_lm in ([True, False] if logprob else [False]):
        judge = FluencyJudge(cal, logprob_fn=logprob if use_lm else None)
        rep = judge.report(held)
        key = "fluency_with_lm" if use_lm else "fluency_without_lm"
        out[key] = rep._asdict()
        if not args.no_lm:
            out[key]["unsteered_mean"] = float(judge.score(gens[1::2]).mean())
        print(key, json.dumps(out[key]), flush=True)
    if args.out:
        out["command"] = "python benchmarks/calibrate_judge.py" + (
            " --no-lm" if args.no_lm else "") + f" --samples {args.samples}"
        with open(args.out, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
