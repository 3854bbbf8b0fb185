"""`snmf-jax evaluate`: SNMF against SAE and DiffMean on one model, layer and dataset."""

from __future__ import annotations

import argparse
import contextlib
import shlex
import sys

from snmf_jax.evaluate._compare import METHODS
from snmf_jax.cli._llm_args import add_llm_args, check_llm_args, llm_judge
from snmf_jax.evaluate._steering import PAPER_TARGETS


def register(subparsers) -> argparse.ArgumentParser:
    """Adds the `evaluate` subcommand."""
    p = subparsers.add_parser(
        "evaluate", help="concept detection and causal steering: SNMF vs SAE vs DiffMean",
        description="Fits SNMF, trains a TopK SAE and computes DiffMean directions on a "
                    "labelled concept dataset, matches one direction per concept on a training "
                    "split, then scores held-out concept detection (S_CD, ROC-AUC) and/or "
                    "steering (KL-calibrated, judged for concept and fluency). Writes "
                    "results.md, results.json and steering.png to --out.")
    p.add_argument("--model", required=True, help="preset name, HF folder or .gguf file")
    p.add_argument("--layer", type=int, required=True, help="block index")
    p.add_argument("--dataset", default="concepts",
                   help="labelled concept data: 'concepts' (the package's) or a .json file of "
                        "{prompt, label} records (e.g. the paper's 20 concepts)")
    p.add_argument("--concepts", type=int, default=0,
                   help="keep only the first N concepts (0: all)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--methods", default=",".join(METHODS),
                   help="comma-separated subset of snmf,sae,diffmean")
    p.add_argument("--no-steer", action="store_true", help="concept detection only")
    p.add_argument("--rank", type=int, default=None, help="SNMF rank (default 2 x concepts)")
    p.add_argument("--sparsity", type=float, default=0.05)
    p.add_argument("--max-iter", type=int, default=200)
    p.add_argument("--sae-width", type=int, default=None, help="default 8 x d_model")
    p.add_argument("--sae-k", type=int, default=32)
    p.add_argument("--sae-tokens", type=int, default=300_000, help="SAE token-steps")
    p.add_argument("--targets", type=float, nargs="+", default=list(PAPER_TARGETS),
                   help="KL targets (nats)")
    p.add_argument("--signs", default="+-", choices=("+", "-", "+-"))
    p.add_argument("--samples", type=int, default=8, help="samples per sign and target")
    p.add_argument("--max-new-tokens", type=int, default=50)
    p.add_argument("--unsupervised", type=int, default=0,
                   help="also steer the first N SNMF features against their own contexts")
    p.add_argument("--judge", default="offline", choices=("offline", "llm"))
    add_llm_args(p, "--judge llm")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    p.add_argument("--overwrite", action="store_true",
                   help="replace results already at --out (default: refuse)")
    p.set_defaults(func=run)
    return p


def _configs(args):
    from snmf_jax.evaluate._compare import CompareConfig
    from snmf_jax.evaluate._steering import SteeringConfig
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    if args.layer < 0:
        raise ValueError(f"--layer must be >= 0; got {args.layer}")
    if args.concepts < 0 or args.concepts == 1:
        raise ValueError(f"--concepts must be 0 (all) or >= 2 (a concept is detected "
                         f"against the others); got {args.concepts}")
    _check_flags(args)
    if args.judge == "llm":
        check_llm_args(args, "--judge llm")
    for name in ("samples", "max_new_tokens", "sae_tokens", "sae_k", "max_iter"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1; got {getattr(args, name)}")
    if not 0 < args.sparsity <= 1:
        raise ValueError(f"--sparsity must be in (0, 1]; got {args.sparsity}")
    try:
        compare = CompareConfig(methods=methods, rank=args.rank, sparsity=args.sparsity,
                                max_iter=args.max_iter, sae_width=args.sae_width,
                                sae_k=args.sae_k, sae_tokens=args.sae_tokens,
                                unsupervised=args.unsupervised, seed=args.seed)
        signs = {"+": (1,), "-": (-1,), "+-": (1, -1)}[args.signs]
        steering = None if args.no_steer else SteeringConfig(
            targets=tuple(args.targets), signs=signs, n_samples=args.samples,
            max_new_tokens=args.max_new_tokens, seed=args.seed)
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
    for t in args.targets:
        _checks.real("--targets", t, lo=0, lo_open=True)
    _outputs.check_outputs(
        [_outputs.Output("--out", args.out, ("results.md", "results.json", "steering.png"))],
        inputs={"--dataset": args.dataset if args.dataset != "concepts" else None,
                "--model": args.model}, overwrite=args.overwrite)


def _dataset(args):
    from snmf_jax.activations import read_dataset
    from snmf_jax.activations._text import TextDataset
    data = read_dataset(args.dataset)
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


def run(args: argparse.Namespace) -> int:
    compare, steering = _configs(args)
    data = _dataset(args)
    from snmf_jax.models import load_model
    model = load_model(args.model, progress=not args.no_progress)
    from snmf_jax.evaluate._compare import compare_methods
    with contextlib.ExitStack() as stack:
        judge = None
        if args.judge == "llm" and steering is not None:
            from snmf_jax.evaluate._steering import LLMSteeringJudge
            judge = LLMSteeringJudge(llm_judge(args, stack))
        comp = compare_methods(model, data, layer=args.layer, config=compare, steering=steering,
                               judge=judge, progress=not args.no_progress)
    from snmf_jax.evaluate._outputs import write_comparisons
    label = f"{model.name or args.model} L{args.layer}"
    command = "snmf-jax " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    write_comparisons(args.out, {label: comp}, command=command)
    print(f"wrote {args.out}/results.md, results.json" + ("" if steering is None
                                                          else ", steering.png"))
    return 0
