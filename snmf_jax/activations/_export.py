"""Export a model's activations over a text dataset, in memory or to disk.

Plan of an export (all decided before the first forward pass, so that a
rerun makes the very same batches and can resume):

1. Tokenize every document the way `tokenizer.encode` does (BOS only where
   the model's tokenizer adds one) and
   truncate documents longer than `max_length` tokens (with a warning; the
   rest of such a document is dropped, not split into windows, so every row
   has its document's true left context).
2. Bucket documents by padded length: powers of two from `min_bucket` up to
   `max_length` (and `max_length` itself), so a dataset compiles a handful of
   shapes. Documents are ordered by (bucket, doc_id) and cut into batches of
   `batch_size`; a bucket's last batch is padded with dummy rows so every
   batch of a bucket has the same (batch_size, bucket) shape.
3. Run a jitted pass per batch that returns only the captured sites: the
   model's `embed` and `run_blocks` up to the deepest requested layer (no
   later blocks, no unembedding). With `mesh`, each batch is split over the
   mesh's data axis (data parallel) and the weights placed by their logical
   axes (`models.shard_params`); rows, order and values are those of one
   device.
4. Keep every real token except BOS (unless keep_bos) and padding; rows come
   out grouped by document in that (bucket, doc_id) order; `doc_ids`,
   `positions`, `token_ids` and `offsets` say where each row comes from.

Host memory: in memory, the result (n, d) per layer plus one batch; to disk,
one chunk buffer plus one batch, whatever the dataset size ("one batch" is
the forward pass's working set, a few (batch_size, bucket, d_mlp) arrays),
plus 12 bytes per token for the token ids and offsets of the plan.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

# length_buckets and tokenize_with_offsets are public through this module too.
from snmf_jax import _checks, _digest, _progress
from snmf_jax.activations._plan import (_Plan, _plan, length_buckets,  # noqa: F401
                                        tokenize_with_offsets)
from snmf_jax.activations._readers import load_dataset
from snmf_jax.activations._store import Activations, ActivationStore, STORE_DTYPES
from snmf_jax.activations._writer import StoreWriter
from snmf_jax.models import SITES, as_arrays, auto_mesh, embed, run_blocks, shard_params

_PROVENANCE = {"doc_ids": ("int32", ()), "positions": ("int32", ()),
               "token_ids": ("int32", ()), "offsets": ("int32", (2,))}


# ---------------------------------------------------------------------------
# The jitted capture.


@functools.partial(jax.jit, static_argnames=("config", "capture"))
def _capture(params, tokens, mask, *, config, capture):
    """Captured sites only, float32: tuple of (B, T, dim) in `capture` order.

    Runs the model's embedding and its blocks up to the deepest captured
    layer; the later blocks and the unembedding never run.
    """
    stop = max(layer for layer, _ in capture) + 1
    x = embed(params, tokens, config=config, attention_mask=mask)  # (B, T, D)
    _, caps, _ = run_blocks(params, x, config=config, stop=stop, attention_mask=mask,
                            capture=capture)
    return tuple(caps[key].astype(jnp.float32) for key in capture)


@jax.jit
def _leaf_heads(params):
    return [jnp.ravel(x)[:256].astype(jnp.float32) for x in jax.tree.leaves(params)]


def _params_digest(params) -> str:
    """Cheap fingerprint of the weights: paths, shapes, dtypes, leading values."""
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    return _digest.sha256_pieces(
        piece for (path, leaf), head in zip(leaves, _leaf_heads(params))
        for piece in (jax.tree_util.keystr(path).encode(),
                      str((tuple(leaf.shape), str(leaf.dtype))).encode(),
                      np.asarray(head).tobytes()))


# ---------------------------------------------------------------------------
# Export.


def _check_layers(layers, n_layers: int) -> tuple[int, ...]:
    single = _checks.is_int(layers)
    seq = (int(layers),) if single else tuple(layers) if isinstance(
        layers, (list, tuple, range)) else None
    if seq is None or not seq or any(not _checks.is_int(x) for x in seq):
        raise ValueError(
            f"layers must be an int or a non-empty list of ints; got {layers!r}")
    seq = tuple(int(x) for x in seq)
    bad = [x for x in seq if not 0 <= x < n_layers]
    if bad:
        raise ValueError(
            f"layer index out of range: layers={list(seq)}, but the model has "
            f"n_layers={n_layers} (valid: 0..{n_layers - 1})")
    if len(set(seq)) != len(seq):
        raise ValueError(f"layers has duplicates: {list(seq)}")
    return seq


def export_activations(model, data: Any, layers: int | Sequence[int], *,
                       site: str = "mlp_hidden", batch_size: int = 16,
                       max_length: int | None = None, keep_bos: bool = False,
                       out: str | os.PathLike | None = None, chunk_rows: int = 16384,
                       dtype: str = "float32", overwrite: bool = False,
                       min_bucket: int = 16, tokenizer=None, progress: bool = True,
                       mesh: jax.sharding.Mesh | None = None):
    """Runs `model` over a dataset and collects the activations of some layers.

    Args:
      model: a `snmf_jax.models.Model` (config, params, tokenizer, name).
      data: anything `load_dataset` takes: a `TextDataset`, a list of
        strings, a path (.json concept file, .jsonl, text) or "concepts".
      layers: a layer index, or a list of them (0-based).
      site: "mlp_hidden" (the SNMF input: input of the down projection),
        "mlp_out" or "resid_post".
      batch_size: documents per forward pass.
      max_length: longest document in tokens (BOS included); longer ones are
        truncated with a warning. Default and maximum: the model's context
        (`config.max_position`).
      keep_bos: also keep the rows of the BOS token (excluded by default:
        BOS activations are huge outliers that dominate a factorization).
        BOS is whatever the model's tokenizer puts first (`tokenizer.encode`
        with add_bos=True): Gemma adds one, SmolLM2 adds none, so there
        every token is kept.
      out: None to return `Activations`; a directory to write an
        `ActivationStore` there and return it. Rerunning an interrupted
        export with the same arguments resumes it from its last complete
        chunk and gives the same files.
      chunk_rows: rows per chunk of the store.
      dtype: storage dtype of the store, "float32" or "float16".
      overwrite: with `out`, delete an existing store there first.
      min_bucket: shortest padded length.
      tokenizer: overrides `model.tokenizer`.
      progress: show a tqdm progress bar (tokens).
      mesh: a device mesh to run every batch data-parallel over its "data"
        axis (its first axis when none is named "data"); weights are
        sharded by their logical axes over a "model" axis if the mesh has
        one, else replicated. A batch is padded with dummy rows to a
        multiple of the data axis. Same rows, order and values as without.

    Returns:
      With `out`: an `ActivationStore`. Otherwise an `Activations` when
      `layers` is an int, or a dict layer -> `Activations` (sharing their
      provenance arrays) when it is a list. Rows are grouped by document,
      documents ordered by (length bucket, doc_id); see `Activations`.

    Raises:
      ValueError: empty dataset, layer out of range, unknown site, bad
        max_length / batch_size / chunk_rows / dtype, NaN or Inf activations,
        or (with `out`) a store there written with other settings.
    """
    config = model.config
    if site not in SITES:
        raise ValueError(f"unknown site {site!r}; expected one of {SITES}")
    layer_seq = _check_layers(layers, config.n_layers)
    for name, v in (("batch_size", batch_size), ("chunk_rows", chunk_rows),
                    ("min_bucket", min_bucket)):
        if not _checks.is_int(v) or v < 1:
            raise ValueError(f"{name} must be a positive int; got {v!r}")
    if dtype not in STORE_DTYPES:
        raise ValueError(f"dtype must be one of {STORE_DTYPES}; got {dtype!r}")
    if max_length is None:
        max_length = config.max_position
    if not _checks.is_int(max_length) or not 1 <= max_length <= config.max_position:
        raise ValueError(
            f"max_length must be an int in [1, {config.max_position}] (the model's "
            f"context); got {max_length!r}")
    tokenizer = tokenizer if tokenizer is not None else model.tokenizer
    if tokenizer is None:
        raise ValueError(
            "the model has no tokenizer; pass tokenizer= or load the model with one")
    dataset = load_dataset(data)
    if len(dataset) == 0:
        raise ValueError("the dataset is empty: nothing to export")

    bos_id = getattr(tokenizer, "bos_id", None)
    pad_id = getattr(tokenizer, "pad_id", None)
    plan = _plan(tokenize_with_offsets(tokenizer, dataset.texts, add_bos=True),
                 max_length=int(max_length), batch_size=int(batch_size),
                 drop_id=None if keep_bos else bos_id, min_bucket=int(min_bucket))
    if plan.n_rows == 0:
        raise ValueError(
            "the dataset yields no tokens to export (every document is empty"
            + (" apart from BOS" if bos_id is not None and not keep_bos else "") + ")")
    d = config.site_dim(site)
    labels = (np.asarray(dataset.labels, np.int32) if dataset.labelled else None)
    name = getattr(model, "name", "") or ""

    if out is None:
        X = {l: np.empty((plan.n_rows, d), np.float32) for l in layer_seq}
        prov = {k: np.empty((plan.n_rows, *v[1]), np.int32) for k, v in _PROVENANCE.items()}
        if labels is not None:
            prov["labels"] = np.empty((plan.n_rows,), np.int32)

        def sink(r0, xs, pv):
            r1 = r0 + next(iter(xs.values())).shape[0]
            for l in layer_seq:
                X[l][r0:r1] = xs[l]
            for k in prov:
                prov[k][r0:r1] = pv[k]

        _run(model, plan, layer_seq, site, labels, sink, skip_rows=0,
             batch_size=int(batch_size), pad_id=pad_id, progress=progress, mesh=mesh)
        acts = {l: Activations(
            X=X[l], doc_ids=prov["doc_ids"], positions=prov["positions"],
            token_ids=prov["token_ids"], offsets=prov["offsets"], texts=dataset.texts,
            labels=prov.get("labels"),
            label_names=dataset.label_names if labels is not None else None,
            layer=l, site=site, model_name=name) for l in layer_seq}
        return acts[layer_seq[0]] if isinstance(layers, (int, np.integer)) else acts

    provenance = dict(_PROVENANCE)
    if labels is not None:
        provenance["labels"] = ("int32", ())
    settings = {
        "model": name,
        "config": _digest.sha256_bytes(repr(config).encode()),
        "params": _params_digest(as_arrays(model.params)),
        "layers": list(layer_seq), "site": site, "dtype": dtype,
        "chunk_rows": int(chunk_rows), "batch_size": int(batch_size),
        "max_length": int(max_length), "keep_bos": bool(keep_bos),
        "buckets": list(plan.buckets), "dataset": dataset.fingerprint(),
        "tokens": plan.digest, "n_rows": plan.n_rows,
    }
    writer = StoreWriter(
        out, layers=layer_seq, d=d, chunk_rows=int(chunk_rows), n_rows=plan.n_rows,
        settings=settings, dtype=dtype, overwrite=overwrite, provenance=provenance,
        info={"model": name, "site": site,
              "dataset": {"fingerprint": settings["dataset"], "n_docs": len(dataset),
                          "labelled": dataset.labelled,
                          "source": dataset.metadata.get("source")}},
        documents={"texts": list(dataset.texts),
                   "labels": None if labels is None else list(dataset.labels),
                   "label_names": None if labels is None else list(dataset.label_names),
                   "metadata": dataset.metadata})
    if writer.complete:
        return ActivationStore(writer.path)

    def sink(r0, xs, pv):
        writer.append(xs, pv)

    _run(model, plan, layer_seq, site, labels, sink,
         skip_rows=writer.rows_done, batch_size=int(batch_size), pad_id=pad_id,
         progress=progress, mesh=mesh)
    return writer.finish()


def _run(model, plan: _Plan, layers: tuple[int, ...], site: str,
         labels: np.ndarray | None, sink, *, skip_rows: int, batch_size: int,
         pad_id: int | None, progress: bool, mesh=None) -> None:
    """Runs the plan's batches from row `skip_rows` on, feeding rows to `sink`.

    sink(row_start, {layer: (m, d) float32}, {provenance name: (m, ...)}).
    """
    params, config = model.params, model.config
    put = jnp.asarray
    rows_per_batch = batch_size
    if mesh is not None:
        mesh = auto_mesh(mesh)
        params = shard_params(params, mesh)
        axis = "data" if "data" in mesh.axis_names else mesh.axis_names[0]
        rows_per_batch = -(-batch_size // mesh.shape[axis]) * mesh.shape[axis]
        put = functools.partial(jax.device_put, device=jax.sharding.NamedSharding(
            mesh, jax.sharding.PartitionSpec(axis)))  # rows split over the data axis
    capture = tuple((l, site) for l in layers)
    pad = pad_id if pad_id is not None else (config.pad_token_id or 0)
    bar = _progress.bar(plan.n_rows, unit="tok", progress=progress,
                        desc=f"export {getattr(model, 'name', '') or 'model'} "
                             f"L{','.join(map(str, layers))} {site}")
    bar.update(min(skip_rows, plan.n_rows))
    try:
        for batch in plan.batches:
            r0, r1 = batch.row_start, batch.row_start + batch.rows
            if r1 <= skip_rows:
                continue
            t = batch.length
            tokens = np.full((rows_per_batch, t), pad, np.int32)  # (B, T)
            mask = np.zeros((rows_per_batch, t), np.int32)         # (B, T)
            mask[:, 0] = 1  # dummy rows get one real token so attention stays finite
            for j, doc in enumerate(batch.docs):
                ids = plan.tokens[doc][0]
                tokens[j, :len(ids)] = ids
                mask[j, :len(ids)] = 1
            outs = _capture(params, put(tokens), put(mask), config=config, capture=capture)
            # Rows of this batch: docs in order, positions first..len-1.
            lens = [len(plan.tokens[doc][0]) for doc in batch.docs]
            firsts = [int(plan.first[doc]) for doc in batch.docs]
            b_idx = np.repeat(np.arange(len(batch.docs), dtype=np.int32),
                              [n - f for n, f in zip(lens, firsts)])  # (m,)
            t_idx = np.concatenate([np.arange(f, n, dtype=np.int32)
                                    for n, f in zip(lens, firsts)])  # (m,)
            prov = {
                "doc_ids": np.asarray(batch.docs, np.int32)[b_idx],
                "positions": t_idx,
                "token_ids": tokens[b_idx, t_idx],
                "offsets": np.concatenate([plan.tokens[doc][1][f:]
                                           for doc, f in zip(batch.docs, firsts)]),
            }
            if labels is not None:
                prov["labels"] = labels[prov["doc_ids"]]
            xs = {}
            for l, o in zip(layers, outs):
                rows = np.asarray(o)[b_idx, t_idx]  # (m, d)
                if not np.isfinite(rows).all():
                    bad = prov["doc_ids"][~np.isfinite(rows).all(axis=1)]
                    raise FloatingPointError(
                        f"non-finite activations at layer {l} site {site!r} in "
                        f"document(s) {sorted(set(bad.tolist()))[:10]}")
                xs[l] = rows
            skip = max(skip_rows - r0, 0)  # resuming inside this batch
            if skip:
                xs = {l: x[skip:] for l, x in xs.items()}
                prov = {k: v[skip:] for k, v in prov.items()}
            sink(r0 + skip, xs, prov)
            bar.update(batch.rows - skip)
    finally:
        bar.close()
