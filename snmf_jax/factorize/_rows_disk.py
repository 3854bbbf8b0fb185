"""The streaming fit's rows on disk: placing them (step 2: the codes are
written next to them), and the disk's versions of the init (step 3) and of
one iteration (step 4: a pass over the chunks).

`place` opens the fit's folder (`checkpoint_dir`, or a temporary one) and
its I/O threads; `initialize` writes the initial codes (running the blocked svd / kmeans
plans of `_inits` with a loop over chunks as their reduce) and `iterate`
runs one SNMF iteration as one pass over the chunks: chunk c runs the
solver's update on (X_c, C_c) with the global CᵀC and CᵀX, and its
C_cᵀC_c, C_cᵀX_c and loss are summed into the next state. Codes versions
live in `codes_root/step-XXXXXX/` (a `CodesStore` each); `StreamCheckpointer`
commits the small state and deletes the versions no one names any more.

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
import contextlib
import functools
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from snmf_jax import _chunks, _progress
from snmf_jax.factorize import _check, _checkpoint, _inits, _loop, _solver
from snmf_jax.factorize._codes_store import CodesStore
from snmf_jax.factorize._row_sources import RowSource, gather_rows

log = logging.getLogger("snmf_jax")


def version(step: int) -> str:
    """Folder name of the codes after iteration `step`."""
    return f"step-{step:06d}"



_scaled_features = jax.jit(_solver.scaled_features, static_argnames=("config",))


@functools.partial(jax.jit, static_argnames=("config",), donate_argnums=(5, 6))
def _chunk_update(x, codes, gram, cross, prepared, acc_gram, acc_cross, *, config):
    """One chunk of an iteration: the solver's update on the chunk with the
    global CᵀC, CᵀX (and the features `prepared` from them once per
    iteration); its CᵀC, CᵀX are added to the accumulators."""
    x = x.astype(gram.dtype)
    state = _solver.SNMFState(
        codes=codes.astype(x.dtype), features=cross, gram=gram, cross=cross,
        loss=jnp.zeros((), x.dtype), sqnorm=jnp.zeros((), x.dtype),
        row_sqnorm=jnp.sum(x * x, axis=1), step=jnp.zeros((), jnp.int32))
    s = _solver.update(x, state, config, prepared=prepared)
    return s.codes, acc_gram + s.gram, acc_cross + s.cross, s.loss


@jax.jit
def _chunk_init(x, codes):
    """CᵀC, CᵀX and ‖X‖² of one chunk (the solver's init, unsummed)."""
    s = _solver.init(x, codes)
    return s.gram, s.cross, s.sqnorm


@functools.lru_cache(maxsize=None)
def _jit_block(fn):
    return jax.jit(fn)


def _check_chunk(x: np.ndarray, i: int, lo: int, hi: int, d: int) -> None:
    if x.shape != (hi - lo, d):
        raise ValueError(f"chunk {i} has shape {tuple(x.shape)}; its bounds "
                         f"[{lo}, {hi}) and d = {d} say ({hi - lo}, {d})")
    if not np.isfinite(x).all():
        bad = np.nonzero(~np.isfinite(x).all(axis=1))[0]
        raise ValueError(
            f"X has non-finite values in chunk {i}: {len(bad)} row(s), first at global "
            f"row(s) {(bad[:5] + lo).tolist()}. Remove or repair those tokens before "
            "factorizing.")


class _Prefetch:
    """Reads chunk i+1 (of X and, optionally, of the codes) while i computes."""

    def __init__(self, pool, read: Callable[[int], Any], count: int):
        self.read, self.count, self.pool = read, count, pool
        self.next = pool.submit(read, 0) if count else None

    def __iter__(self):
        for i in range(self.count):
            item = self.next.result()
            self.next = self.pool.submit(self.read, i + 1) if i + 1 < self.count else None
            yield i, item


def _passes(src: RowSource, pool, desc: str, progress: bool):
    """Iterates (i, lo, hi, chunk) over the source, prefetching one ahead."""
    b = src.chunk_bounds
    bar = _progress.bar(src.num_chunks, desc=desc, unit="chunk", leave=False,
                        progress=progress)
    try:
        for i, x in _Prefetch(pool, src.chunk, src.num_chunks):
            yield i, int(b[i]), int(b[i + 1]), x
            bar.update(1)
    finally:
        bar.close()


def _reducer(src: RowSource, pool, dtype, progress: bool):
    """reduce(fn, params) = Σ over chunks of fn(x_c, ones, params) (blocked inits)."""
    def reduce(fn, params):
        jf, acc = _jit_block(fn), None
        for _, lo, hi, x in _passes(src, pool, "snmf init", progress):
            out = jf(np.asarray(x, dtype), jnp.ones((hi - lo,), dtype), params)
            acc = out if acc is None else jax.tree.map(jnp.add, acc, out)
        return acc
    return reduce


def initialize(src: RowSource, config: _solver.SNMFConfig, init: str, seed: int, codes_init,
                dtype, out: Path, pool, progress: bool) -> _loop.FitState:
    """Writes the initial codes to `out` and returns the initial small state."""
    k, d = config.rank, int(src.d)
    key = jax.random.PRNGKey(seed)
    feats = jnp.zeros((k, d), dtype)
    spec = _inits.INITS[init]
    if codes_init is not None:
        def make(x, lo, hi):
            c = codes_init.rows(lo, hi) if hasattr(codes_init, "rows") else codes_init[lo:hi]
            return _check.check_codes_init(np.asarray(c), hi - lo, k, dtype)
    elif spec.plan is None:  # codes by global row
        make = lambda x, lo, hi: spec.codes(key, lo, hi, k, dtype)
    else:
        seeds = None
        if spec.seed_rows is not None:
            seeds = jnp.asarray(gather_rows(src, spec.seed_rows(key, int(src.n_rows), k)), dtype)
        params, feats = spec.plan(_reducer(src, pool, dtype, progress), seeds, int(src.n_rows),
                                  d, k, key, dtype)
        make = lambda x, lo, hi: _jit_block(spec.codes)(x, params)

    _chunks.remove_chunk_folder(out)
    out.mkdir(parents=True)
    gram = jnp.zeros((k, k), dtype)
    cross = jnp.zeros((k, d), dtype)
    sqnorm = top = 0.0
    writes: list[cf.Future] = []
    entries: list[cf.Future] = []
    for i, lo, hi, x in _passes(src, pool, "snmf init", progress):
        _check_chunk(x, i, lo, hi, d)
        x = np.asarray(x, dtype)
        top = max(top, float(np.abs(x).max(initial=0.0)))
        c = make(x, lo, hi)
        g, b, s = _chunk_init(x, c)
        gram, cross, sqnorm = gram + g, cross + b, sqnorm + float(s)
        del x
        if writes:
            writes.pop(0).result()
        writes.append(pool.submit(CodesStore.write_chunk, out, i, c))
        entries.append(writes[-1])
    for w in writes:
        w.result()
    _check.check_scale(top, "the streaming fit")
    CodesStore.finish(out, k, [e.result() for e in entries], step=0)
    empty = jnp.zeros((0, k), dtype)
    s = _solver.SNMFState(codes=empty, features=jnp.asarray(feats, dtype), gram=gram,
                          cross=cross, loss=jnp.asarray(jnp.inf, dtype),
                          sqnorm=jnp.asarray(sqnorm, dtype),
                          row_sqnorm=jnp.zeros((0,), dtype), step=jnp.zeros((), jnp.int32))
    return _loop.init_fit_state(s)


def iterate(src: RowSource, fs: _loop.FitState, config: _solver.SNMFConfig,
             rule: _loop.StopRule, codes_root: Path, pool, progress: bool) -> _loop.FitState:
    """One streamed iteration: reads codes version t, writes version t+1."""
    s = fs.solver
    step = int(s.step)
    cur = CodesStore(codes_root / version(step))
    out = codes_root / version(step + 1)
    _chunks.remove_chunk_folder(out)  # a half-written version of a crashed run
    out.mkdir(parents=True)
    dtype = s.gram.dtype
    acc_gram, acc_cross = jnp.zeros_like(s.gram), jnp.zeros_like(s.cross)
    prepared = _scaled_features(s.gram, s.cross, config=config)
    chunk_losses, writes, entries = [], [], []
    # The I/O thread also moves the chunk to the device, overlapping compute.
    read = lambda i: (jax.device_put(np.asarray(src.chunk(i), dtype)),
                      jax.device_put(cur.chunk(i)))
    bar = _progress.bar(src.num_chunks, desc=f"snmf it {step + 1}", unit="chunk",
                        leave=False, progress=progress)
    try:
        for i, (x, c) in _Prefetch(pool, read, src.num_chunks):
            codes, acc_gram, acc_cross, loss = _chunk_update(
                x, c, s.gram, s.cross, prepared, acc_gram, acc_cross, config=config)
            chunk_losses.append(loss)
            del x, c
            # Waiting for chunk i-1's codes (computed, then written) keeps at
            # most two chunks in flight besides the prefetched one, however
            # far JAX's asynchronous dispatch could run ahead.
            if writes:
                writes.pop(0).result()
            writes.append(pool.submit(CodesStore.write_chunk, out, i, codes))
            entries.append(writes[-1])
            bar.update(1)
    finally:
        for w in writes:
            w.result()
        bar.close()
    CodesStore.finish(out, config.rank, [e.result() for e in entries], step=step + 1)
    # The chunk losses are sums of per-token residuals; add them in float64.
    loss = np.sum(np.asarray(jnp.stack(chunk_losses)), dtype=np.float64)
    new = s._replace(features=prepared[0], gram=acc_gram, cross=acc_cross,
                     loss=jnp.asarray(max(loss, 0.0), dtype), step=s.step + 1)
    return _loop.track_best(fs, new, rule)


# ---------------------------------------------------------------------------
# The fit's folder: placement, checkpoints, result.


class StreamCheckpointer:
    """Commits the small state with `_checkpoint.Checkpointer`, and deletes
    the codes versions that neither the last commit nor the current state
    names."""

    def __init__(self, inner: _checkpoint.Checkpointer, codes_root: Path, keep_best: bool):
        self.inner, self.codes_root, self.keep_best = inner, codes_root, keep_best
        self.committed: set[str] = set()

    def live(self, fs: _loop.FitState) -> set[str]:
        keep = {version(int(fs.solver.step))}
        if self.keep_best:
            keep.add(version(int(fs.best_step)))
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


class Placed(NamedTuple):
    """The rows of a streaming fit: a source, and the folder of its codes."""

    src: RowSource
    opts: Any
    codes_init: Any
    dtype: np.dtype
    root: Path
    codes_root: Path
    temporary: bool
    ckpt: StreamCheckpointer
    pool: cf.ThreadPoolExecutor
    progress: bool
    settings: dict


@contextlib.contextmanager
def place(src: RowSource, opts, codes_init, dtype, checkpoint_dir, keep_best_codes: bool,
          progress: bool) -> Iterator[Placed]:
    """Opens the fit's folder (a temporary one, deleted at the end, when
    checkpoint_dir is None) and its I/O threads, for the `with` block."""
    n, d = int(src.n_rows), int(src.d)
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
    ckpt = StreamCheckpointer(_checkpoint.Checkpointer(root, settings, ident), codes_root,
                              keep_best_codes)
    pool = cf.ThreadPoolExecutor(max_workers=2, thread_name_prefix="snmf-io")
    try:
        yield Placed(src, opts, codes_init, dtype, root, codes_root, tmp is not None, ckpt,
                     pool, progress, settings)
    finally:
        pool.shutdown(wait=True)
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def open_checkpoint(placed: Placed):
    """The checkpointer and the state it resumes from (None: start), its
    codes versions checked and the ones no one names deleted."""
    ckpt, root, codes_root = placed.ckpt, placed.root, placed.codes_root
    restored = ckpt.inner.restore()
    if restored is not None:
        fs, losses = restored
        missing = [v for v in ckpt.live(fs) if not (codes_root / v / "manifest.json").is_file()]
        if missing:
            raise ValueError(f"checkpoint {ckpt.inner.path} names codes {missing} that are "
                             f"missing under {codes_root}; the folder was altered")
        ckpt.committed = ckpt.live(fs)
        ckpt.collect(fs)
        log.info("resuming streaming SNMF from %s at step %d", root, len(losses))
    return ckpt, restored


def initial_state(placed: Placed) -> tuple[_loop.FitState, list[float]]:
    """Step 3 of the streaming fit: writes the initial codes (version 0) and
    commits the starting state."""
    for p in placed.codes_root.glob("step-*"):
        _chunks.remove_chunk_folder(p)
    opts = placed.opts
    fs, losses = initialize(placed.src, opts.solver_config, opts.init, opts.seed,
                            placed.codes_init, placed.dtype, placed.codes_root / version(0),
                            placed.pool, placed.progress), []
    placed.ckpt.save(fs, losses)
    return fs, losses


def runner(placed: Placed) -> Callable:
    """`_loop.drive`'s run(fs, n): n streamed iterations (fewer once done)."""
    config, rule = placed.opts.solver_config, placed.opts.stop_rule

    def run(fs, k):
        new = []
        for _ in range(k):
            fs = iterate(placed.src, fs, config, rule, placed.codes_root, placed.pool,
                         placed.progress)
            placed.ckpt.collect(fs)
            new.append(float(fs.solver.loss))
            if bool(fs.done):
                break
        return fs, np.asarray(new, np.float64), len(new)
    return run


def outputs(placed: Placed, fs: _loop.FitState, return_codes: bool
            ) -> tuple[np.ndarray | None, dict, dict]:
    """The codes to return (the best iterate's, or the last's without
    keep_best_codes), and what the result records of them."""
    codes_step = int(fs.best_step) if placed.ckpt.keep_best else int(fs.solver.step)
    store = CodesStore(placed.codes_root / version(codes_step))
    codes = store.to_numpy() if return_codes else None
    meta = {} if placed.temporary else {"codes_store": str(store.path)}
    return codes, {"codes_iter": codes_step}, meta
