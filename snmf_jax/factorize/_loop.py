"""The fit loop shared by every driver: best-iterate tracking on device, the
early-stopping rule, and the host loop (progress, callbacks, checkpoints).

Callback semantics (the same in `fit`, `fit_sharded` and `fit_streaming`):
`callback(step, loss)` is called once per iteration, in order, with the
1-based iteration number and that iteration's loss. Iterations run on
device in chunks of `chunk_size`; the calls for a chunk's iterations are
made on the host after the chunk finishes, before any checkpoint of it is
written. An exception raised by the callback stops the fit (the last
checkpoint written stays resumable).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array, lax

from snmf_jax import _progress
from snmf_jax.factorize import _solver, _threads

log = logging.getLogger("snmf_jax")


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
    solver = _solver.snmf(config)
    buf = jnp.full((chunk,), jnp.nan, x.dtype)

    def cond(carry):
        i, fs, _ = carry
        return (i < n_steps) & ~fs.done

    def body(carry):
        i, fs, buf = carry
        s = solver.update(x, fs.solver, axis_name=axis_name)
        return i + 1, track_best(fs, s, rule), buf.at[i].set(s.loss)

    i, fs, buf = lax.while_loop(cond, body, (jnp.zeros((), jnp.int32), fs, buf))
    return fs, buf, i


run_chunk = jax.jit(chunk_loop, static_argnames=("config", "rule", "chunk", "axis_name"))


def _check_finite(new: list[float], step: int, fs: FitState) -> None:
    """A non-finite loss, or a fit whose every iterate collapsed to zero codes
    on nonzero data (float32 overflow inside the update), is an error."""
    bad = [i for i, v in enumerate(new) if not np.isfinite(v)]
    if bad:
        raise FloatingPointError(
            f"SNMF iteration {step - len(new) + bad[0] + 1} has a non-finite loss "
            f"({new[bad[0]]}); the data or the solver settings overflow the compute dtype. "
            "Rescale X (e.g. divide by its largest absolute value) and retry.")
    sq = float(fs.solver.sqnorm)
    if not np.isfinite(sq):
        raise FloatingPointError(
            f"‖X‖² overflows the compute dtype ({sq}); rescale X (e.g. divide by its "
            "largest absolute value) and retry.")


def drive(run: Callable[[FitState, int], tuple[FitState, Array, Array]],
          fs: FitState, losses: list[float], opts: Any, *, checkpointer: Any | None,
          progress: bool, callback: Callable[[int, float], Any] | None,
          loss_scale: float = 1.0) -> tuple[FitState, list[float]]:
    """Step 4 of every batch fit, the host loop: chunks of iterations,
    progress, callbacks, checkpoints.

    Args:
      run: run(fs, n) runs up to n iterations, returning (fs, losses buffer,
        iterations run).
      fs: the starting state; losses: the losses so far (non-empty on resume).
      opts: the FitConfig (max_iter, chunk_size, checkpoint_every).
      checkpointer: an object with save(fs, losses), or None.
      progress: show a progress bar.
      callback: callback(step, loss) once per iteration (module docstring).
      loss_scale: what the callback's losses are multiplied by (scale² of a
        fit run on X / scale).

    Returns:
      (final FitState, all losses).
    """
    max_iter, chunk = opts.max_iter, opts.chunk_size
    checkpoint_every = opts.checkpoint_every
    step = len(losses)
    bar = _progress.bar(max_iter, initial=step, progress=progress, desc="snmf")
    # Every iteration's feature solve calls CPU LAPACK; see _threads.
    with _threads.limit_blas_threads(), contextlib.closing(bar):
        while step < max_iter and not bool(fs.done):
            n = min(chunk, max_iter - step)
            if checkpointer is not None:
                n = min(n, checkpoint_every - step % checkpoint_every)
            fs, buf, ran = run(fs, n)
            ran = int(ran)
            new = np.asarray(buf[:ran], dtype=np.float64).tolist()
            losses.extend(new)
            step += ran
            _check_finite(new, step, fs)
            bar.update(ran)
            if new:
                bar.set_postfix(loss=f"{new[-1]:.6g}", best=f"{float(fs.best_loss):.6g}")
                log.debug("snmf step %d loss %.6g", step, new[-1])
                if callback is not None:
                    for j, value in enumerate(new):
                        callback(step - ran + j + 1,
                                 value if loss_scale == 1.0 else value * loss_scale)
            if checkpointer is not None and (step % checkpoint_every == 0 or step >= max_iter
                                             or bool(fs.done)):
                checkpointer.save(fs, losses)
    return fs, losses


def in_memory_runner(x: Array, opts: Any
                     ) -> Callable[[FitState, int], tuple[FitState, Array, Array]]:
    """`drive`'s run(fs, n) for rows on one device."""
    run = functools.partial(run_chunk, config=opts.solver_config, rule=opts.stop_rule,
                            chunk=opts.chunk_size)
    return lambda fs, n: run(x, fs, jnp.int32(n))
