"""`snmf-jax evaluate`: SNMF against SAE and DiffMean on one model, layer and corpus.

Default: the per-feature protocol (the paper's causal evaluation: every sampled
feature steered and judged against its own description). `--protocol matching`
runs the older supervised comparison (one direction matched per labelled
concept), kept as a second table.
"""

from __future__ import annotations

import argparse
import contextlib
import shlex
import sys

from snmf_jax.cli._llm_args import add_llm_args, check_llm_args, llm_judge
from snmf_jax.cli._options import field_default
from snmf_jax.evaluate import PER_FEATURE_FIT, CompareConfig, PerFeatureConfig, SteeringConfig
from snmf_jax.steer import SAMPLERS

# Every method: CompareConfig's default (the dataclass keeps it as the class attribute).
METHODS = CompareConfig.methods

# Each protocol's (rank, sparsity, max_iter, patience, minus_alpha), read from
# the library: the per-feature fit and steering, CompareConfig and
# SteeringConfig (the matching comparison fits without patience).
_PF = PER_FEATURE_FIT
_DEFAULTS = {"per-feature": (_PF["rank"], _PF["sparsity"], _PF["max_iter"], _PF["patience"],
                             field_default(PerFeatureConfig, "steering").minus_alpha),
             "matching": (field_default(CompareConfig, "rank"),
                          field_default(CompareConfig, "sparsity"),
                          field_default(CompareConfig, "max_iter"), None,
                          field_default(SteeringConfig, "minus_alpha"))}
_M = _DEFAULTS["matching"]
_S = SteeringConfig()


def register(subparsers) -> argparse.ArgumentParser:
    """Adds the `evaluate` subcommand."""
    p = subparsers.add_parser(
        "evaluate", help="causal steering: SNMF vs SAE vs DiffMean, per feature",
        description="Per-feature protocol (default): fits SNMF on --dataset (the corpus) at "
                    "the paper's settings, reads an SAE (--sae) or trains a TopK SAE on the "
                    "same corpus, samples --features usable features of each, builds a "
                    "DiffMean direction per SNMF feature from its top contexts, steers each "
                    "at every KL target and sign and judges each text against the feature's "
                    "own description (0-2). Writes per_feature.md/.json/.png to --out. "
                    "--protocol matching: the older supervised comparison on a labelled "
                    "--dataset (results.md, results.json, steering.png).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", required=True, help="preset name, HF folder or .gguf file")
    p.add_argument("--layer", type=int, required=True, help="block index")
    p.add_argument("--protocol", default="per-feature", choices=("per-feature", "matching"))
    p.add_argument("--dataset", default="concepts",
                   help="per-feature: the corpus (any dataset: 'concepts', a .json/.jsonl/"
                        "text file); matching: labelled {prompt, label} data")
    p.add_argument("--concepts", type=int, default=0,
                   help="matching: keep only the first N concepts (0: all)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--methods", default=",".join(METHODS),
                   help="comma-separated subset of snmf,sae,diffmean")
    p.add_argument("--features", type=int, default=field_default(PerFeatureConfig, "n_features"),
                   help="per-feature: features per method")
    p.add_argument("--sae", default=None,
                   help="an SAE folder (ours or SAELens) at this layer's mlp_out "
                        "(default: train a TopK SAE on the corpus)")
    p.add_argument("--no-steer", action="store_true", help="matching: concept detection only")
    p.add_argument("--rank", type=int, default=None,
                   help=f"SNMF rank (per-feature {_PF['rank']}; matching 2 x concepts)")
    p.add_argument("--sparsity", type=float, default=None,
                   help=f"per-feature {_PF['sparsity']}; matching {_M[1]}")
    p.add_argument("--max-iter", type=int, default=None,
                   help=f"per-feature {_PF['max_iter']}; matching {_M[2]}")
    p.add_argument("--patience", type=int, default=None,
                   help=f"per-feature {_PF['patience']} (the official scripts'); matching: none")
    p.add_argument("--sae-width", type=int, default=None, help="default 8 x d_model")
    p.add_argument("--sae-k", type=int, default=field_default(CompareConfig, "sae_k"),
                   help="active latents of the TopK SAE trained here")
    p.add_argument("--sae-tokens", type=int, default=field_default(CompareConfig, "sae_tokens"),
                   help="SAE token-steps")
    p.add_argument("--targets", type=float, nargs="+", default=None,
                   help="KL targets in nats (per-feature: the paper's seven plus 1 2 4; "
                        "matching: the paper's seven)")
    p.add_argument("--signs", default="+-", choices=("+", "-", "+-"))
    p.add_argument("--samples", type=int, default=field_default(SteeringConfig, "n_samples"),
                   help="samples per sign and target")
    p.add_argument("--max-new-tokens", type=int,
                   default=field_default(SteeringConfig, "max_new_tokens"),
                   help="tokens per steered continuation")
    p.add_argument("--sampler", default=field_default(SteeringConfig, "sampler"), choices=SAMPLERS,
                   help=f"top-k: top-k {_S.top_k} at temperature {_S.temperature:g} (what the "
                        f"official runs sampled); top-k-and-top-p: also top-p {_S.top_p} "
                        "(near-greedy)")
    p.add_argument("--minus-alpha", default=None, choices=("reuse", "calibrate"),
                   help="-alpha at +alpha's magnitude (reuse, the official code; per-feature "
                        "default) or searched per target (calibrate; matching default)")
    p.add_argument("--unsupervised", type=int, default=field_default(CompareConfig, "unsupervised"),
                   help="matching: also steer the first N SNMF features against their contexts")
    p.add_argument("--judge", default="offline", choices=("offline", "llm"))
    add_llm_args(p, "--judge llm")
    p.add_argument("--seed", type=int, default=field_default(PerFeatureConfig, "seed"),
                   help="seed of the feature sample, the fits and the sampling")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    p.add_argument("--overwrite", action="store_true",
                   help="replace results already at --out (default: refuse)")
    p.set_defaults(func=run)
    return p


