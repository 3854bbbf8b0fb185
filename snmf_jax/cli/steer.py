"""`snmf-jax steer`: calibrate one feature to a KL target and print continuations."""

from __future__ import annotations

import argparse

import numpy as np

from snmf_jax._text import printable
from snmf_jax.cli._options import signature_default


def _gen_default(name: str):
    """steer.generate's own default (flags never restate it)."""
    from snmf_jax.steer import generate
    return signature_default(generate, name)


# Upper bounds checked before the model loads (the model's own context length
# is checked by `generate` as soon as it is known).
MAX_SAMPLES = 1024
MAX_NEW_TOKENS = 1 << 16


def register(subparsers) -> argparse.ArgumentParser:
    """Adds the `steer` subcommand."""
    p = subparsers.add_parser(
        "steer", help="steer a model with an SNMF feature at a KL-calibrated strength",
        description="Calibrates +alpha and -alpha of one feature so that the next-token KL "
                    "on the calibration prompt hits --kl, then prints the unsteered and both "
                    "steered continuations of --prompt.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", required=True, help="preset name, HF folder or .gguf file")
    p.add_argument("--features", required=True, help="folder of a saved SNMFResult")
    p.add_argument("--feature", type=int, required=True, help="feature index (row of Φ)")
    p.add_argument("--layer", type=int, default=None,
                   help="layer the features were fitted on (default: read from the result)")
    p.add_argument("--kl", type=float, default=0.1, help="KL target in nats")
    from snmf_jax.steer import DEFAULT_PROMPT, feature_directions
    p.add_argument("--prompt", action="append", default=None,
                   help=f"prompt to continue (repeatable; default {DEFAULT_PROMPT!r})")
    p.add_argument("--calibration-prompt", default=DEFAULT_PROMPT,
                   help="prompt whose next-token KL is calibrated")
    p.add_argument("--site", default=signature_default(feature_directions, "site"),
                   choices=("auto", "mlp_hidden", "mlp_out"),
                   help="auto: mlp_out for Gemma 2/3 (post-feedforward norm), else mlp_hidden")
    p.add_argument("--where", default=_gen_default("where"), choices=("all", "prompt", "generated"),
                   help="positions steered")
    p.add_argument("--max-new-tokens", type=int, default=_gen_default("max_new_tokens"),
                   help="tokens to generate")
    p.add_argument("--temperature", type=float, default=_gen_default("temperature"),
                   help="0: greedy")
    p.add_argument("--top-k", type=int, default=_gen_default("top_k"),
                   help="keep the k most likely tokens (0: off)")
    p.add_argument("--top-p", type=float, default=_gen_default("top_p"),
                   help="nucleus mass (1: off)")
    p.add_argument("--samples", type=int, default=_gen_default("n_samples"),
                   help="samples per variant")
    p.add_argument("--seed", type=int, default=_gen_default("seed"),
                   help="sampling seed")
    p.add_argument("--chat", action="store_true", help="use the tokenizer's chat template")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    p.set_defaults(func=run)
    return p


def _layer_of(result, layer: int | None) -> int:
    meta = getattr(result, "metadata", None) or {}
    site = meta.get("site")
    if site is not None and site != "mlp_hidden":
        raise ValueError(f"the features were fitted at site {site!r}; steering takes features "
                         "over the MLP's hidden neurons (site mlp_hidden)")
    store = meta.get("store") if isinstance(meta.get("store"), dict) else {}
    for source in (meta, store, getattr(result, "settings", None) or {}):
        if source.get("layer") is not None:
            recorded = int(source["layer"])
            if layer is not None and layer != recorded:
                raise ValueError(f"--layer {layer} disagrees with the layer recorded in the "
                                 f"result ({recorded})")
            return recorded
    if layer is None:
        raise ValueError("the result does not record its layer; pass --layer")
    return layer


def _load_model(name: str, progress: bool = True):
    from snmf_jax.models import load_model
    return load_model(name, progress=progress)


def run(args: argparse.Namespace) -> int:
    from snmf_jax.factorize import SNMFResult
    from snmf_jax.steer import calibrate_both, feature_directions, generate
    # check_sampling: the sampler's own validator, run on the flags before the model loads.
    from snmf_jax.steer._sampling import check_sampling
    from snmf_jax import _checks

    # Every setting is checked before the result and the model are loaded.
    _checks.real("--kl", args.kl, lo=0, lo_open=True)
    _checks.integer("--samples", args.samples, lo=1, hi=MAX_SAMPLES)
    _checks.integer("--max-new-tokens", args.max_new_tokens, lo=1, hi=MAX_NEW_TOKENS)
    _checks.integer("--seed", args.seed, lo=-2 ** 63, hi=2 ** 63 - 1)
    if args.layer is not None:
        _checks.integer("--layer", args.layer, lo=0)
    for flag, prompts in (("--prompt", args.prompt or []),
                          ("--calibration-prompt", [args.calibration_prompt])):
        for text in prompts:
            if not str(text).strip():
                raise ValueError(f"{flag} must be a non-empty prompt; got {text!r}")
    try:
        check_sampling(args.temperature, args.top_k, args.top_p)
    except ValueError as e:
        raise ValueError(f"--{str(e).replace('_', '-')}") from None
    if args.feature < 0:
        raise ValueError(f"--feature must be a feature index >= 0; got {args.feature}")
    result = SNMFResult.load(args.features)
    layer = _layer_of(result, args.layer)
    k = result.features.shape[0]
    if not 0 <= args.feature < k:
        raise ValueError(f"--feature must be in [0, {k}); got {args.feature}")
    model = _load_model(args.model, **({"progress": False} if args.no_progress else {}))
    dirs = feature_directions(model, result.features, layer=layer, indices=[args.feature],
                              site=args.site)
    pos, neg = calibrate_both(model, dirs, targets=(args.kl,), prompt=args.calibration_prompt,
                              where="prompt" if args.where == "prompt" else "all",
                              chat=args.chat, progress=not args.no_progress)
    a_pos, a_neg = float(pos.alphas[0, 0]), float(neg.alphas[0, 0])
    print(f"feature {args.feature} | layer {layer} {dirs.site} | target KL {args.kl:g} "
          f"on {args.calibration_prompt!r}")
    for name, cal, a in (("+", pos, a_pos), ("-", neg, a_neg)):
        note = "" if cal.reachable[0, 0] else "  (target unreachable: best KL shown)"
        print(f"  {name}alpha = {a:.4g}  KL = {float(cal.kl[0, 0]):.4g}{note}")
    # One batch: unsteered, +alpha, -alpha.
    vec = np.repeat(dirs.vectors, 3, axis=0)  # (3, dim)
    from snmf_jax.steer import make_patch
    patch = make_patch(layer, dirs.site, vec, scale=np.array([0.0, a_pos, -a_neg], np.float32))
    prompts = args.prompt or [args.calibration_prompt]
    # An α whose logits overflow would decode as pad tokens: refuse it instead.
    from snmf_jax.steer import check_steered_logits
    check_steered_logits(model, prompts, patch, chat=args.chat)
    gen = generate(model, prompts, patch, where=args.where, max_new_tokens=args.max_new_tokens,
                   temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                   seed=args.seed, n_samples=args.samples, chat=args.chat)
    labels = ("unsteered", f"+{a_pos:.3g}", f"-{a_neg:.3g}")
    for j, prompt in enumerate(prompts):
        print(f"\nprompt: {prompt!r}")
        for i, label in enumerate(labels):
            for s in range(args.samples):
                text = printable(gen.texts[i][j][s])  # generated text: escape controls
                print(f"  [{label:>10}] {text}")
    return 0
