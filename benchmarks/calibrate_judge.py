"""The offline judge on data it was not calibrated on (the docs' figures).

    python benchmarks/calibrate_judge.py [--no-lm] [--samples 24] [--out FILE.json]

Calibration (what `evaluate.offline_judge` fits on): the package's concept
sentences (concept score, `concept_calibration_set`), and for fluency 48 of
them plus the LM's own unsteered continuations of "I think that" (top-k 30,
temperature 1), each with two corruptions.

Validation, disjoint from all of it (checked by text, case and spacing
ignored; the run stops if any text is shared):

1. snmf_jax/data/judge_validation.json: 220 labelled texts written for the
   package (fluent on/off-topic, injected concept, loops, word salad), each
   with the description it is judged against (phrase, lexical phrase,
   example passages, tokens). Concept AUROC: label >= 1 vs 0; fluency
   AUROC: label 2 vs 0. Judged without an LM and with SmolLM2-135M.
2. The paper's 20-concept sentences (when ../shared/data/paper is present):
   each concept described by 4 of its sentences ("examples"; its other
   sentences positive) or by its own LLM-written name ("names", e.g.
   "elements related to wedding themes and preparations"; all its sentences
   positive); other concepts' sentences negative.
3. Fluency on fresh unsteered SmolLM2 continuations (another seed, none
   equal to a calibration text) against corruptions of them.
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np

from snmf_jax import _io
from snmf_jax.evaluate import offline_judge
from snmf_jax.evaluate._calibrate import roc_auc
from snmf_jax.evaluate._judge_validation import (calibration_overlap, load_validation,
                                                 validation_report)

# The shared data folder sits beside the main checkout (../shared) or beside the
# folder of worktrees (../../shared).
_REPO = Path(__file__).resolve().parents[1]
PAPER = next((p for p in (_REPO.parent / "shared", _REPO.parents[1] / "shared")
              if (p / "data/paper/final_dataset_20_concepts.json").is_file()),
             _REPO.parent / "shared") / "data/paper/final_dataset_20_concepts.json"


def check_disjoint(judge, texts, what):
    shared = calibration_overlap(judge.calibration_texts(), [{"text": t} for t in texts])
    if shared:
        raise SystemExit(f"{what}: {len(shared)} texts are in the calibration set, e.g. "
                         f"{shared[0]!r}")
    return len(texts)


def paper_concepts(judge, path):
    from snmf_jax.activations import load_dataset
    ds = load_dataset(str(path))
    groups = {}
    for t, l in zip(ds.texts, ds.labels):
        groups.setdefault(ds.label_names[l], []).append(t)
    check_disjoint(judge, ds.texts, "paper-20")
    out = {}
    for mode in ("examples", "names"):
        rng = np.random.default_rng(0)
        aucs, own, other = [], [], []
        for c, v in groups.items():
            idx = rng.permutation(len(v))
            # 4 sentences as the description, or the concept's own LLM-written name
            desc, pos = ([v[i] for i in idx[:4]], [v[i] for i in idx[4:]]) \
                if mode == "examples" else (c.strip(), list(v))
            neg = [t for d, w in groups.items() if d != c for t in w]
            s = judge.concept(pos + neg, desc)
            y = np.r_[np.ones(len(pos)), np.zeros(len(neg))].astype(bool)
            aucs.append(roc_auc(s, y))
            own.append(s[y].mean())
            other.append(s[~y].mean())
        out[mode] = {"concepts": len(groups), "auroc_mean": float(np.mean(aucs)),
                     "auroc_min": float(np.min(aucs)), "mean_score_own": float(np.mean(own)),
                     "mean_score_other": float(np.mean(other))}
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=24, help="unsteered continuations")
    ap.add_argument("--no-lm", action="store_true")
    ap.add_argument("--out", default=None, help="write the figures as JSON here")
    args = ap.parse_args()
    items = load_validation()
    out = {"validation_texts": len(items)}
    t0 = time.time()
    judges = {"no_lm": offline_judge()}
    print(f"judge without LM built in {time.time() - t0:.0f}s", flush=True)
    model = None
    if not args.no_lm:
        from snmf_jax.models import load_model
        model = load_model("smollm2-135m", progress=False)
        t0 = time.time()
        judges["smollm2-135m"] = offline_judge(model, n_unsteered=args.samples)
        print(f"judge with SmolLM2-135M built in {time.time() - t0:.0f}s", flush=True)
    for name, judge in judges.items():
        check_disjoint(judge, [it["text"] for it in items], "judge_validation.json")
        t0 = time.time()
        out[f"validation_{name}"] = validation_report(judge, items)
        print(name, f"({time.time() - t0:.0f}s)", json.dumps(out[f"validation_{name}"]),
              flush=True)
    out["calibration_overlap"] = 0  # check_disjoint stops the run otherwise
    if PAPER.is_file():
        out["paper-20"] = paper_concepts(judges["no_lm"], PAPER)
        print("paper-20", json.dumps(out["paper-20"]), flush=True)
    if model is not None:
        from snmf_jax.evaluate._model_access import generate_texts
        judge = judges["smollm2-135m"]
        cal = {" ".join(t.lower().split()) for t in judge.calibration_texts()}
        gens = generate_texts(model, "I think that", n=2 * args.samples, seed=12345, top_k=30,
                              top_p=1.0, temperature=1.0)
        fresh = list(dict.fromkeys(g for g in gens if " ".join(g.lower().split()) not in cal))
        check_disjoint(judge, fresh, "fresh generations")
        for key, j in (("with_lm", judge.fluency_judge), ("without_lm",
                                                         judges["no_lm"].fluency_judge)):
            rep = j.report(fresh)._asdict()
            rep["unsteered_mean_score"] = float(2 * j.score(fresh).mean())
            rep["n_texts"] = len(fresh)
            out[f"fluency_fresh_generations_{key}"] = rep
            print(key, json.dumps(rep), flush=True)
    out["command"] = ("python benchmarks/calibrate_judge.py" + (" --no-lm" if args.no_lm else "")
                      + f" --samples {args.samples}" + (f" --out {args.out}" if args.out else ""))
    if args.out:
        _io.write_json(Path(args.out), out)


if __name__ == "__main__":
    main()
