"""`fit`: SNMF of in-memory data on one device (or, given a mesh, sharded).

The driver only decides where the rows live; the solver (`_solver.snmf`),
the inits (`_inits`), the loop (`_loop.drive`: chunks of iterations on
device, callbacks and checkpoints on the host) and the checkpoints
(`_checkpoint`) are shared with `fit_sharded` and `fit_streaming`.
"""

from __future__ import annotations

import functools
import logging
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from snmf_jax import _checks
from snmf_jax.factorize import (_checkpoint, _inits, _loop, _options, _sharded, _solver,
                                _validate)
from snmf_jax.factorize._result import SNMFResult

log = logging.getLogger("snmf_jax")


def fit(x, rank: int | None = None, *, codes_init=None,
        checkpoint_dir: str | os.PathLike | None = None, progress: bool = True,
        callback: Callable[[int, float], Any] | None = None, mesh=None,
        metadata: dict | None = None, options: _options.FitOptions | None = None,
        **option_kwargs) -> SNMFResult:
    """Factorizes X (n_tokens, d) ≈ C Φ with C >= 0 and sparse Φ.

    The fit options are the fields of `FitOptions`, given as keywords
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
      options: a FitOptions instead of rank and option keywords.
      **option_kwargs: FitOptions fields.

    Returns:
      An SNMFResult holding the best iterate.
    """
    opts = _options.resolve("fit", rank, options, option_kwargs)
    _checks.json_able("metadata", metadata)
    if mesh is None and isinstance(x, jax.Array) and len(x.sharding.device_set) > 1:
        mesh = getattr(x.sharding, "mesh", None)  # a sharded X fits sharded
    if mesh is not None:
        return _sharded.fit_sharded(x, mesh=mesh, codes_init=codes_init,
                                    checkpoint_dir=checkpoint_dir, progress=progress,
                                    callback=callback, metadata=metadata, options=opts)
    _checkpoint.check_directory(checkpoint_dir)
    x = _validate.check_data(x)
    # Tiny or huge data is fitted at unit scale and scaled back (exact: a power of two).
    scale = _validate.unit_scale(x)
    if scale != 1.0:
        x = x / jnp.asarray(scale, x.dtype)
        if callback is not None:
            user_callback = callback
            callback = lambda step, loss: user_callback(step, loss * scale ** 2)  # noqa: E731
    n, d = x.shape
    opts.check_shape(n, d)
    if codes_init is not None:
        codes_init = _validate.check_codes_init(codes_init, n, opts.rank, x.dtype)
    settings = opts.settings(dtype=x.dtype, n=n, d=d, has_codes_init=codes_init is not None)

    checkpointer = None
    restored = None
    if checkpoint_dir is not None:
        checkpointer = _checkpoint.Checkpointer(checkpoint_dir, settings,
                                                _checkpoint.array_identity(x, codes_init))
        restored = checkpointer.restore()
    if restored is not None:
        fs, losses = restored
        log.info("resuming SNMF from %s at step %d", checkpointer.path, len(losses))
    else:
        if codes_init is not None:
            codes, feats = codes_init, None
        else:
            codes, feats = _inits.initial_codes(x, int(opts.rank), opts.init, opts.seed)
        fs, losses = _loop.init_fit_state(_solver.init(x, codes, feats)), []

    run = functools.partial(_loop.run_chunk, config=opts.solver_config, rule=opts.stop_rule,
                            chunk=opts.chunk_size)
    fs, losses = _loop.drive(lambda fs, k: run(x, fs, jnp.int32(k)), fs, losses,
                             max_iter=opts.max_iter, chunk=opts.chunk_size,
                             checkpointer=checkpointer, checkpoint_every=opts.checkpoint_every,
                             progress=progress, callback=callback)
    features = np.asarray(fs.best_features)
    if scale != 1.0:
        with np.errstate(over="ignore"):
            features = features * np.asarray(scale, features.dtype)
        if not np.isfinite(features).all():
            raise FloatingPointError(
                f"the features of X (largest |value| ~{scale:.3g}) overflow {features.dtype} "
                "once scaled back; rescale X (e.g. divide by its largest absolute value) "
                "and retry.")
    return SNMFResult(features=features, codes=np.asarray(fs.best_codes),
                      losses=np.asarray(losses, dtype=np.float64) * scale ** 2,
                      best_iter=int(fs.best_step), converged=bool(fs.done),
                      settings={**settings, "max_iter": int(opts.max_iter)},
                      metadata=dict(metadata or {}))
