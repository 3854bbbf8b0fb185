"""The fit drivers: `fit` (one device), `fit_sharded` (a mesh), `fit_streaming` (disk).

Each reads as the five steps of every fit, each step one call into the
module that does it (none calls back up here):

1. check   `_check`      options, metadata, the rows where they are;
2. place   one device: X itself, at unit scale (`_check.in_memory`);
           `_rows_mesh`  the rows on a mesh, padded per process;
           `_rows_disk`  the rows left on disk, the codes written beside them;
3. init    the starting state from the one table of init names (`_inits`,
           run over one block, under shard_map by `_rows_mesh`, or chunk by
           chunk by `_rows_disk`), unless a checkpoint resumes one;
4. loop    `_loop.drive`: chunks of iterations (the placement's runner),
           callbacks, checkpoints;
5. result  `_result.assemble`.

The solver (`_solver`) is below all of them; `_options` (FitConfig) and
`_checkpoint` (files) are used by each step as needed.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import jax
import numpy as np
from jax.sharding import Mesh

from snmf_jax.factorize import (_check, _checkpoint, _inits, _loop, _options, _result,
                                _rows_disk, _rows_mesh)
from snmf_jax.factorize._result import SNMFResult

def fit(x, rank: int | None = None, *, codes_init=None,
        checkpoint_dir: str | os.PathLike | None = None, progress: bool = True,
        callback: Callable[[int, float], Any] | None = None, mesh=None,
        metadata: dict | None = None, options: _options.FitConfig | None = None,
        **option_kwargs) -> SNMFResult:
    """Factorizes X (n_tokens, d) ≈ C Φ with C >= 0 and sparse Φ.

    The fit options are the fields of `FitConfig`, given as keywords
    (`sj.fit(X, 100, sparsity=0.01, max_iter=500)`) or as `options=`:
    sparsity, init ("random", "svd", "kmeans"), seed, max_iter, patience
    (None: run max_iter), tol, tol_mode ("relative", "absolute"), reg,
    mu_eps, checkpoint_every, chunk_size.

    Args:
      x: (n_tokens, d_mlp) activations, numpy or jax, float32 or float64
        (float64 needs jax_enable_x64).
      rank: number of features K, 1 <= K <= min(n_tokens, d_mlp).
      codes_init: explicit (n_tokens, K) nonnegative initial codes.
      checkpoint_dir: if given, the state is written there every
        `checkpoint_every` iterations, and an existing checkpoint is resumed
        (refused, naming the difference, when it was written for other data
        or other settings).
      progress: show a progress bar.
      callback: callback(step, loss), once per iteration (see `_loop`).
      mesh: a jax.sharding.Mesh to shard tokens over (see fit_sharded).
      metadata: JSON-able provenance stored with the result.
      options: a FitConfig instead of rank and option keywords.
      **option_kwargs: FitConfig fields.

    Returns:
      An SNMFResult holding the best iterate.
    """
    opts = _check.begin("fit", rank, options, option_kwargs, metadata, checkpoint_dir)
    if mesh is None and isinstance(x, jax.Array) and len(x.sharding.device_set) > 1:
        mesh = getattr(x.sharding, "mesh", None)  # a sharded X fits sharded
    if mesh is not None:
        return fit_sharded(x, mesh=mesh, codes_init=codes_init, checkpoint_dir=checkpoint_dir,
                           progress=progress, callback=callback, metadata=metadata,
                           options=opts)
    # 1-2. check, and place: X on the device, at unit scale.
    x, scale, codes_init, settings = _check.in_memory(x, opts, codes_init)
    # 3. init, unless a checkpoint resumes.
    ckpt, restored = _checkpoint.open_checkpoint(checkpoint_dir, settings, x, codes_init)
    fs, losses = restored or (_inits.initial_state(x, opts, codes_init), [])
    # 4. loop.
    fs, losses = _loop.drive(_loop.in_memory_runner(x, opts), fs, losses, opts,
                             checkpointer=ckpt, progress=progress, callback=callback,
                             loss_scale=scale ** 2)
    # 5. result.
    return _result.assemble(fs, losses, settings, opts.max_iter, metadata,
                            codes=np.asarray(fs.best_codes), scale=scale)


def fit_sharded(x, rank: int | None = None, *, mesh: Mesh | None = None, codes_init=None,
                checkpoint_dir=None, progress: bool = True,
                callback: Callable[[int, float], Any] | None = None,
                metadata: dict | None = None,
                options: _options.FitConfig | None = None, **option_kwargs) -> SNMFResult:
    """`fit` with the tokens sharded over the devices of a mesh.

    Same options, stopping rule, callbacks and result as `snmf_jax.fit`,
    which calls this when given `mesh=`. Single process: `x` is all of X
    (numpy, or a jax.Array on any devices) and the result holds all codes;
    checkpoints use the single-device fit's file format with the codes
    gathered to the host (unpadded), so a fit can be resumed on a mesh of any
    size (or on one device). Multi-process (after `jax.distributed.initialize`):
    `x` is this process's rows (global order = process order), or a global
    jax.Array sharded along rows; `codes_init` likewise holds this process's
    rows; the result holds this process's codes and the replicated features;
    each process checkpoints its own rows (`_distributed.ProcessCheckpointer`).
    The row layout (and its zero padding) is described in `_rows_mesh`.

    Args:
      x: (n_tokens, d) activations (this process's rows when multi-process).
      rank: K (or give options=).
      mesh: the jax.sharding.Mesh; tokens are split over all its axes. None
        takes the mesh of x's NamedSharding.
      codes_init, checkpoint_dir, progress, callback, metadata, options,
        **option_kwargs: as `snmf_jax.fit`.

    Returns:
      An SNMFResult holding the best iterate.
    """
    # 1. check.
    opts = _check.begin("fit_sharded", rank, options, option_kwargs, metadata, checkpoint_dir)
    # 2. place: this process's rows, padded, on the mesh (`mesh=` or X's).
    placed = _rows_mesh.place(x, mesh, opts, codes_init)
    # 3. init, unless a checkpoint resumes.
    ckpt, restored = _rows_mesh.open_checkpoint(placed, checkpoint_dir)
    fs, losses = restored or (_rows_mesh.initial_state(placed, opts), [])
    # 4. loop.
    fs, losses = _loop.drive(_rows_mesh.runner(placed, opts), fs, losses, opts,
                             checkpointer=ckpt, progress=progress and jax.process_index() == 0,
                             callback=callback)
    # 5. result.
    codes, extra_settings, extra_meta = _rows_mesh.outputs(placed, fs)
    return _result.assemble(fs, losses, placed.settings, opts.max_iter, metadata, codes=codes,
                            extra_settings=extra_settings, extra_metadata=extra_meta)


def fit_streaming(source, rank: int | None = None, *, codes_init=None,
                  checkpoint_dir: str | os.PathLike | None = None,
                  keep_best_codes: bool = True, return_codes: bool = True,
                  layer: int | None = None, dtype=np.float32, progress: bool = True,
                  callback: Callable[[int, float], Any] | None = None,
                  metadata: dict | None = None, options: _options.FitConfig | None = None,
                  **option_kwargs) -> SNMFResult:
    """Fits SNMF to a chunked source larger than memory, one pass per iteration.

    The features of the next iteration depend on X only through CᵀC (K×K)
    and CᵀX (K×d), and the code update of a token needs only its own row of
    X, so an iteration streams the chunks once (`_rows_disk.iterate`): the
    in-memory iteration with its sums split by chunk. Same options
    (`FitConfig`: sparsity, init, seed, max_iter, patience, tol, tol_mode,
    reg, mu_eps, checkpoint_every, chunk_size), stopping rule, callbacks and
    result as `snmf_jax.fit`; the losses equal the in-memory fit's to
    float32 rounding. The svd and kmeans inits run the blocked plans (6 and
    15 extra passes). Memory: one chunk of X and of the codes (plus one
    prefetched), and K×d state. Disk: the codes, one to three versions (the
    files are described in `_rows_disk`).

    Args:
      source: a RowSource (e.g. an ActivationStore), a store directory, a
        .safetensors file (tensor "X"), or an (n, d) array (chunks of 4096 rows).
      rank: K (or give options=).
      codes_init: (n, K) initial codes: an array (or memmap), or an object
        with `rows(start, stop)` such as a CodesStore.
      checkpoint_dir: folder of the state and the codes; an existing state
        there is resumed (refused, naming the difference, when written for
        other data, another layer or other settings). None: a temporary
        folder, deleted at the end.
      keep_best_codes: keep the best iterate's codes (else the last's).
      return_codes: load the codes into `result.codes`; False leaves them in
        `checkpoint_dir` (see `result.metadata["codes_store"]`).
      layer: the layer of a store (None: its only layer).
      dtype: compute dtype (float32, or float64 with x64 enabled).
      progress: progress bars (iterations, and chunks within a pass).
      callback: callback(step, loss), once per iteration (see `_loop`).
      metadata: JSON-able provenance stored with the result.
      options: a FitConfig instead of rank and option keywords.
      **option_kwargs: FitConfig fields.

    Returns:
      An SNMFResult.
    """
    # 1. check.
    opts = _check.begin("fit_streaming", rank, options, option_kwargs, metadata, checkpoint_dir)
    src, dtype = _check.source(source, layer, opts, codes_init, dtype,
                               return_codes=return_codes, checkpoint_dir=checkpoint_dir)
    # 2. place: the fit's folder beside the rows (temporary without checkpoint_dir).
    with _rows_disk.place(src, opts, codes_init, dtype, checkpoint_dir, keep_best_codes,
                          progress) as placed:
        # 3. init, unless a checkpoint resumes.
        ckpt, restored = _rows_disk.open_checkpoint(placed)
        fs, losses = restored or _rows_disk.initial_state(placed)
        # 4. loop.
        fs, losses = _loop.drive(_rows_disk.runner(placed), fs, losses, opts,
                                 checkpointer=ckpt, progress=progress, callback=callback)
        codes, extra_settings, extra_meta = _rows_disk.outputs(placed, fs, return_codes)
    # 5. result.
    return _result.assemble(fs, losses, placed.settings, opts.max_iter, metadata, codes=codes,
                            extra_settings=extra_settings, extra_metadata=extra_meta)