def _steering_config(args, targets):
    from snmf_jax.evaluate import SteeringConfig
    signs = {"+": (1,), "-": (-1,), "+-": (1, -1)}[args.signs]
    return SteeringConfig(targets=tuple(targets), signs=signs, n_samples=args.samples,
                          max_new_tokens=args.max_new_tokens, sampler=args.sampler,
                          minus_alpha=args.minus_alpha, seed=args.seed)


def _configs(args):
    from snmf_jax.evaluate import PAPER_TARGETS, PER_FEATURE_TARGETS, PerFeatureConfig
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    rank, sparsity, max_iter, patience, minus = _DEFAULTS[args.protocol]
    args.rank = rank if args.rank is None else args.rank
    args.sparsity = sparsity if args.sparsity is None else args.sparsity
    args.max_iter = max_iter if args.max_iter is None else args.max_iter
    args.patience = patience if args.patience is None else args.patience
    args.minus_alpha = args.minus_alpha or minus
    if args.layer < 0:
        raise ValueError(f"--layer must be >= 0; got {args.layer}")
    if args.concepts < 0 or args.concepts == 1:
        raise ValueError(f"--concepts must be 0 (all) or >= 2 (a concept is detected "
                         f"against the others); got {args.concepts}")
    _check_flags(args)
    if args.judge == "llm":
        check_llm_args(args, "--judge llm")
    for name in ("samples", "max_new_tokens", "sae_tokens", "sae_k", "max_iter", "features"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1; got {getattr(args, name)}")
    if args.patience is not None and args.patience < 1:
        raise ValueError(f"--patience must be >= 1; got {args.patience}")
    if not 0 < args.sparsity <= 1:
        raise ValueError(f"--sparsity must be in (0, 1]; got {args.sparsity}")
    if args.sae is not None:
        import os
        if not os.path.isdir(args.sae):
            raise FileNotFoundError(f"--sae: no such folder {args.sae!r}")
    try:
        if args.protocol == "per-feature":
            if "snmf" not in methods:
                raise ValueError("methods must include snmf for the per-feature protocol "
                                 f"(DiffMean is built per SNMF feature); got {list(methods)}")
            bad = [m for m in methods if m not in METHODS]
            if bad:
                raise ValueError(f"methods must be a subset of {METHODS}; got {list(methods)}")
            steer = _steering_config(args, args.targets or PER_FEATURE_TARGETS)
            return methods, PerFeatureConfig(n_features=args.features, seed=args.seed,
                                             diffmean="diffmean" in methods, steering=steer)
        compare = CompareConfig(methods=methods, rank=args.rank, sparsity=args.sparsity,
                                max_iter=args.max_iter, sae_width=args.sae_width,
                                sae_k=args.sae_k, sae_tokens=args.sae_tokens,
                                unsupervised=args.unsupervised, seed=args.seed)
        steering = None if args.no_steer else _steering_config(args,
                                                               args.targets or PAPER_TARGETS)
    except ValueError as e:
        raise ValueError(f"--{str(e)}") from None
    return compare, steering


def _check_flags(args) -> None:
    """The flags a fit, SAE or generation would otherwise refuse (or silently
    replace) after the model loads, and --out, before anything runs."""
    from snmf_jax import _checks, _outputs
    for flag, v, lo, hi in (("--rank", args.rank, 1, None), ("--sae-width", args.sae_width, 1, None),
                            ("--unsupervised", args.unsupervised, 0, None),
                            ("--samples", args.samples, 1, 1024),
                            ("--max-new-tokens", args.max_new_tokens, 1, 1 << 16),
                            ("--seed", args.seed, -2 ** 63, 2 ** 63 - 1)):
        if v is not None:
            _checks.integer(flag, v, lo=lo, hi=hi)
    for t in args.targets or ():
        _checks.real("--targets", t, lo=0, lo_open=True)
    _outputs.check_outputs(
        [_outputs.Output("--out", args.out, ("per_feature.md", "per_feature.json",
                                              "per_feature.png")
                         if args.protocol == "per-feature" else
                         ("results.md", "results.json", "steering.png"))],
        inputs={"--dataset": args.dataset if args.dataset != "concepts" else None,
                "--model": args.model}, overwrite=args.overwrite)


def _dataset(args):
    from snmf_jax.activations import TextDataset, load_dataset
    data = load_dataset(args.dataset)
    if data.labels is None:
        raise ValueError(f"--dataset {args.dataset!r} has no labels; evaluate needs labelled "
                         "concept sentences")
    if args.concepts:
        keep = list(range(min(args.concepts, len(data.label_names))))
        rows = [i for i, l in enumerate(data.labels) if l in keep]
        data = TextDataset(tuple(data.texts[i] for i in rows),
                           tuple(int(data.labels[i]) for i in rows),
                           tuple(data.label_names[i] for i in keep), dict(data.metadata))
    return data


def _feature_judge(args, model, stack):
    if args.judge == "llm":
        from snmf_jax.evaluate import LLMSteeringJudge
        return LLMSteeringJudge(llm_judge(args, stack)), "llm"
    from snmf_jax.evaluate import offline_judge
    return offline_judge(model), "offline"


def run_per_feature(args, methods, config) -> int:
    import time

    from snmf_jax.activations import export_activations, load_dataset
    from snmf_jax.evaluate import (per_feature_generations, per_feature_summary, sae_bank,
                                   score_per_feature, snmf_bank, save_per_feature)
    from snmf_jax.factorize import fit
    from snmf_jax.models import load_model
    data = load_dataset(args.dataset)
    model = load_model(args.model)
    if args.layer >= model.config.n_layers:
        raise ValueError(f"--layer must be in [0, {model.config.n_layers}); got {args.layer}")
    t0 = time.time()
    hid = export_activations(model, data, args.layer, site="mlp_hidden", progress=False)
    out = export_activations(model, data, args.layer, site="mlp_out", progress=False)
    res = fit(hid.X, args.rank, sparsity=args.sparsity, max_iter=args.max_iter,
              patience=args.patience, seed=args.seed, progress=True)
    banks = [snmf_bank(res, hid, layer=args.layer)]
    info = {"model": model.name or args.model, "corpus": args.dataset,
            "corpus_tokens": int(hid.X.shape[0]),
            "snmf": {"rank": args.rank, "sparsity": args.sparsity, "max_iter": args.max_iter,
                     "patience": args.patience, "iterations": int(len(res.losses))}}
    if "sae" in methods:
        from snmf_jax.baselines import SAEConfig, TrainConfig, load_sae, train_sae
        if args.sae:
            sae = load_sae(args.sae)
            info["sae"] = {"path": args.sae}
        else:
            width = args.sae_width or 8 * model.config.d_model
            sae, _ = train_sae(out.X, SAEConfig(d_in=out.X.shape[1], d_sae=width,
                                                architecture="topk", k=args.sae_k),
                               TrainConfig(total_tokens=args.sae_tokens, seed=args.seed))
            info["sae"] = {"trained_on": "the corpus at mlp_out", "width": width, "k": args.sae_k}
        banks.append(sae_bank(sae, out, layer=args.layer))
    run = per_feature_generations(model, banks, config, neutral=out, progress=True)
    with contextlib.ExitStack() as stack:
        judge, judge_name = _feature_judge(args, model, stack)
        scores = score_per_feature(run, judge)
    steer = config.steering
    summary = per_feature_summary(scores, steer.signs, steer.targets, seed=args.seed)
    info.update(judge=judge_name, seconds=round(time.time() - t0, 1),
                command="snmf-jax " + " ".join(shlex.quote(a) for a in sys.argv[1:]))
    title = f"{model.name or args.model} L{args.layer}: per-feature protocol"
    save_per_feature(args.out, "per_feature", run, scores, summary, info=info, title=title)
    print(f"wrote {args.out}/per_feature.md, per_feature.json, per_feature.png")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.protocol == "per-feature":
        methods, config = _configs(args)
        return run_per_feature(args, methods, config)
    compare, steering = _configs(args)
    data = _dataset(args)
    from snmf_jax.models import load_model
    model = load_model(args.model, progress=not args.no_progress)
    from snmf_jax.evaluate import compare_methods
    with contextlib.ExitStack() as stack:
        judge = None
        if args.judge == "llm" and steering is not None:
            from snmf_jax.evaluate import LLMSteeringJudge
            judge = LLMSteeringJudge(llm_judge(args, stack))
        comp = compare_methods(model, data, layer=args.layer, config=compare, steering=steering,
                               judge=judge, progress=not args.no_progress)
    from snmf_jax.evaluate import save_comparisons
    label = f"{model.name or args.model} L{args.layer}"
    command = "snmf-jax " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    save_comparisons(args.out, {label: comp}, command=command)
    print(f"wrote {args.out}/results.md, results.json" + ("" if steering is None
                                                          else ", steering.png"))
    return 0
