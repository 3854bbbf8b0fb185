"""`snmf-jax interpret`: the HTML feature browser of a fit (and its exports)."""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

from snmf_jax.cli._llm_args import add_llm_args, check_llm_args, llm_judge
from snmf_jax.cli._options import signature_default


def register(subparsers) -> argparse.ArgumentParser:
    """Adds the `interpret` subcommand."""
    p = subparsers.add_parser(
        "interpret", help="write the HTML feature browser of a fit",
        description="Top-activating contexts, vocabulary projection (through the final "
                    "norm), neurons, overlaps and labels of every feature, as one "
                    "self-contained HTML page; optionally the plots as PNG/SVG and a "
                    "Neuronpedia/SAEDashboard JSON export.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--features", required=True, help="folder of a saved SNMFResult")
    p.add_argument("--activations", required=True,
                   help="the activation store the features were fitted on")
    p.add_argument("--out", required=True, help="the HTML file to write")
    p.add_argument("--model", default=None,
                   help="preset, GGUF or HF folder for the vocabulary projection (default: "
                        "the store's model); 'none' skips it")
    p.add_argument("--layer", type=int, default=None,
                   help="layer of the features (default: recorded in the result or store)")
    from snmf_jax.report import feature_report  # pylint: disable=g-import-not-at-top
    default = lambda name: signature_default(feature_report, name)  # the library's
    p.add_argument("--contexts", type=int, default=default("k"), help="contexts per feature")
    p.add_argument("--window", type=int, default=default("window"),
                   help="tokens of context on each side")
    p.add_argument("--tokens", type=int, default=default("n_tokens"),
                   help="promoted/suppressed tokens")
    p.add_argument("--neurons", type=int, default=default("max_neurons"),
                   help="neurons listed per feature")
    p.add_argument("--tree", default=None, help="concept-tree JSON (snmf-jax/concept-tree)")
    p.add_argument("--descriptions", default=None,
                   help='JSON {"<feature>": "description", ...} or a list')
    p.add_argument("--describe", action="store_true",
                   help="write each feature's descriptions with an LLM (the paper's input-centric "
                        "one from its top contexts, output-centric from its promoted tokens); "
                        "needs --llm-url and --llm-model, or --llm-gguf; --descriptions win")
    add_llm_args(p, "--describe")
    p.add_argument("--steered", default=None,
                   help='JSON {"<feature>": ["text", {"text":..., "sign": "+", "kl": 0.1}]}')
    p.add_argument("--scores", default=None, help='JSON {"<feature>": {"metric": value}}')
    p.add_argument("--plots", default=None, help="also write the plots as PNG and SVG here")
    p.add_argument("--neuronpedia", default=None, metavar="FOLDER",
                   help="also write the features as SAEDashboard's Neuronpedia batches "
                        "(FOLDER/batch-<n>.json, what Neuronpedia's importer reads)")
    p.add_argument("--title", default=None, help="page title")
    p.add_argument("--overwrite", action="store_true",
                   help="replace files already at --out or --plots "
                        "(default: refuse)")
    p.set_defaults(func=run)
    return p


def _json(path: str | None, what: str):
    if path is None:
        return None
    from snmf_jax import _io
    try:  # bounded, and a FIFO or device is refused before it is opened
        return _io.read_json(path)
    except (OSError, ValueError) as e:
        raise ValueError(f"--{what}: cannot read JSON from {path!r}: {e}")


def _layer(result, store, layer: int | None) -> int | None:
    recorded = (result.metadata or {}).get("layer")
    if recorded is None and len(store.layers) == 1:
        recorded = store.layers[0]
    if layer is not None and recorded is not None and int(recorded) != layer:
        raise ValueError(f"--layer {layer} disagrees with the recorded layer {recorded}")
    return layer if layer is not None else (None if recorded is None else int(recorded))


def _dataset_name(result, store) -> str:
    """The dataset's name: the fit's metadata, else the store's recorded source."""
    info = store.manifest.get("dataset")
    source = info.get("source") if isinstance(info, dict) else None
    return str((result.metadata or {}).get("dataset") or source or "")


def _marked(context: dict) -> str:
    """A context's text with its peak token marked <<like this>>."""
    toks, c = context["tokens"], context["center"]
    return ("".join(toks[:c]) + "<<" + toks[c] + ">>" + "".join(toks[c + 1:])).strip()


def describe_features(rep: dict, judge, *, n_contexts: int = 10, n_tokens: int = 20) -> None:
    """Fills each report feature's "description" that is not already set with the
    LLM's input-centric (top contexts) and output-centric (promoted tokens) ones."""
    todo = [e for e in rep["features"] if not e.get("description")]
    contexts = [[_marked(c) for c in e["contexts"][:n_contexts]] for e in todo]
    tokens = [[t for t, _ in e["pos"][:n_tokens]] for e in todo] if all(
        "pos" in e for e in todo) else None
    for entry, d in zip(todo, judge.describe_features(contexts, tokens)):
        entry["description"] = " · ".join(f"{k}: {v}" for k, v in d.items() if v)


