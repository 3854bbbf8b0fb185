"""The per-feature steering protocol on a real model: SNMF vs SAE vs DiffMean.

    python benchmarks/per_feature_eval.py --model smollm2-135m --layer 10 \
        --name smollm2_L10 --features 12

Every sampled feature is steered and judged against its own description (the
paper's causal evaluation; `snmf_jax.evaluate._per_feature`):

- corpus: `sae_corpus.documents()` (WordNet glosses + Debian fortunes, offline);
  SNMF is fitted at the paper's settings (sparsity 0.01, up to 2,000 iterations,
  patience 1,500 as the official scripts, K = --rank) on the first
  --snmf-tokens tokens at mlp_hidden; the SAE (a TopK SAE trained here on the
  first --sae-corpus-tokens tokens at mlp_out, or --sae PATH, ours or SAELens)
  reads the same first --snmf-tokens tokens for its latents' top contexts;
- --features per method, 8 samples per (sign, target), KL targets: the
  paper's seven plus 1, 2 and 4 nats, both signs, 50 new tokens, top-k 30 at
  temperature 1, −α at +α's magnitude;
- judge: `snmf_jax.evaluate.offline_judge(model)` (0–2); where this checkout
  does not have it yet, a stand-in (MiniLM cosine to the description, and the
  package's FluencyJudge), named in the record. --rescore FULL re-judges the
  saved texts of a run with the judge the checkout has now.

Writes <out>/<name>.json (trimmed, "protocol": "per-feature"), .md, .png; every
text goes to --full (default /tmp/per_feature/<name>.full.json) for --rescore.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
# This checkout's package, not whichever one is installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def corpus_prefix(tokenizer, n_tokens: int, start: int = 0) -> list[str]:
    """Documents of `sae_corpus.documents()` from `start` holding ~n_tokens tokens."""
    from sae_corpus import documents
    out, total = [], 0
    for d in documents()[start:]:
        out.append(d)
        total += min(len(tokenizer.encode(d)), 128)
        if total >= n_tokens:
            break
    return out


class StandInJudge:
    """Used only while this checkout lacks `snmf_jax.evaluate.offline_judge`:
    concept = 2 x clip((cos(text, centroid of the description's items) - 0.05) / 0.45),
    MiniLM embeddings; fluency = 2 x the package's FluencyJudge probability,
    calibrated on unsteered continuations and corpus documents."""

    name = "stand-in (MiniLM cosine to the description centroid; FluencyJudge x 2)"

    def __init__(self, model, natural):
        from snmf_jax.evaluate import FluencyJudge, SentenceEmbedder, lm_logprob_fn
        self.emb = SentenceEmbedder()
        self.flu = FluencyJudge(natural, logprob_fn=lm_logprob_fn(model))

    def concept(self, texts, description):
        items = [description] if isinstance(description, str) else list(description)
        c = self.emb.embed(items).mean(0)
        from snmf_jax import _numerics
        c = _numerics.unit_rows(c, 1e-8)
        cos = self.emb.embed(list(texts)) @ c
        return 2 * np.clip((cos - 0.05) / 0.45, 0, 1)

    def fluency(self, texts):
        return 2 * np.asarray(self.flu.score(list(texts)), np.float64)


def make_judge(model, docs, max_new_tokens: int = 50):
    import snmf_jax.evaluate as ev
    if hasattr(ev, "offline_judge"):  # fluency calibrated on texts as long as the judged ones
        return (ev.offline_judge(model, max_new_tokens=max_new_tokens),
                "snmf_jax.evaluate.offline_judge (offline, 0-2)")
    from snmf_jax.evaluate._model_access import generate_texts
    natural = generate_texts(model, "I think that", n=24, max_new_tokens=50, seed=999)
    natural += [d[:400] for d in docs[:24]]
    j = StandInJudge(model, natural)
    return j, j.name


def score_and_write(model, run, args, info, docs):
    from snmf_jax.evaluate._per_feature import score_per_feature
    from snmf_jax.evaluate._per_feature_outputs import save_per_feature
    from snmf_jax.evaluate._per_feature_stats import per_feature_summary
    t0 = time.time()
    judge, judge_name = make_judge(model, docs, run.config.steering.max_new_tokens)
    scores = score_per_feature(run, judge)
    steer = run.config.steering
    summary = per_feature_summary(scores, steer.signs, steer.targets, seed=args.seed)
    from snmf_jax.models._presets import PRESETS
    preset = PRESETS.get(args.model)
    info = {**info, "judge": judge_name, "judge_seconds": round(time.time() - t0, 1),
            "model_file": preset.description if preset else args.model}
    title = f"{args.model} L{run.layer}: per-feature protocol ({args.features} features/method)"
    save_per_feature(args.out, args.name, run, scores, summary, info=info, title=title)
    print(f"wrote {args.out}/{args.name}.json/.md/.png (judge {time.time() - t0:.0f}s)",
          flush=True)


def headline(out: Path) -> str:
    """One markdown table over every record in `out`: per run and method, the harmonic
    mean (input- and output-centric descriptions) unsteered, at 0.5 nats, at the
    largest target and pooled over targets, and SNMF − DiffMean (paired)."""
    def cell(d):
        return f"{d['mean']:.2f} [{d['lo']:.2f}, {d['hi']:.2f}]"
    lines = ["| run | method | features | desc. | unsteered | KL 0.5 | KL 4 | all targets | "
             "SNMF − DiffMean, all targets |", "|---|---|---|---|---|---|---|---|---|"]
    for f in sorted(out.glob("*.json")):
        b = json.loads(f.read_text())
        if b.get("protocol") != "per-feature":
            continue
        bs = b["bootstrap"]
        rows = {(r["method"], r["sign"], r["target"], r["metric"]): r for r in bs["rows"]}
        un = {(u["method"], u["metric"]): u for u in bs["unsteered"]}
        pr = {(p["sign"], p["target"], p["metric"]): p for p in bs["paired"]}
        hi = max(b["targets"])
        for m in b["methods"]:
            n = len(next(x for x in b["per_method"] if x["method"] == m)["features"])
            for kind in ("in", "out"):
                metric = f"harmonic_{kind}"
                d = pr.get((0, "all", metric)) if m == "snmf" else None
                lines.append(f"| {f.stem} | {m} | {n} | {kind}put | {cell(un[(m, metric)])} | "
                             f"{cell(rows[(m, 0, 0.5, metric)])} | "
                             f"{cell(rows[(m, 0, hi, metric)])} | "
                             f"{cell(rows[(m, 0, 'all', metric)])} | "
                             f"{cell(d) if d else ''} |")
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--layer", type=int, default=10)
    ap.add_argument("--name", default=None, help="output stem (default <model>_L<layer>)")
    ap.add_argument("--out", default="benchmarks/results/per_feature")
    ap.add_argument("--full", default=None, help="every text (default /tmp/per_feature/)")
    ap.add_argument("--features", type=int, default=12, help="features per method")
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=50)
    ap.add_argument("--targets", type=float, nargs="+", default=None)
    from snmf_jax.evaluate._per_feature import PER_FEATURE_FIT as fit  # the protocol's fit
    ap.add_argument("--rank", type=int, default=fit["rank"])
    ap.add_argument("--sparsity", type=float, default=fit["sparsity"])
    ap.add_argument("--max-iter", type=int, default=fit["max_iter"])
    ap.add_argument("--patience", type=int, default=fit["patience"])
    ap.add_argument("--snmf-tokens", type=int, default=10_000)
    ap.add_argument("--sae", default=None, help="an SAE folder (ours or SAELens) at mlp_out")
    ap.add_argument("--sae-corpus-tokens", type=int, default=100_000)
    ap.add_argument("--sae-tokens", type=int, default=500_000, help="SAE token-steps")
    ap.add_argument("--sae-width", type=int, default=None, help="default 4 x d_model")
    ap.add_argument("--sae-k", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rescore", default=None, help="a --full file: re-judge its texts")
    ap.add_argument("--headline", action="store_true",
                    help="print one table over every record in --out and stop")
    args = ap.parse_args()
    if args.headline:
        return print(headline(Path(args.out)))
    args.name = args.name or f"{args.model.replace('-', '_')}_L{args.layer}"
    full = Path(args.full or f"/tmp/per_feature/{args.name}.full.json")

    import snmf_jax as sj
    from snmf_jax.evaluate._per_feature_outputs import run_from_json, run_to_json
    model = sj.load_model(args.model, progress=False)
    if args.rescore:
        blob = json.loads(Path(args.rescore).read_text())
        docs = corpus_prefix(model.tokenizer, 2_000)
        info = dict(blob["info"])
        info["rescored"] = "python " + " ".join(shlex.quote(a) for a in sys.argv)
        return score_and_write(model, run_from_json(blob["run"]), args, info, docs)

    from snmf_jax.activations import from_texts
    from snmf_jax.baselines import SAEConfig, TrainConfig, load_sae, sae_metrics, train_sae
    from snmf_jax.evaluate._banks import sae_bank, snmf_bank
    from snmf_jax.evaluate._per_feature import (PER_FEATURE_STEERING, PerFeatureConfig,
                                                per_feature_generations)
    import dataclasses
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    info: dict = {"model": args.model, "command": command,
                  "corpus": "benchmarks/sae_corpus.py documents(): WordNet glosses + Debian "
                            "fortunes"}
    t0 = time.time()
    docs = corpus_prefix(model.tokenizer, args.snmf_tokens)
    hid = sj.export_activations(model, from_texts(docs), args.layer, site="mlp_hidden",
                                max_length=128, progress=False)
    out = sj.export_activations(model, from_texts(docs), args.layer, site="mlp_out",
                                max_length=128, progress=False)
    info["snmf_corpus"] = {"documents": len(docs), "tokens": int(hid.X.shape[0])}
    info["export_seconds"] = round(time.time() - t0, 1)
    print(f"corpus: {len(docs)} documents, {hid.X.shape[0]} tokens ({time.time() - t0:.0f}s)",
          flush=True)
    t0 = time.time()
    cache = full.parent / f"{args.name}.cache"  # fitted SNMF and SAE, reused on a rerun
    if (cache / "snmf").is_dir():
        res = sj.SNMFResult.load(cache / "snmf")
        info["snmf_cached"] = str(cache / "snmf")
    else:
        res = sj.fit(hid.X, args.rank, sparsity=args.sparsity, max_iter=args.max_iter,
                     patience=args.patience, seed=args.seed, progress=False)
        res.save(cache / "snmf")
    info["snmf"] = {"rank": args.rank, "sparsity": args.sparsity, "max_iter": args.max_iter,
                    "patience": args.patience, "iterations": int(len(res.losses)),
                    "final_loss": float(res.losses[-1]),
                    "relative_error": float(np.sqrt(np.min(res.losses)) /
                                            np.linalg.norm(hid.X.astype(np.float64))),
                    "seconds": round(time.time() - t0, 1)}
    print(f"SNMF K={args.rank}: {len(res.losses)} iterations, rel. error "
          f"{info['snmf']['relative_error']:.3f} ({time.time() - t0:.0f}s)", flush=True)
    t0 = time.time()
    if not args.sae and (cache / "sae").is_dir():
        args.sae = str(cache / "sae")
    if args.sae:
        sae = load_sae(args.sae)
        info["sae"] = {"path": args.sae, "width": sae.config.d_sae,
                       "architecture": sae.config.architecture}
    else:
        sdocs = corpus_prefix(model.tokenizer, args.sae_corpus_tokens)
        sx = sj.export_activations(model, from_texts(sdocs), args.layer, site="mlp_out",
                                   max_length=128, progress=False)
        held = (sx.doc_ids % 20) == 0
        width = args.sae_width or 4 * model.config.d_model
        cfg = SAEConfig(d_in=sx.X.shape[1], d_sae=width, architecture="topk", k=args.sae_k,
                        hook_name=f"L{args.layer}.mlp_out", model_name=args.model)
        sae, tr = train_sae(sx.X[~held], cfg, TrainConfig(total_tokens=args.sae_tokens,
                                                          batch_size=2048, seed=args.seed))
        m = sae_metrics(sae, sx.X[held])
        info["sae"] = {"architecture": "topk", "width": width, "k": args.sae_k,
                       "corpus_tokens": int((~held).sum()), "tokens_seen": int(tr.n_tokens),
                       "dead_fraction": float(tr.dead_fraction), "held_out": m._asdict(),
                       "note": "trained here on the first corpus documents (a superset of "
                               "the SNMF corpus), top contexts on the SNMF corpus"}
        del sx
        from snmf_jax.baselines import save_sae
        save_sae(sae, cache / "sae")
    info["sae"]["seconds"] = round(time.time() - t0, 1)
    print(f"SAE: {info['sae']} ", flush=True)
    steer = dataclasses.replace(PER_FEATURE_STEERING, n_samples=args.samples,
                                max_new_tokens=args.max_new_tokens,
                                **({"targets": tuple(args.targets)} if args.targets else {}))
    cfg = PerFeatureConfig(n_features=args.features, seed=args.seed, steering=steer)
    banks = [snmf_bank(res, hid, layer=args.layer), sae_bank(sae, out, layer=args.layer)]
    t0 = time.time()
    run = per_feature_generations(model, banks, cfg, neutral=out)
    info["generation_seconds"] = round(time.time() - t0, 1)
    print(f"generated in {time.time() - t0:.0f}s", flush=True)
    from snmf_jax._io import write_json
    full.parent.mkdir(parents=True, exist_ok=True)
    write_json(full, {"info": info, "run": run_to_json(run)})
    score_and_write(model, run, args, info, docs)


if __name__ == "__main__":
    main()
