"""`snmf-jax hierarchy`: fit a hierarchical SNMF, print its concept tree, write JSON."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from snmf_jax.cli._options import field_choices, signature_default


def register(subparsers) -> None:
    """Adds the `hierarchy` subcommand (defaults: the library's)."""
    from snmf_jax.factorize import fit_hierarchical  # pylint: disable=g-import-not-at-top
    from snmf_jax.factorize import FitConfig  # pylint: disable=g-import-not-at-top
    from snmf_jax.interpret import concept_tree  # pylint: disable=g-import-not-at-top
    fit_default = lambda name: signature_default(fit_hierarchical, name)
    tree_default = lambda name: signature_default(concept_tree, name)
    p = subparsers.add_parser(
        "hierarchy", help="hierarchical SNMF and concept trees",
        description=(
            "Fit a hierarchy X ≈ C0 W1 ... WL ΦL: level 0 is the SNMF of the activations, "
            "each further level the SNMF of the features below. SOURCE is an activation "
            "store (level 0 is fitted, in memory or --streaming) or an SNMF result folder "
            "(used as level 0; --store then labels the tree's nodes). Writes the hierarchy "
            "to --out (hierarchy.safetensors + hierarchy.json), the concept tree to "
            "OUT/tree.json, and prints the tree."),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("source", help="activation store directory or SNMF result folder")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--ranks", type=int, nargs="+", required=True,
                   help="features per level, e.g. 400 200 100; from a result its rank may "
                        "be left out")
    p.add_argument("--sparsity", type=float, nargs="+", default=[fit_default("sparsity")],
                   help="keep-fraction, one for all levels or one per level")
    p.add_argument("--store", default=None,
                   help="activation store for token labels (and fine-tuning) when SOURCE "
                        "is a result")
    p.add_argument("--layer", type=int, default=None, help="layer of a multi-layer store")
    p.add_argument("--init", choices=field_choices(FitConfig, "init"),
                   default=fit_default("init"),
                   help="initial codes of level 0")
    p.add_argument("--seed", type=int, default=fit_default("seed"), help="seed of level 0")
    p.add_argument("--restarts", type=int, default=fit_default("restarts"),
                   help="fits per upper level, best kept")
    p.add_argument("--max-iter", type=int, default=fit_default("max_iter"),
                   help="iteration budget of every level")
    p.add_argument("--streaming", action="store_true", help="stream level 0 from the store")
    p.add_argument("--finetune-steps", type=int, default=fit_default("finetune_steps"),
                   help="Adam steps of the joint fine-tune (0: none)")
    p.add_argument("--checkpoint-dir", default=None,
                   help="resume folder (default OUT/checkpoint)")
    p.add_argument("--threshold", type=float, default=tree_default("threshold"),
                   help="child kept when its link >= threshold x the parent's largest")
    p.add_argument("--max-children", type=int, default=tree_default("max_children"),
                   help="children kept per node of the tree")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a hierarchy already at --out (default: refuse)")
    p.set_defaults(func=run)


def run(args) -> int:
    import numpy as np  # pylint: disable=g-import-not-at-top
    from snmf_jax.activations import ActivationStore  # pylint: disable=g-import-not-at-top
    from snmf_jax.factorize import (HierarchicalResult, SNMFResult,  # pylint: disable=g-import-not-at-top
                                    fit_hierarchical)
    from snmf_jax import interpret  # pylint: disable=g-import-not-at-top

    from snmf_jax import _checks  # pylint: disable=g-import-not-at-top

    from snmf_jax import _outputs  # pylint: disable=g-import-not-at-top

    # The tree settings are used after the fit; check them before it.
    _checks.real("--threshold", args.threshold, lo=0, hi=1)
    _checks.integer("--max-children", args.max_children, lo=1)
    for r in args.ranks:
        _checks.integer("--ranks", r, lo=1)
    for v in args.sparsity:
        _checks.real("--sparsity", v, lo=0, hi=1, lo_open=True)
    _checks.integer("--restarts", args.restarts, lo=1)
    _checks.integer("--max-iter", args.max_iter, lo=1)
    _checks.integer("--finetune-steps", args.finetune_steps, lo=0)
    _checks.integer("--seed", args.seed, lo=-2 ** 63, hi=2 ** 63 - 1)
    if args.layer is not None:
        _checks.integer("--layer", args.layer, lo=0)
    outs = [_outputs.Output("--out", args.out, (*HierarchicalResult.FILES, "tree.json"))]
    _outputs.check_outputs(outs, overwrite=True)  # writable (existence: below)
    src = Path(args.source)
    if not src.exists():
        raise FileNotFoundError(f"source {str(src)!r} does not exist")
    if not (src / "snmf.safetensors").is_file():  # a store: its manifest, named if bad
        ActivationStore(src, allow_incomplete=True)  # reads and checks only the manifest
    _outputs.check_outputs(outs, inputs={"SOURCE": args.source, "--store": args.store},
                           overwrite=args.overwrite)
    out = Path(args.out)
    sparsity = args.sparsity[0] if len(args.sparsity) == 1 else args.sparsity
    common = dict(sparsity=sparsity, init=args.init, seed=args.seed, restarts=args.restarts,
                  max_iter=args.max_iter, finetune_steps=args.finetune_steps,
                  checkpoint_dir=args.checkpoint_dir or out / "checkpoint",
                  progress=not args.no_progress)
    if (src / "snmf.safetensors").is_file():
        level0 = SNMFResult.load(src)
        ranks = list(args.ranks)
        if ranks[0] != level0.rank:
            ranks = [level0.rank] + ranks
        store = ActivationStore(args.store) if args.store else None
        if args.finetune_steps and store is None:
            raise ValueError("--finetune-steps from a result needs --store")
        x = (store.rows(0, store.n_rows, layer=args.layer) if store is not None
             else np.empty((0, level0.features.shape[1]), np.float32))  # unused: level 0 given
        if store is not None:
            store.check_identity((level0.metadata or {}).get("store"), args.layer,
                                 what=f"SOURCE {str(src)!r}")
        if store is not None and store.n_rows != level0.codes.shape[0]:
            raise ValueError(f"--store has {store.n_rows} rows but the "
                             f"result's codes have {level0.codes.shape[0]}")
        h = fit_hierarchical(x, ranks, level0=level0, **common)
        ident = (level0.metadata or {}).get("store")
    else:
        store = ActivationStore(src)
        x = src if args.streaming else store.rows(0, store.n_rows, layer=args.layer)
        h = fit_hierarchical(x, args.ranks, layer=args.layer, **common)
        ident = store.identity(args.layer)
    if ident is not None:  # the store and layer it was fitted on, checked by readers
        h = dataclasses.replace(h, metadata={**h.metadata, "store": ident,
                                             "layer": ident.get("layer"),
                                             "site": ident.get("site")})
    h.save(out)
    tokens = interpret.token_strings(store) if store is not None else None
    tree = interpret.concept_tree(h, tokens, threshold=args.threshold,
                              max_children=args.max_children)
    interpret.save_tree(tree, out / "tree.json")
    print(interpret.format_tree(tree))
    ft = h.metadata.get("finetune")
    if ft:
        print(f"\nproduct loss / ||X||^2: greedy {ft['product_loss_before']:.5f} -> "
              f"fine-tuned {ft['product_loss_after']:.5f}", file=sys.stderr)
    print(f"wrote {out} (hierarchy) and {out / 'tree.json'}", file=sys.stderr)
    return 0
