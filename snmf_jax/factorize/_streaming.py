"""Out-of-core SNMF: one pass over a chunked source per iteration.

The features of the next iteration depend on X only through CᵀC (K×K) and
CᵀX (K×d), and the code update of a token needs only its own row of X. So
an iteration streams the chunks once (`_chunk_pass.iterate`): this is the
in-memory iteration with its sums split by chunk; only one chunk of X and
of C is in memory at a time.

Files (all in `checkpoint_dir`, a temporary folder when None)::

    snmf_checkpoint.safetensors       the small state (features, CᵀC, CᵀX,
                                      losses, best bookkeeping; written by
                                      `_checkpoint.Checkpointer`, atomically)
    codes/step-000123/manifest.json   the codes after iteration 123
    codes/step-000123/chunk-000000.safetensors  (rows, K) tensor "codes"

Codes versions are immutable: iteration t+1 reads `step-t` and writes a new
`step-(t+1)`, whose manifest is written last. The state file is the commit
point (every `checkpoint_every` iterations); it names the live version (its
step) and the best one (its best_step). Versions that neither the last
commit nor the current state names are deleted as the fit goes, so an
interruption never mixes two iterations and resuming redoes at most
`checkpoint_every` iterations.

Best iterate: the best features are kept in the state (K×d). The best
codes are kept by keeping their version alive (`keep_best_codes=True`,
the default): usually one extra copy of the codes, K/d of the size of X.
With `keep_best_codes=False` only the live version is kept and the result
carries the last iterate's codes (its settings say so).
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np

from snmf_jax import _checks, _chunks
from snmf_jax.factorize import _checkpoint, _chunk_pass, _loop, _options
from snmf_jax.factorize._codes import CodesStore
from snmf_jax.factorize._result import SNMFResult
from snmf_jax.factorize._sources import RowSource, as_source

log = logging.getLogger("snmf_jax")


class _StreamCheckpointer:
    """Commits the small state with `_checkpoint.Checkpointer`, and deletes
    the codes versions that neither the last commit nor the current state
    names."""

    def __init__(self, inner: _checkpoint.Checkpointer, codes_root: Path, keep_best: bool):
        self.inner, self.codes_root, self.keep_best = inner, codes_root, keep_best
        self.committed: set[str] = set()

    def live(self, fs: _loop.FitState) -> set[str]:
        keep = {_chunk_pass.version(int(fs.solver.step))}
        if self.keep_best:
            keep.add(_chunk_pass.version(int(fs.best_step)))
        return keep

    def collect(self, fs: _loop.FitState) -> None:
        keep = self.live(fs) | self.committed
        for p in self.codes_root.glob("step-*"):
            if p.name not in keep:
                _chunks.remove_chunk_folder(p)

    def save(self, fs: _loop.FitState, losses: list[float]) -> None:
        self.inner.save(fs, losses)
        self.committed = self.live(fs)
        self.collect(fs)


def fit_streaming(source, rank: int | None = None, *, codes_init=None,
                  checkpoint_dir: str | os.PathLike | None = None,
                  keep_best_codes: bool = True, return_codes: bool = True,
                  layer: int | None = None, dtype=np.float32, progress: bool = True,
                  callback: Callable[[int, float], Any] | None = None,
                  metadata: dict | None = None, options: _options.FitOptions | None = None,
                  **option_kwargs) -> SNMFResult:
    """Fits SNMF to a chunked source larger than memory, one pass per iteration.

    Same options (`FitOptions`: sparsity, init, seed, max_iter, patience,
    tol, tol_mode, reg, mu_eps, checkpoint_every, chunk_size), stopping
    rule, callbacks and result as `snmf_jax.fit`; the losses equal the
    in-memory fit's to float32 rounding. The svd and kmeans inits run the
    blocked plans (6 and 15 extra passes). Memory: one chunk of X and of the
    codes (plus one prefetched), and K×d state. Disk: the codes, one to
    three versions (see the module docstring).

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
      options: a FitOptions instead of rank and option keywords.
      **option_kwargs: FitOptions fields.

    Returns:
      An SNMFResult.
    """
    opts = _options.resolve("fit_streaming", rank, options, option_kwargs)
    _checks.json_able("metadata", metadata)
    _checkpoint.check_directory(checkpoint_dir)
    src = as_source(source, layer=layer)
    n, d = int(src.n_rows), int(src.d)
    dtype = np.dtype(dtype)
    if dtype == np.float64 and not jax.config.jax_enable_x64:
        raise ValueError("dtype=float64 needs jax.config.update('jax_enable_x64', True)")
    opts.check_shape(n, d)
    bounds = np.asarray(src.chunk_bounds, np.int64)
    if bounds.shape != (src.num_chunks + 1,) or bounds[0] != 0 or bounds[-1] != n \
            or np.any(np.diff(bounds) < 1):
        raise ValueError(f"source chunk_bounds must rise strictly from 0 to n_rows={n} "
                         f"in num_chunks+1={src.num_chunks + 1} steps; got {bounds[:8]}...")
    if codes_init is not None and not hasattr(codes_init, "rows"):
        if tuple(codes_init.shape) != (n, opts.rank):
            raise ValueError(f"codes_init must have shape (n_tokens, rank) = ({n}, {opts.rank}); "
                             f"got {tuple(codes_init.shape)}")
    if not return_codes and checkpoint_dir is None:
        raise ValueError("return_codes=False keeps the codes on disk, so it needs "
                         "checkpoint_dir= (None would delete them at the end)")
    config, rule = opts.solver_config, opts.stop_rule
    settings = opts.settings(dtype=dtype, n=n, d=d, has_codes_init=codes_init is not None)
    settings["streaming"] = True

    tmp = None
    if checkpoint_dir is None:
        tmp = tempfile.mkdtemp(prefix="snmf-stream-")
        checkpoint_dir = tmp
        ident: dict = {"kind": "temporary"}  # nothing to resume, nothing to identify
    else:
        ident = _checkpoint.source_identity(src, codes_init)
    root = Path(checkpoint_dir)
    codes_root = root / "codes"
    codes_root.mkdir(parents=True, exist_ok=True)
    ckpt = _StreamCheckpointer(_checkpoint.Checkpointer(root, settings, ident), codes_root,
                               keep_best_codes)
    pool = cf.ThreadPoolExecutor(max_workers=2, thread_name_prefix="snmf-io")
    try:
        restored = ckpt.inner.restore()
        if restored is not None:
            fs, losses = restored
            missing = [v for v in ckpt.live(fs)
                       if not (codes_root / v / "manifest.json").is_file()]
            if missing:
                raise ValueError(f"checkpoint {ckpt.inner.path} names codes {missing} that are "
                                 f"missing under {codes_root}; the folder was altered")
            ckpt.committed = ckpt.live(fs)
            ckpt.collect(fs)
            log.info("resuming streaming SNMF from %s at step %d", root, len(losses))
        else:
            for p in codes_root.glob("step-*"):
                _chunks.remove_chunk_folder(p)
            fs, losses = _chunk_pass.initialize(
                src, config, opts.init, opts.seed, codes_init, dtype,
                codes_root / _chunk_pass.version(0), pool, progress), []
            ckpt.save(fs, losses)

        def run(fs, k):
            new = []
            for _ in range(k):
                fs = _chunk_pass.iterate(src, fs, config, rule, codes_root, pool, progress)
                ckpt.collect(fs)
                new.append(float(fs.solver.loss))
                if bool(fs.done):
                    break
            return fs, np.asarray(new, np.float64), len(new)

        fs, losses = _loop.drive(run, fs, losses, max_iter=opts.max_iter,
                                 chunk=opts.chunk_size, checkpointer=ckpt,
                                 checkpoint_every=opts.checkpoint_every, progress=progress,
                                 callback=callback)
        codes_step = int(fs.best_step) if keep_best_codes else int(fs.solver.step)
        store = CodesStore(codes_root / _chunk_pass.version(codes_step))
        codes = store.to_numpy() if return_codes else None
    finally:
        pool.shutdown(wait=True)
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    meta = dict(metadata or {})
    if tmp is None:
        meta["codes_store"] = str(store.path)
    return SNMFResult(features=np.asarray(fs.best_features), codes=codes,
                      losses=np.asarray(losses, dtype=np.float64),
                      best_iter=int(fs.best_step), converged=bool(fs.done),
                      settings={**settings, "max_iter": int(opts.max_iter),
                                "codes_iter": codes_step},
                      metadata=meta)


__all__ = ["fit_streaming", "RowSource", "as_source", "CodesStore"]
