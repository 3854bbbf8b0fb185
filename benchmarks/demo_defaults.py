"""Chooses the demo's defaults by measurement on the bundled concept set.

For each setting (layer, K, sparsity, init, restarts): concept purity of the
top-10 contexts of every feature (share of features with purity >= 0.5, mean
purity of the ten clearest) and sentence-level label AUC; with --steer, the
offline judge's concept / fluency scores of calibrated steered samples of the
ten clearest features.

    python benchmarks/demo_defaults.py --out /tmp/demo_sweep [--steer]
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import numpy as np

import snmf_jax as sj
from snmf_jax.cli import _demo_steps as steps
from snmf_jax.factorize import FitConfig


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="/tmp/demo_sweep")
    ap.add_argument("--layers", default="6,10,15,20")
    ap.add_argument("--ranks", default="40,100")
    ap.add_argument("--sparsities", default="0.01,0.05")
    ap.add_argument("--inits", default="random,kmeans")
    ap.add_argument("--restarts", default="1")
    ap.add_argument("--max-iter", type=int, default=300)
    ap.add_argument("--steer", action="store_true")
    ap.add_argument("--kl", type=float, default=0.25)
    args = ap.parse_args()
    out = Path(args.out)
    model = sj.load_model("smollm2-135m", progress=False)
    data = sj.load_concepts()
    rows = []
    for layer in map(int, args.layers.split(",")):
        store = steps.export_step(model, data, layer, out)
        for rank, sp, init, rs in itertools.product(
                map(int, args.ranks.split(",")), map(float, args.sparsities.split(",")),
                args.inits.split(","), map(int, args.restarts.split(","))):
            t0 = time.perf_counter()
            opts = FitConfig(rank=rank, sparsity=sp, init=init, max_iter=args.max_iter)
            d = out / f"L{layer}-K{rank}-p{sp}-{init}-r{rs}"
            res = steps.fit_step(store, layer, opts, rs, d, {"layer": layer})
            c = steps.clarity(res.codes, store)
            top = c.order[:10]
            row = {"layer": layer, "rank": rank, "sparsity": sp, "init": init, "restarts": rs,
                   "purity_ge_0.5": int(np.sum(c.purity >= 0.5)),
                   "purity_top10_mean": round(float(c.purity[top].mean()), 3),
                   "auc_top10_mean": round(float(c.auc[top].mean()), 3),
                   "fit_s": round(time.perf_counter() - t0, 1)}
            if args.steer:
                rec = steps.steer_step(model, res, layer, [int(k) for k in top],
                                       [c.label[k] for k in top], kl=args.kl,
                                       prompts=["I think that", "My favourite thing is"],
                                       max_new_tokens=24, out=d,
                                       judge_examples=steps.judge_examples(store))
                sc = rec["scores"].values()
                for m in ("concept", "concept_unsteered", "fluency", "harmonic"):
                    row[m] = round(float(np.mean([s[m] for s in sc])), 3)
            print(json.dumps(row), flush=True)
            rows.append(row)
    (out / "results.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
