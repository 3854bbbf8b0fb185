"""`fit_online`: SNMF from mini-batches, for corpora that full passes cannot afford.

The batch fits need one pass over all rows per iteration and hundreds of
iterations. The online fit (in the spirit of Mairal et al., 2010, "Online
learning for matrix factorization and sparse coding") reads each row once
per pass and needs one to a few passes: every mini-batch is coded for the
current features and folded into running statistics Ā ≈ E[c cᵀ] (K, K)
and B̄ ≈ E[c xᵀ] (K, d), from which the features are re-solved in closed
form with the batch solver's own steps (`_online_step`). Memory: one batch,
plus K² + K·d, whatever the number of rows.

Forgetting schedule: batch t (1-based over all passes) enters with weight
1 while the old statistics are scaled by β_t = (1 − 1/t)^ρ (`forget` = ρ;
Mairal et al. §3.4). ρ = 0 averages every batch equally (the codes of the
first batches, solved for the init's features, never leave); ρ = 1 (the
default) weights batch s in proportion to s; larger ρ forgets faster.
β_1 = 0, so the init leaves no trace in the statistics.

What it gives up against the batch fit: the codes of a row are solved for
the features of the moment it was seen (the final features' codes come from
`encode`, a further pass when asked for with `codes=`), there is no
stopping rule (a fixed number of passes), and no best-iterate bookkeeping.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from snmf_jax import _checks
from snmf_jax.factorize import (_check, _encode, _inits, _online_batches, _online_run,
                                _options, _rows_mesh, _solver)
from snmf_jax.factorize._result import SNMFResult

INITS = tuple(sorted(_inits.INITS))  # the one table; sorted as the messages list them


@dataclasses.dataclass(frozen=True)
class OnlineConfig:
    """Settings of an online fit (validated on construction).

    Attributes:
      rank: number of features K.
      sparsity: keep-fraction p of the winner-take-all (as the batch fit).
      batch_size: rows per mini-batch.
      passes: passes over the rows.
      init: features from a sample of the first batches: "kmeans"
        (k-means++ then 15 Lloyd iterations), "random" (random rows) or "svd".
      init_rows: rows of that sample (None: max(batch_size, 32·rank)).
      seed: PRNG seed of the init and the batch order.
      forget: ρ of the forgetting schedule β_t = (1 − 1/t)^ρ.
      code_iters: multiplicative updates per batch after the warm start.
      eval_iters: multiplicative updates of the held-out `encode`.
      shuffle: shuffle rows (arrays: all rows; stores: chunks and rows within).
      reg: ridge λ of the feature solve.
      mu_eps: epsilon of the multiplicative update.
      checkpoint_every: batches between checkpoints (with checkpoint_dir).
    """

    rank: int
    sparsity: float = 0.01
    batch_size: int = 4096
    passes: int = 1
    init: str = "kmeans"
    init_rows: int | None = None
    seed: int = 0
    forget: float = 1.0
    code_iters: int = 10
    eval_iters: int = _encode.DEFAULT_ITERS
    shuffle: bool = True
    reg: float = 1e-6
    mu_eps: float = 1e-6
    checkpoint_every: int = 100

    def __post_init__(self):
        _checks.integer("rank", self.rank, lo=1)
        _checks.real("sparsity", self.sparsity, lo=0, hi=1, lo_open=True)
        _checks.integer("batch_size", self.batch_size, lo=1)
        _checks.integer("passes", self.passes, lo=1)
        if self.init not in INITS:
            raise ValueError(f"init must be one of {INITS}; got {self.init!r}")
        if self.init_rows is not None:
            _checks.integer("init_rows", self.init_rows, lo=self.rank)
        _checks.integer("seed", self.seed)
        _checks.real("forget", self.forget, lo=0)
        _checks.integer("code_iters", self.code_iters, lo=0)
        _checks.integer("eval_iters", self.eval_iters, lo=0)
        if not isinstance(self.shuffle, bool):
            raise ValueError(f"shuffle must be a bool; got {self.shuffle!r}")
        _checks.real("reg", self.reg, lo=0, lo_open=True)
        _checks.real("mu_eps", self.mu_eps, lo=0, lo_open=True)
        _checks.integer("checkpoint_every", self.checkpoint_every, lo=1)

    @property
    def solver_config(self) -> _solver.SNMFConfig:
        return _solver.SNMFConfig(rank=int(self.rank), sparsity=float(self.sparsity),
                                  reg=float(self.reg), mu_eps=float(self.mu_eps))

    @property
    def sample_rows(self) -> int:
        return self.init_rows or max(self.batch_size, 32 * self.rank)

    def settings(self, d: int) -> dict:
        """What a checkpoint must agree on to be resumed (passes may grow)."""
        s = dataclasses.asdict(self)
        for k in ("passes", "checkpoint_every", "eval_iters"):
            s.pop(k)
        return {**s, "init_rows": self.sample_rows, "d": int(d), "online": True}


class _Devices:
    """Puts a batch where the step runs: one device, or split over a mesh
    (padded with zero rows, which get zero codes and add nothing)."""

    def __init__(self, mesh: Mesh | None, batch_size: int):
        self.mesh = mesh
        n = 1 if mesh is None else int(mesh.size)
        self.rows = math.ceil(batch_size / n) * n
        if mesh is not None:
            lpd = _rows_mesh.devices_per_process(mesh)
            self.layout = _rows_mesh.RowLayout(counts=(self.rows // jax.process_count(),)
                                            * jax.process_count(),
                                            rows_per_device=self.rows // n,
                                            devices_per_process=lpd)

    def put(self, x: np.ndarray):
        pad = self.rows - x.shape[0]
        if pad:
            x = np.concatenate([x, np.zeros((pad, x.shape[1]), x.dtype)])
        if self.mesh is None:
            return jnp.asarray(x)
        block = self.layout.block  # every process reads the whole batch, keeps its block
        return _rows_mesh.to_global(x[jax.process_index() * block:][:block], self.mesh,
                                 self.layout)

    def rep(self, a):
        return jnp.asarray(a) if self.mesh is None else _rows_mesh.replicate(a, self.mesh)


def fit_online(source, rank: int | None = None, *, layer: int | None = None,
               held_out=None, held_out_every: int | None = None, features_init=None,
               codes: bool | str | os.PathLike = False,
               checkpoint_dir: str | os.PathLike | None = None, mesh: Mesh | None = None,
               progress: bool = True, callback: Callable[[int, float], Any] | None = None,
               metadata: dict | None = None, options: OnlineConfig | None = None,
               **option_kwargs) -> SNMFResult:
    """Fits SNMF from mini-batches: a few passes, memory independent of the rows.

    Options (`OnlineConfig` fields, as keywords or `options=`): sparsity,
    batch_size, passes, init ("kmeans", "random", "svd"), init_rows, seed,
    forget, code_iters, eval_iters, shuffle, reg, mu_eps, checkpoint_every.

    Args:
      source: (n, d) array; an ActivationStore or its path (with `layer=`);
        any RowSource; or an iterable of (m, d) row blocks (a one-shot
        iterator allows passes=1).
      rank: K.
      layer: the layer of a multi-layer store.
      held_out: rows never trained on (array or store): after every pass
        (or every `held_out_every` batches), their loss with
        codes re-solved by `encode` is recorded in
        `result.metadata["online"]["held_out"]`.
      held_out_every: batches between held-out evaluations (None: per pass).
      features_init: explicit (K, d) initial features instead of `init`.
      codes: False: no codes (result.codes is None); True: codes of every
        row for the final features, by `encode` (a further pass; arrays and
        stores); a folder: those codes streamed into a CodesStore there.
      checkpoint_dir: statistics, features and position are written there
        every `checkpoint_every` batches and at the end of each pass; an
        existing checkpoint is resumed (refused, naming the difference, when
        written for other data or settings). `passes` may grow on resume.
      mesh: a Mesh: each batch is split over all its devices (jax.shard_map)
        and the statistics combined by one psum per batch; several processes
        (after `initialize_distributed`) each read the same batches and keep
        their devices' rows.
      progress: progress bar in rows, with the pass's running loss.
      callback: callback(batch, mean_loss) after every batch (1-based over
        all passes); an exception it raises stops the fit, and the last
        checkpoint stays resumable.
      metadata: JSON-able provenance stored with the result.
      options: an OnlineConfig instead of rank and option keywords.
      **option_kwargs: OnlineConfig fields.

    Returns:
      An SNMFResult: features (K, d); codes as asked; losses (per batch, the
      mean squared error per row of the batch, coded for the features before
      the batch updated them: a running loss on rows not yet fitted in the
      first pass); metadata["online"] with rows seen, per-pass losses and
      the held-out history.
    """
    opts = _options.resolve("fit_online", rank, options, option_kwargs, OnlineConfig)
    _checks.json_able("metadata", metadata)
    _check.check_directory(checkpoint_dir)
    if held_out_every is not None:
        _checks.integer("held_out_every", held_out_every, lo=1)
    if mesh is not None and not isinstance(mesh, Mesh):
        raise TypeError(f"mesh must be a jax.sharding.Mesh; got {type(mesh).__name__}")
    plan = _online_batches.batch_plan(source, layer=layer, batch_size=opts.batch_size,
                                      seed=opts.seed, shuffle=opts.shuffle)
    if isinstance(plan, _online_batches.IterableBatches):
        if not plan.reiterable and opts.passes > 1:
            raise ValueError(f"passes={opts.passes} needs a re-iterable source; a one-shot "
                             "iterator allows passes=1 (pass a list of blocks instead)")
        if codes is not False:
            raise ValueError("codes= needs an array or a store (the codes pass re-reads "
                             "the rows); call encode() on your rows instead")
    if codes is not False and codes is not True:
        if not isinstance(codes, (str, os.PathLike)):
            raise TypeError(f"codes must be False, True or a folder; got {codes!r}")
    d = plan.d
    if d is not None:
        if opts.rank > d:
            raise ValueError(f"rank must be in [1, d] = [1, {d}]; got {opts.rank}")
        if plan.n_rows is not None and opts.rank > plan.n_rows:
            raise ValueError(f"rank must be <= n_tokens = {plan.n_rows}; got {opts.rank}")
    if features_init is not None:
        features_init = _encode.check_features(features_init, d)
        if features_init.shape[0] != opts.rank:
            raise ValueError(f"features_init must have shape (rank, d) = ({opts.rank}, "
                             f"{features_init.shape[1]}); got {features_init.shape}")
    held = None
    if held_out is not None:
        held = _online_batches.batch_plan(held_out, layer=layer, batch_size=1, seed=0,
                                          shuffle=False)
        if isinstance(held, _online_batches.IterableBatches):
            raise TypeError("held_out must be an array or a store")
        if d is not None and held.d != d:
            raise ValueError(f"held_out has d = {held.d}; the source has d = {d}")
        held_out = held.x if isinstance(held, _online_batches.ArrayBatches) else held.src

    return _online_run.run(plan, opts, held_out=held_out, held_out_every=held_out_every,
                           features_init=features_init, codes=codes,
                           checkpoint_dir=checkpoint_dir, devices=_Devices(mesh, opts.batch_size),
                           progress=progress, callback=callback, metadata=dict(metadata or {}))
