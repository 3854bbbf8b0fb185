"""`snmf-jax export`: write a model's activations over a dataset to a store.

    snmf-jax export --model smollm2-135m --layers 6 --dataset concepts --out runs/acts
"""

from __future__ import annotations

import argparse

from snmf_jax.cli._options import signature_default


def _default(name: str):
    """export_activations' own default (flags never restate it)."""
    from snmf_jax.activations import export_activations
    return signature_default(export_activations, name)


def _layers(text: str) -> list[int]:
    try:
        return [int(x) for x in text.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--layers takes integers (e.g. 6 or 4,6,8); got {text!r}") from None


def register(subparsers) -> argparse.ArgumentParser:
    """Adds the `export` subcommand to an argparse subparsers object."""
    p = subparsers.add_parser(
        "export", help="export MLP activations of a model to an on-disk store",
        description=(
            "Run a model over a text dataset and write the activations of some "
            "layers to a chunked safetensors store (resumable: rerun the same "
            "command after an interruption)."),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", required=True,
                   help="preset name (smollm2-135m, gemma3-270m), HF folder or .gguf")
    p.add_argument("--layers", required=True, type=_layers, nargs="+",
                   help="layer indices, e.g. 6 or 4,6,8 or 4 6 8")
    p.add_argument("--dataset", default="concepts",
                   help="'concepts' (the package's dataset), a .json concept file, "
                        ".jsonl, or a text file (default: concepts)")
    p.add_argument("--out", required=True, help="store directory")
    p.add_argument("--site", default=_default("site"),
                   choices=("mlp_hidden", "mlp_out", "resid_post"))
    p.add_argument("--batch-size", type=int, default=_default("batch_size"),
                   help="documents per forward")
    p.add_argument("--max-length", type=int, default=None,
                   help="truncate documents to this many tokens (default: model context)")
    p.add_argument("--chunk-rows", type=int, default=_default("chunk_rows"),
                   help="rows per store chunk")
    p.add_argument("--dtype", default=_default("dtype"), choices=("float32", "float16"),
                   help="stored dtype")
    p.add_argument("--keep-bos", action="store_true", help="keep BOS rows")
    p.add_argument("--text-field", default=None, help="text key of .json/.jsonl records")
    p.add_argument("--label-field", default=None, help="label key of .json/.jsonl records")
    p.add_argument("--split", default="lines", choices=("lines", "paragraphs"),
                   help="plain text: one document per line or per paragraph")
    p.add_argument("--limit", type=int, default=None,
                   help="use only the first N documents (quick runs)")
    p.add_argument("--overwrite", action="store_true",
                   help="delete an existing store at --out instead of resuming it")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Executes `snmf-jax export`."""
    import dataclasses

    from snmf_jax.activations import export_activations, load_dataset
    from snmf_jax.models import load_model

    from pathlib import Path

    from snmf_jax import _checks

    layers = [l for group in args.layers for l in group]
    # Checked before the dataset and the model are loaded.
    for l in layers:
        _checks.integer("--layers", l, lo=0)
    dup = sorted({l for l in layers if layers.count(l) > 1})
    if dup:
        raise ValueError(f"--layers lists layer {dup[0]} more than once; got {layers}")
    _checks.integer("--batch-size", args.batch_size, lo=1)
    _checks.integer("--chunk-rows", args.chunk_rows, lo=1)
    if args.max_length is not None:
        _checks.integer("--max-length", args.max_length, lo=1)
    if args.limit is not None:
        _checks.integer("--limit", args.limit, lo=1)
    from snmf_jax import _outputs
    # files=(): an existing store is resumed (or, with --overwrite, replaced) by
    # the writer's own verified-manifest policy; here: inputs and writability.
    _outputs.check_outputs(
        [_outputs.Output("--out", args.out, ())],
        inputs={"--dataset": args.dataset if args.dataset != "concepts" else None,
                "--model": args.model if Path(args.model).exists() else None},
        overwrite=args.overwrite)
    dataset = load_dataset(args.dataset, text_field=args.text_field,
                           label_field=args.label_field, split=args.split)
    if args.limit is not None:
        n = min(args.limit, len(dataset))
        dataset = dataclasses.replace(
            dataset, texts=dataset.texts[:n],
            labels=None if dataset.labels is None else dataset.labels[:n])
    model = load_model(args.model, progress=not args.no_progress)
    store = export_activations(
        model, dataset, layers, site=args.site,
        batch_size=args.batch_size, max_length=args.max_length,
        keep_bos=args.keep_bos, out=args.out, chunk_rows=args.chunk_rows,
        dtype=args.dtype, overwrite=args.overwrite, progress=not args.no_progress)
    print(store)
    return 0
