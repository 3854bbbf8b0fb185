"""`snmf-jax demo`: the whole job on a real model, end to end.

Loads SmolLM2-135M-Instruct (offline, from its package), exports one
layer's MLP activations over the bundled concept dataset, factorizes them,
shows what each feature responds to and promotes, and steers the model with
the most concept-specific features at a calibrated KL.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "demo", help="export -> factorize -> interpret -> steer on a real model",
        description=__doc__)
    p.add_argument("--model", default="smollm2-135m", help="preset, GGUF file or HF folder")
    p.add_argument("--layer", type=int, default=None, help="layer (default: the middle one)")
    p.add_argument("--rank", type=int, default=40, help="features K")
    p.add_argument("--sparsity", type=float, default=0.01, help="keep-fraction of neurons")
    p.add_argument("--max-iter", type=int, default=300)
    p.add_argument("--kl", type=float, default=0.25, help="KL target of the steering demo")
    p.add_argument("--steer", type=int, default=3, help="features to steer with")
    p.add_argument("--prompt", default="I think that")
    p.add_argument("--out", default="runs/demo", help="where the features are saved")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)
    return p


def _cell(s: str, width: int) -> str:
    s = " ".join(s.split())
    return s if len(s) <= width else s[: width - 1] + "…"


def _check_args(args: argparse.Namespace) -> None:
    """Fails before any work on settings the fit or the steering would refuse later."""
    checks = (
        ("--rank", args.rank, args.rank >= 1, "an integer >= 1"),
        ("--sparsity", args.sparsity, 0.0 < args.sparsity <= 1.0, "a fraction in (0, 1]"),
        ("--max-iter", args.max_iter, args.max_iter >= 1, "an integer >= 1"),
        ("--kl", args.kl, 0.0 < args.kl < float("inf"), "a finite KL target > 0"),
        ("--steer", args.steer, 0 <= args.steer <= args.rank, "in [0, --rank]"),
        ("--layer", args.layer, args.layer is None or args.layer >= 0, "a layer index >= 0"),
        ("--prompt", args.prompt, bool(args.prompt.strip()), "a non-empty prompt"),
    )
    for flag, value, ok, expected in checks:
        if not ok:
            raise ValueError(f"{flag} must be {expected}; got {value!r}")


def run(args: argparse.Namespace) -> int:
    _check_args(args)
    import snmf_jax as sj
    from snmf_jax import activations, interpret, models, steer

    t0 = time.perf_counter()
    print(f"[1/4] loading {args.model} ...")
    model = models.load_model(args.model)
    cfg = model.config
    layer = cfg.n_layers // 2 if args.layer is None else args.layer
    if layer >= cfg.n_layers:
        raise ValueError(f"--layer must be in [0, {cfg.n_layers - 1}] for {args.model}; "
                         f"got {layer}")
    data = activations.load_concepts()
    print(f"      {cfg.family}, {cfg.n_layers} layers, d_mlp={cfg.d_mlp}; "
          f"{len(data.texts)} sentences over {len(data.label_names)} concepts")

    print(f"[2/4] exporting layer {layer} mlp_hidden activations ...")
    acts = activations.export_activations(model, data, layers=layer)
    print(f"      X: {acts.X.shape[0]} tokens x {acts.X.shape[1]} neurons")

    print(f"[3/4] SNMF: rank {args.rank}, keep {args.sparsity:.0%} of neurons ...")
    result = sj.fit(acts.X, rank=args.rank, sparsity=args.sparsity, max_iter=args.max_iter,
                    seed=args.seed, metadata={"model": model.name, "layer": layer,
                                              "site": "mlp_hidden", "dataset": "concepts"})
    out = result.save(args.out)
    rel = result.loss / float(np.sum(acts.X.astype(np.float64) ** 2))
    print(f"      {result.n_iter} iterations, relative error {rel:.3f}; saved to {out}")

    proj = interpret.vocab_projection(model, result.features, layer=layer, k=5)
    summary = interpret.summarize_features(
        result.codes, labels=acts.labels, label_names=acts.label_names, projection=proj,
        decode=lambda t: model.tokenizer.decode([t]), k=10)
    summary.sort(key=lambda s: -s.purity)
    print(f"\n  {'feat':>4}  {'concept of top-10 tokens':<26} {'top activating token':<44} promotes")
    for s in summary:
        ctx = acts.context(int(s.top_rows[0]), window=20)
        print(f"  {s.index:>4}  {_cell(f'{s.label} ({s.purity:.0%})', 26):<26} "
              f"{_cell(ctx, 44):<44} {_cell(' '.join(map(repr, s.promoted[:4])), 40)}")

    picks = [s.index for s in summary[: args.steer]]
    print(f"\n[4/4] steering with features {picks} at KL {args.kl} on {args.prompt!r} ...")
    dirs = steer.feature_directions(model, result.features, layer=layer, indices=picks)
    pos, neg = steer.calibrate_both(model, dirs, targets=(args.kl,), prompt=args.prompt,
                                    progress=False)
    base = steer.generate(model, args.prompt, max_new_tokens=20).text
    print(f"  unsteered: {_cell(base, 100)}")
    for cal, sign in ((pos, "+"), (neg, "-")):
        gen = steer.generate(model, args.prompt, cal.patch(dirs, args.kl), max_new_tokens=20)
        for i, k in enumerate(picks):
            label = next(s.label for s in summary if s.index == k)
            note = "" if cal.reachable[i, 0] else " (target KL not reached)"
            print(f"  {sign}feature {k:<3} ({_cell(label, 18)}, α={cal.sign * cal.alphas[i, 0]:+.1f})"
                  f"{note}: {_cell(gen.texts[i][0][0], 80)}")
    print(f"\ndone in {time.perf_counter() - t0:.0f} s")
    return 0