def run(args: argparse.Namespace) -> int:
    from snmf_jax.activations import ActivationStore
    from snmf_jax.factorize import SNMFResult
    from snmf_jax import report

    from snmf_jax import _checks
    for flag, v, lo in (("--contexts", args.contexts, 1), ("--window", args.window, 0),
                        ("--tokens", args.tokens, 0), ("--neurons", args.neurons, 1)):
        _checks.integer(flag, v, lo=lo)
    if args.describe:
        check_llm_args(args, "--describe")
    from snmf_jax import _outputs
    plots = tuple(f"{n}.{fmt}" for n in ("loss", "codes", "overlap") for fmt in ("png", "svg"))
    _outputs.check_outputs(
        [_outputs.Output("--out", args.out), _outputs.Output("--plots", args.plots, plots),
         # A folder of batch-<n>.json; check_export_folder refuses one holding any
         # (Neuronpedia's importer reads every batch file), --overwrite or not.
         _outputs.Output("--neuronpedia", args.neuronpedia, ())],
        inputs={"--features": args.features, "--activations": args.activations,
                "--tree": args.tree, "--descriptions": args.descriptions,
                "--steered": args.steered, "--scores": args.scores},
        overwrite=args.overwrite)
    result = SNMFResult.load(args.features)
    store = ActivationStore(args.activations)
    store.check_identity((result.metadata or {}).get("store"), args.layer,
                         what=f"--features {args.features!r}")
    recorded_site = (result.metadata or {}).get("site")
    if recorded_site is not None and store.site is not None and recorded_site != store.site:
        raise ValueError(f"--features was fitted at site {recorded_site!r} but --activations "
                         f"holds {store.site!r}; pass the store it was fitted on")
    if result.codes is None:
        raise ValueError(f"--features: the result at {args.features!r} has no codes; "
                         "save the fit with its codes to browse its contexts")
    if result.codes.shape[0] != store.n_rows:
        raise ValueError(f"--features has codes for {result.codes.shape[0]} tokens but "
                         f"--activations holds {store.n_rows}; pass the store it was fitted on")
    layer = _layer(result, store, args.layer)
    if args.neuronpedia:
        if layer is None:
            raise ValueError("--neuronpedia: the layer is not recorded in the result or the "
                             "store; pass --layer (Neuronpedia names sources by it)")
        report.check_export_folder(args.neuronpedia)
    recorded = (result.metadata or {}).get("model")
    name = args.model or recorded or store.model_name
    model = None
    if name and str(name).lower() != "none":
        if layer is None:
            raise ValueError("the layer is not recorded in the result or the store; pass --layer")
        from snmf_jax.models import load_model
        if args.model:
            model = load_model(name, progress=False)
        else:  # a name read from a file: resolve it locally only, never download
            where = "the result's metadata" if recorded else "the store's manifest"
            try:
                model = load_model(str(name), progress=False, download=False)
            except (FileNotFoundError, ValueError, TypeError) as e:
                raise FileNotFoundError(
                    f"the model {str(name)!r:.80} named by {where} does not load from this "
                    f"machine ({e}); pass --model with a preset, GGUF file or folder, or "
                    f"--model none") from None
    title = args.title or f"SNMF features · {Path(args.features).name}"
    meta = {"features": str(args.features), "activations": str(args.activations),
            "site": store.site, **{k: v for k, v in (result.metadata or {}).items()
                                   if isinstance(v, (str, int, float))}}
    rep = report.feature_report(
        result.features, result.codes, store, model=model, layer=layer, losses=result.losses,
        k=args.contexts, window=args.window, n_tokens=args.tokens, max_neurons=args.neurons,
        descriptions=_json(args.descriptions, "descriptions"),
        steered=_json(args.steered, "steered"), scores=_json(args.scores, "scores"),
        tree=_json(args.tree, "tree"), title=title, meta=meta)
    if args.describe:
        with contextlib.ExitStack() as stack:
            describe_features(rep, llm_judge(args, stack))
    out = report.save_html(rep, args.out)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB, {len(rep['features'])} features)")
    if args.plots:
        paths = report.save_plots(report.overview_figures(result.codes, result.features,
                                                          result.losses), args.plots)
        print(f"wrote {len(paths)} plot files to {args.plots}")
    if args.neuronpedia:
        paths = report.save_neuronpedia(
            rep, args.neuronpedia, result.features, result.codes, store, model=model,
            layer=layer, model_id=name if model is not None else (
                (result.metadata or {}).get("model") or store.model_name or None),
            dataset=_dataset_name(result, store))
        print(f"wrote {len(paths)} Neuronpedia batch file(s) to {args.neuronpedia}")
    return 0
