"""`fit`: a thin host-side driver around the pure SNMF update.

Iterations run on device in chunks (`lax.while_loop` with the early-stopping
rule inside); between chunks the host updates the progress bar, calls the
user's callback and writes checkpoints.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array, lax
from tqdm.auto import tqdm

from snmf_jax import _io
from snmf_jax.factorize import _inits, _solver, _threads, _validate
from snmf_jax.factorize._result import SNMFResult

log = logging.getLogger("snmf_jax")

CHECKPOINT_FILE = "snmf_checkpoint.safetensors"
_CKPT_FORMAT = "snmf_jax.checkpoint/1"


@dataclasses.dataclass(frozen=True)
class StopRule:
    """Early stopping: an iteration improves if its loss beats the best by
    more than `tol` (relative: tol·best; absolute: tol); the fit stops after
    `patience` iterations without improvement (never when None)."""

    patience: int | None = 50
    tol: float = 1e-5
    relative: bool = True


class FitState(NamedTuple):
    """Solver state plus the best iterate seen so far."""

    solver: _solver.SNMFState
    best_codes: Array  # (n, K)
    best_features: Array  # (K, d)
    best_loss: Array  # ()
    best_step: Array  # () int32, 0 before any update
    stall: Array  # () int32, iterations since the last improvement
    done: Array  # () bool, patience ran out


def init_fit_state(solver_state: _solver.SNMFState) -> FitState:
    dtype = solver_state.codes.dtype
    return FitState(solver=solver_state, best_codes=solver_state.codes,
                    best_features=solver_state.features,
                    best_loss=jnp.asarray(jnp.inf, dtype),
                    best_step=jnp.zeros((), jnp.int32),
                    stall=jnp.zeros((), jnp.int32), done=jnp.zeros((), bool))


def track_best(fs: FitState, s: _solver.SNMFState, rule: StopRule) -> FitState:
    """Folds a new solver state into the best-iterate bookkeeping."""
    # best·(1 − tol) stays +inf before the first update (inf − tol·inf is NaN).
    thresh = fs.best_loss * (1 - rule.tol) if rule.relative else fs.best_loss - rule.tol
    improved = s.loss < thresh
    stall = jnp.where(improved, 0, fs.stall + 1)
    done = (stall >= rule.patience) if rule.patience is not None else fs.done
    return FitState(
        solver=s,
        best_codes=lax.select(improved, s.codes, fs.best_codes),
        best_features=lax.select(improved, s.features, fs.best_features),
        best_loss=jnp.where(improved, s.loss, fs.best_loss),
        best_step=jnp.where(improved, s.step, fs.best_step),
        stall=stall, done=done)


def chunk_loop(x: Array, fs: FitState, n_steps: Array, *, config: _solver.SNMFConfig,
               rule: StopRule, chunk: int, axis_name: str | None = None
               ) -> tuple[FitState, Array, Array]:
    """Runs up to `n_steps` (<= chunk) iterations, stopping early when done.

    Returns:
      The new FitState, a (chunk,) buffer of losses (NaN past the end) and
      the number of iterations run.
    """
    buf = jnp.full((chunk,), jnp.nan, x.dtype)

    def cond(carry):
        i, fs, _ = carry
        return (i < n_steps) & ~fs.done

    def body(carry):
        i, fs, buf = carry
        s = _solver.update(x, fs.solver, config, axis_name=axis_name)
        return i + 1, track_best(fs, s, rule), buf.at[i].set(s.loss)

    i, fs, buf = lax.while_loop(cond, body, (jnp.zeros((), jnp.int32), fs, buf))
    return fs, buf, i


_run_chunk = jax.jit(chunk_loop, static_argnames=("config", "rule", "chunk", "axis_name"))


def fingerprint(x: Array, extra: Any = None) -> str:
    """A short hash identifying the data (shape, dtype, column sums, sampled rows)."""
    n = x.shape[0]
    rows = np.unique(np.linspace(0, n - 1, num=min(n, 16)).astype(np.int64))
    h = hashlib.sha256()
    h.update(json.dumps([list(x.shape), str(x.dtype)]).encode())
    h.update(np.asarray(jnp.sum(x, axis=0)).tobytes())
    h.update(np.asarray(x[rows]).tobytes())
    if extra is not None:
        h.update(np.asarray(extra).tobytes())
    return h.hexdigest()[:32]


def initial_codes(x: Array, rank: int, init: str, seed: int
                  ) -> tuple[Array, Array | None]:
    """Initial (codes, features) for an init name."""
    key = jax.random.PRNGKey(seed)
    if init == "random":
        return _inits.random_codes(key, 0, x.shape[0], rank, x.dtype), None
    if init == "svd":
        return _inits.svd_init(x, rank, key)
    return _inits.kmeans_init(x, rank, key)


class Checkpointer:
    """Writes and restores a FitState plus the loss history, atomically.

    The file records the data fingerprint and the settings that determine
    the trajectory; resuming with other data or settings is an error rather
    than a silently different fit.
    """

    def __init__(self, directory: str | os.PathLike, settings: dict, data_id: str):
        self.path = Path(directory) / CHECKPOINT_FILE
        self.settings = settings
        self.data_id = data_id

    def save(self, fs: FitState, losses: list[float]) -> None:
        arrays = {f"solver.{k}": np.asarray(v) for k, v in fs.solver._asdict().items()}
        arrays.update({k: np.asarray(v) for k, v in fs._asdict().items() if k != "solver"})
        arrays["done"] = arrays["done"].astype(np.uint8)
        arrays["losses"] = np.asarray(losses, dtype=np.float64)
        meta = {"format": _CKPT_FORMAT, "settings": json.dumps(self.settings, sort_keys=True),
                "data": self.data_id}
        _io.save_arrays(self.path, arrays, meta)

    def restore(self) -> tuple[FitState, list[float]] | None:
        if not self.path.exists():
            return None
        meta = _io.read_metadata(self.path)
        if meta.get("format") != _CKPT_FORMAT:
            raise ValueError(f"{self.path} is not an snmf_jax checkpoint "
                             f"(format {meta.get('format')!r})")
        if meta.get("data") != self.data_id:
            raise ValueError(
                f"checkpoint {self.path} was written for different data (or a different "
                f"codes_init); delete it or choose another checkpoint_dir")
        saved = json.loads(meta["settings"])
        diff = {k: (saved.get(k), v) for k, v in self.settings.items() if saved.get(k) != v}
        if diff:
            detail = ", ".join(f"{k}: checkpoint {a!r} vs now {b!r}" for k, (a, b) in diff.items())
            raise ValueError(f"checkpoint {self.path} was written with other settings ({detail})")
        a = _io.load_arrays(self.path)
        solver = _solver.SNMFState(**{k: jnp.asarray(a[f"solver.{k}"])
                                      for k in _solver.SNMFState._fields})
        fs = FitState(solver=solver, best_codes=jnp.asarray(a["best_codes"]),
                      best_features=jnp.asarray(a["best_features"]),
                      best_loss=jnp.asarray(a["best_loss"]),
                      best_step=jnp.asarray(a["best_step"]),
                      stall=jnp.asarray(a["stall"]),
                      done=jnp.asarray(a["done"].astype(bool)))
        return fs, [float(v) for v in a["losses"]]


def drive(run_chunk: Callable[[FitState, int], tuple[FitState, Array, Array]],
          fs: FitState, losses: list[float], *, max_iter: int, chunk: int,
          checkpointer: Checkpointer | None, checkpoint_every: int,
          progress: bool, callback: Callable[[int, float], Any] | None
          ) -> tuple[FitState, list[float]]:
    """The host loop: chunks of iterations, progress, callbacks, checkpoints."""
    step = len(losses)
    bar = tqdm(total=max_iter, initial=step, disable=not progress, desc="snmf",
               unit="it", dynamic_ncols=True)
    # Every iteration's feature solve calls CPU LAPACK; see _threads.
    with _threads.limit_blas_threads(), contextlib.closing(bar):
        while step < max_iter and not bool(fs.done):
            n = min(chunk, max_iter - step)
            if checkpointer is not None:
                n = min(n, checkpoint_every - step % checkpoint_every)
            fs, buf, ran = run_chunk(fs, n)
            ran = int(ran)
            new = np.asarray(buf[:ran], dtype=np.float64).tolist()
            losses.extend(new)
            step += ran
            bar.update(ran)
            if new:
                bar.set_postfix(loss=f"{new[-1]:.6g}", best=f"{float(fs.best_loss):.6g}")
                log.debug("snmf step %d loss %.6g", step, new[-1])
                if callback is not None:
                    callback(step, new[-1])
            if checkpointer is not None and (step % checkpoint_every == 0 or step >= max_iter
                                             or bool(fs.done)):
                checkpointer.save(fs, losses)
    return fs, losses


def fit_settings(*, rank, sparsity, init, seed, patience, tol, tol_mode, reg, mu_eps,
                 dtype, n, d, has_codes_init) -> tuple[_solver.SNMFConfig, StopRule, dict]:
    """The static update config, the stopping rule and the JSON settings of a fit.

    The settings identify a trajectory: a checkpoint resumes only under the
    same settings.
    """
    config = _solver.SNMFConfig(rank=int(rank), sparsity=float(sparsity), reg=reg, mu_eps=mu_eps)
    rule = StopRule(patience=patience, tol=float(tol), relative=tol_mode == "relative")
    settings = {"rank": int(rank), "sparsity": float(sparsity),
                "init": "codes_init" if has_codes_init else init,
                "seed": int(seed), "patience": patience, "tol": float(tol),
                "tol_mode": tol_mode, "reg": reg, "mu_eps": mu_eps,
                "dtype": str(np.dtype(dtype)), "n_tokens": int(n), "d": int(d)}
    return config, rule, settings


def fit(x, rank: int, *, sparsity: float = 0.01, init: str = "random", seed: int = 0,
        codes_init=None, max_iter: int = 1000, patience: int | None = 50,
        tol: float = 1e-5, tol_mode: str = "relative", reg: float = 1e-6,
        mu_eps: float = 1e-6, checkpoint_dir: str | os.PathLike | None = None,
        checkpoint_every: int = 100, chunk_size: int = 25, progress: bool = True,
        callback: Callable[[int, float], Any] | None = None, mesh=None,
        metadata: dict | None = None) -> SNMFResult:
    """Factorizes X (n_tokens, d) ≈ C Φ with C >= 0 and sparse Φ.

    Args:
      x: (n_tokens, d_mlp) activations, numpy or jax, float32 or float64
        (float64 needs jax_enable_x64).
      rank: number of features K, 1 <= K <= min(n_tokens, d_mlp).
      sparsity: keep-fraction p: each feature keeps ceil(p·d) neurons.
      init: "random", "svd" or "kmeans" (ignored with codes_init).
      seed: PRNG seed of the init.
      codes_init: explicit (n_tokens, K) nonnegative initial codes.
      max_iter: iteration budget.
      patience: stop after this many iterations without improvement; None
        runs exactly max_iter iterations.
      tol: improvement threshold (see tol_mode).
      tol_mode: "relative" (beat best·(1 − tol)) or "absolute" (beat
        best − tol, as the paper's reference code does).
      reg: ridge λ of the feature solve.
      mu_eps: epsilon of the multiplicative update.
      checkpoint_dir: if given, the state is written there every
        `checkpoint_every` iterations, and an existing checkpoint is resumed.
      checkpoint_every: iterations between checkpoints.
      chunk_size: iterations per device call between host updates.
      progress: show a progress bar.
      callback: called as callback(step, loss) after each chunk.
      mesh: a jax.sharding.Mesh to shard tokens over (see fit_sharded).
      metadata: JSON-able provenance stored with the result.

    Returns:
      An SNMFResult holding the best iterate.
    """
    if mesh is None and isinstance(x, jax.Array) and len(x.sharding.device_set) > 1:
        mesh = getattr(x.sharding, "mesh", None)  # a sharded X fits sharded
    if mesh is not None:
        from snmf_jax.factorize import _sharded  # pylint: disable=g-import-not-at-top
        return _sharded.fit_sharded(
            x, rank, mesh=mesh, sparsity=sparsity, init=init, seed=seed,
            codes_init=codes_init, max_iter=max_iter, patience=patience, tol=tol,
            tol_mode=tol_mode, reg=reg, mu_eps=mu_eps, checkpoint_dir=checkpoint_dir,
            checkpoint_every=checkpoint_every, chunk_size=chunk_size,
            progress=progress, callback=callback, metadata=metadata)
    x = _validate.check_data(x)
    n, d = x.shape
    _validate.check_settings(n=n, d=d, rank=rank, sparsity=sparsity, init=init,
                             max_iter=max_iter, patience=patience, tol=tol,
                             tol_mode=tol_mode)
    if codes_init is not None:
        codes_init = _validate.check_codes_init(codes_init, n, rank, x.dtype)
    if checkpoint_every < 1 or chunk_size < 1:
        raise ValueError(f"checkpoint_every and chunk_size must be >= 1; got "
                         f"{checkpoint_every}, {chunk_size}")

    config, rule, settings = fit_settings(
        rank=rank, sparsity=sparsity, init=init, seed=seed, patience=patience, tol=tol,
        tol_mode=tol_mode, reg=reg, mu_eps=mu_eps, dtype=x.dtype, n=n, d=d,
        has_codes_init=codes_init is not None)

    checkpointer = None
    restored = None
    if checkpoint_dir is not None:
        checkpointer = Checkpointer(checkpoint_dir, settings, fingerprint(x, codes_init))
        restored = checkpointer.restore()
    if restored is not None:
        fs, losses = restored
        log.info("resuming SNMF from %s at step %d", checkpointer.path, len(losses))
    else:
        if codes_init is not None:
            codes, feats = codes_init, None
        else:
            codes, feats = initial_codes(x, int(rank), init, seed)
        fs, losses = init_fit_state(_solver.init(x, codes, feats)), []

    run = functools.partial(_run_chunk, config=config, rule=rule, chunk=chunk_size)
    fs, losses = drive(lambda fs, k: run(x, fs, jnp.int32(k)), fs, losses,
                       max_iter=max_iter, chunk=chunk_size, checkpointer=checkpointer,
                       checkpoint_every=checkpoint_every, progress=progress,
                       callback=callback)
    return SNMFResult(features=np.asarray(fs.best_features), codes=np.asarray(fs.best_codes),
                      losses=np.asarray(losses, dtype=np.float64),
                      best_iter=int(fs.best_step), converged=bool(fs.done),
                      settings={**settings, "max_iter": int(max_iter)},
                      metadata=dict(metadata or {}))
