"""`snmf-jax fit`: factorize stored activations (in memory, streamed, or
sharded over devices and processes)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from pathlib import Path

import numpy as np

from snmf_jax.cli._options import add_dataclass_arguments, field_default, from_args
from snmf_jax.factorize import FitConfig, OnlineConfig

log = logging.getLogger("snmf_jax")


def register(subparsers) -> None:
    """Adds the `fit` subcommand."""
    p = subparsers.add_parser(
        "fit", help="factorize activations X ≈ C Φ (SNMF)",
        description=(
            "Factorize activations X (tokens x neurons) into nonnegative codes and "
            "sparse features. INPUT is an activation store directory or a .safetensors "
            "file holding a 2-D tensor 'X'. The result (features, codes, losses) is "
            "written to --out as snmf.safetensors + snmf.json."),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("input", help="activation store directory or .safetensors file")
    p.add_argument("--out", required=True, help="output folder for the result")
    add_dataclass_arguments(p, FitConfig)  # one flag per field, same defaults
    p.add_argument("--layer", type=int, default=None, help="layer of a multi-layer store")
    p.add_argument("--key", default="X", help="tensor name in a .safetensors input")
    p.add_argument("--checkpoint-dir", default=None,
                   help="checkpoint folder (resumed if it holds a checkpoint); with "
                        "--streaming it also holds the codes (default OUT/stream)")
    p.add_argument("--streaming", action="store_true",
                   help="stream the input chunk by chunk each iteration (data larger "
                        "than memory); codes are kept on disk")
    p.add_argument("--chunk-rows", type=int, default=4096,
                   help="rows per chunk when streaming a .safetensors file")
    p.add_argument("--shard", action="store_true",
                   help="shard tokens over all local devices (one process)")
    g = p.add_argument_group("multi-process (one command per process)")
    g.add_argument("--coordinator", default=None, help="host:port of process 0")
    g.add_argument("--num-processes", type=int, default=None)
    g.add_argument("--process-id", type=int, default=None)
    g.add_argument("--local-devices", type=int, default=None,
                   help="CPU devices per process (testing on one machine)")
    o = p.add_argument_group("online (mini-batches, a few passes; see docs/guides/online.md)")
    o.add_argument("--online", action="store_true",
                   help="fit from mini-batches (fit_online): memory independent of the rows; "
                        "--init picks the features of the first batches (default kmeans), "
                        "--checkpoint-every counts batches, --max-iter/--patience/--tol "
                        "do not apply")
    online = lambda name: field_default(OnlineConfig, name)
    o.add_argument("--passes", type=int, default=online("passes"), help="passes over the rows")
    o.add_argument("--batch-size", type=int, default=online("batch_size"),
                   help="rows per mini-batch")
    o.add_argument("--forget", type=float, default=online("forget"),
                   help="forgetting exponent rho: old statistics scaled by (1 - 1/t)^rho")
    o.add_argument("--code-iters", type=int, default=online("code_iters"),
                   help="multiplicative code updates per mini-batch")
    o.add_argument("--codes", action="store_true",
                   help="also write every row's codes for the final features to OUT/codes "
                        "(one more pass)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a result already at --out (default: refuse)")
    # The batch fits start from random codes, the online fit from k-means++
    # centroids; None lets `run` pick the default of the fit chosen.
    p.set_defaults(func=run, init=None)


def _source(args):
    from snmf_jax.factorize import SafetensorsSource, as_source  # pylint: disable=g-import-not-at-top
    path = Path(args.input)
    if not path.exists():
        raise FileNotFoundError(f"input {str(path)!r} does not exist")
    if path.is_file():
        return SafetensorsSource(path, args.key, args.chunk_rows)
    return as_source(path, layer=args.layer)


def _load_all(src) -> np.ndarray:
    return np.concatenate([np.asarray(src.chunk(i), np.float32) for i in range(src.num_chunks)])


def _online_options(args):
    return OnlineConfig(
        rank=args.rank, sparsity=args.sparsity, batch_size=args.batch_size, passes=args.passes,
        init=args.init or field_default(OnlineConfig, "init"), seed=args.seed,
        forget=args.forget,
        code_iters=args.code_iters, reg=args.reg, mu_eps=args.mu_eps,
        checkpoint_every=args.checkpoint_every)


def run(args) -> int:
    if args.online:
        online = _online_options(args)  # checked before any work
        if args.streaming or args.shard:
            raise ValueError("--online streams its own mini-batches; drop --streaming/--shard "
                             "(--online with --coordinator or --local-devices shards each batch)")
    elif args.codes:
        raise ValueError("--codes applies to --online (the other fits always write codes)")
    args.init = args.init or field_default(FitConfig, "init")
    opts = from_args(FitConfig, args)  # every option checked before any work
    from snmf_jax import _checks, _outputs  # pylint: disable=g-import-not-at-top
    from snmf_jax.factorize import SNMFResult  # pylint: disable=g-import-not-at-top
    _outputs.check_outputs([_outputs.Output("--out", args.out, SNMFResult.FILES)],
                           inputs={"INPUT": args.input}, overwrite=args.overwrite)
    _checks.integer("--chunk-rows", args.chunk_rows, lo=1)
    if args.layer is not None:
        _checks.integer("--layer", args.layer, lo=0)
    if args.local_devices is not None:
        _checks.integer("--local-devices", args.local_devices, lo=1)
    multi = args.coordinator is not None
    if not multi and (args.num_processes is not None or args.process_id is not None):
        raise ValueError("--num-processes/--process-id need --coordinator")
    if multi:
        if args.num_processes is None or args.process_id is None:
            raise ValueError("--coordinator needs --num-processes and --process-id")
        if args.streaming:
            raise ValueError("--streaming runs in one process; drop "
                             "--coordinator or --streaming")
        from snmf_jax.factorize import initialize_distributed  # pylint: disable=g-import-not-at-top
        initialize_distributed(args.coordinator, args.num_processes, args.process_id,
                               local_device_count=args.local_devices)
    elif args.local_devices is not None:
        import jax  # pylint: disable=g-import-not-at-top
        jax.config.update("jax_num_cpu_devices", args.local_devices)

    import jax  # pylint: disable=g-import-not-at-top
    from snmf_jax import factorize  # pylint: disable=g-import-not-at-top
    # barrier: the CLI's multi-process sync between the per-process code writes; not API.
    from snmf_jax.factorize._distributed import barrier  # pylint: disable=g-import-not-at-top

    out = Path(args.out)
    src = _source(args)
    metadata = {"input": str(Path(args.input).resolve()), "layer": args.layer}
    store = getattr(src, "store", None)
    if store is not None:  # the identity of the store and layer, checked by its readers
        metadata.update(layer=src.layer, site=store.site, store=store.identity(src.layer))
    kw = dict(options=opts, progress=not args.no_progress and jax.process_index() == 0,
              metadata=metadata)
    t0 = time.perf_counter()
    if args.online:
        mesh = factorize.global_mesh() if (multi or args.local_devices) else None
        result = factorize.fit_online(
            src, mesh=mesh, checkpoint_dir=args.checkpoint_dir,
            codes=(out / "codes") if args.codes and jax.process_index() == 0 else False,
            **{**kw, "options": online})
    elif args.streaming:
        result = factorize.fit_streaming(
            src, checkpoint_dir=args.checkpoint_dir or out / "stream", **kw)
    elif multi:
        rows, start = factorize.load_process_rows(src)
        result = factorize.fit_sharded(rows, mesh=factorize.global_mesh(),
                                      checkpoint_dir=args.checkpoint_dir, **kw)
        # Codes stay with their process: one chunk per process in OUT/codes.
        codes_dir = out / "codes"
        factorize.CodesStore.write_chunk(codes_dir, jax.process_index(), result.codes)
        barrier("snmf-jax fit: codes written")
        if jax.process_index() == 0:
            factorize.CodesStore.finish(codes_dir, opts.rank, store=metadata.get("store"))
        result = dataclasses.replace(result, codes=None, metadata={
            **result.metadata, "codes_store": "codes"})
    else:
        mesh = None
        if args.shard:
            mesh = factorize.global_mesh()
        result = factorize.fit(_load_all(src), mesh=mesh, checkpoint_dir=args.checkpoint_dir, **kw)
    seconds = time.perf_counter() - t0
    if jax.process_index() == 0:
        result.save(out)
        summary = {"out": str(out), "loss": result.loss, "best_iter": result.best_iter,
                   "n_iter": result.n_iter, "converged": result.converged,
                   "seconds": round(seconds, 3)}
        if args.online:
            info = result.metadata["online"]
            summary = {"out": str(out), "batches": info["batches"],
                       "rows_seen": info["rows_seen"], "pass_mean_loss": info["pass_mean_loss"],
                       "seconds": round(seconds, 3)}
        print(json.dumps(summary))
    if multi:
        barrier("snmf-jax fit: done")
    return 0

