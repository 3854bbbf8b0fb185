"""Out-of-core SNMF: one pass over a chunked source per iteration.

The features of the next iteration depend on X only through CᵀC (K×K) and
CᵀX (K×d), and the code update of a token needs only its own row of X. So
an iteration streams the chunks once: for chunk c, the solver's `update`
runs on (X_c, C_c) with the *global* CᵀC and CᵀX in the state (it derives
the same features from them for every chunk), and its outputs C_cᵀC_c,
C_cᵀX_c and the chunk's loss are summed into the next iteration's state.
This is the in-memory iteration with its sums split by chunk; only one
chunk of X and of C is in memory at a time.

Files (all in `checkpoint_dir`, a temporary folder when None)::

    snmf_checkpoint.safetensors       the small state (features, CᵀC, CᵀX,
                                      losses, best bookkeeping; written by
                                      `_fit.Checkpointer`, atomically)
    codes/step-000123/manifest.json   the codes after iteration 123
    codes/step-000123/chunk-000000.safetensors  (rows, K) tensor "codes"

Codes versions are immutable: iteration t+1 reads `step-t` and writes a new
`step-(t+1)`, whose manifest is written last. The state file is the commit
point; it names the live version (its step) and the best one (its
best_step). After each commit, versions that are neither are deleted, so an
interruption never mixes two iterations and resuming redoes at most one.

Best iterate: the best features are kept in the state (K×d). The best
codes are kept by keeping their version alive (`keep_best_codes=True`,
the default): usually one extra copy of the codes, K/d of the size of X.
With `keep_best_codes=False` only the live version is kept and the result
carries the last iterate's codes (its settings say so).
"""

from __future__ import annotations

import concurrent.futures as cf
import functools
import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Protocol, runtime_checkable

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from snmf_jax import _io
from snmf_jax.factorize import _fit, _inits, _sharded, _solver, _validate
from snmf_jax.factorize._result import SNMFResult

log = logging.getLogger("snmf_jax")

CODES_FORMAT = "snmf_jax.codes/1"


@runtime_checkable
class RowSource(Protocol):
    """Rows of a (n_rows, d) matrix in fixed chunks (ActivationStore satisfies it).

    Attributes:
      n_rows: total rows.
      d: row width.
      num_chunks: number of chunks.
      chunk_bounds: (num_chunks + 1,) ints; chunk i holds rows
        [chunk_bounds[i], chunk_bounds[i + 1]).
    """

    n_rows: int
    d: int
    num_chunks: int
    chunk_bounds: Any

    def chunk(self, i: int) -> np.ndarray:
        """Rows of chunk i, (chunk_bounds[i+1] - chunk_bounds[i], d)."""


class ArraySource:
    """An in-memory array seen as a RowSource (tests, small data).

    Args:
      x: (n, d) array (numpy, memmap or jax).
      chunk_rows: rows per chunk (the last chunk may be shorter).
    """

    def __init__(self, x, chunk_rows: int):
        if getattr(x, "ndim", None) != 2:
            raise ValueError(f"x must be 2-D (n_rows, d); got shape {getattr(x, 'shape', None)}")
        if int(chunk_rows) < 1:
            raise ValueError(f"chunk_rows must be >= 1; got {chunk_rows}")
        self.x = x
        self.n_rows, self.d = int(x.shape[0]), int(x.shape[1])
        self.chunk_bounds = np.append(np.arange(0, self.n_rows, int(chunk_rows)),
                                      self.n_rows).astype(np.int64)
        self.num_chunks = len(self.chunk_bounds) - 1

    def chunk(self, i: int) -> np.ndarray:
        return np.asarray(self.x[self.chunk_bounds[i]:self.chunk_bounds[i + 1]])


class SafetensorsSource:
    """One 2-D tensor of a safetensors file, read in row chunks (never whole).

    Args:
      path: the .safetensors file.
      key: tensor name (default "X").
      chunk_rows: rows per chunk.
    """

    def __init__(self, path: str | os.PathLike, key: str = "X", chunk_rows: int = 4096):
        from safetensors import safe_open  # pylint: disable=g-import-not-at-top
        self.path, self.key = Path(path), key
        with safe_open(str(self.path), framework="numpy") as f:
            if key not in f.keys():
                raise KeyError(f"{self.path} has no tensor {key!r}; it has {sorted(f.keys())}")
            shape = f.get_slice(key).get_shape()
        if len(shape) != 2:
            raise ValueError(f"tensor {key!r} of {self.path} must be 2-D; got shape {shape}")
        if int(chunk_rows) < 1:
            raise ValueError(f"chunk_rows must be >= 1; got {chunk_rows}")
        self.n_rows, self.d = int(shape[0]), int(shape[1])
        self.chunk_bounds = np.append(np.arange(0, self.n_rows, int(chunk_rows)),
                                      self.n_rows).astype(np.int64)
        self.num_chunks = len(self.chunk_bounds) - 1

    def chunk(self, i: int) -> np.ndarray:
        from safetensors import safe_open  # pylint: disable=g-import-not-at-top
        with safe_open(str(self.path), framework="numpy") as f:
            x = f.get_slice(self.key)[int(self.chunk_bounds[i]):int(self.chunk_bounds[i + 1])]
        return np.asarray(x, np.float32)


class _LayerSource:
    """One layer of a multi-layer ActivationStore."""

    def __init__(self, store, layer: int):
        self.store, self.layer = store, layer
        self.n_rows, self.d = int(store.n_rows), int(store.d)
        self.num_chunks, self.chunk_bounds = int(store.num_chunks), store.chunk_bounds
        self.manifest = getattr(store, "manifest", None)

    def chunk(self, i: int) -> np.ndarray:
        return self.store.chunk(i, self.layer)


def as_source(obj, *, layer: int | None = None, chunk_rows: int | None = None) -> RowSource:
    """A RowSource from a source, an ActivationStore (path or object) or an array.

    Args:
      obj: a RowSource, an activation store directory, a .safetensors file
        (tensor "X"), or an (n, d) array.
      layer: the layer of a multi-layer store.
      chunk_rows: chunking of an array (default 4096).

    Returns:
      A RowSource.
    """
    if isinstance(obj, (str, os.PathLike)):
        if Path(obj).is_file():
            return SafetensorsSource(obj, chunk_rows=chunk_rows or 4096)
        from snmf_jax.activations._store import ActivationStore  # pylint: disable=g-import-not-at-top
        obj = ActivationStore(obj)
    if layer is not None:
        return _LayerSource(obj, layer)
    if isinstance(obj, RowSource):
        return obj
    if hasattr(obj, "shape") and hasattr(obj, "dtype"):
        return ArraySource(obj, chunk_rows or 4096)
    raise TypeError(f"source must be a RowSource (n_rows, d, num_chunks, chunk_bounds, "
                    f"chunk(i)), a store path or a 2-D array; got {type(obj).__name__}")


# ---------------------------------------------------------------------------
# The codes store.


def _chunk_file(directory: Path, i: int) -> Path:
    return directory / f"chunk-{i:06d}.safetensors"


class CodesStore:
    """Codes (n_rows, K) on disk in the chunking of their activations.

    Satisfies RowSource (d is K). Written by the streaming fit (and by the
    multi-process CLI); read with `chunk(i)`, `rows(start, stop)` or
    `to_numpy()`.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        mpath = self.path / "manifest.json"
        if not mpath.is_file():
            raise FileNotFoundError(f"no codes store at {self.path}: {mpath} is missing "
                                    "(an interrupted write, or not a codes folder)")
        m = _io.read_json(mpath)
        if m.get("format") != CODES_FORMAT:
            raise ValueError(f"{mpath}: format {m.get('format')!r}; expected {CODES_FORMAT!r}")
        self.manifest = m
        self.chunk_bounds = np.asarray(m["chunk_bounds"], np.int64)
        self.num_chunks = len(self.chunk_bounds) - 1
        self.n_rows = int(self.chunk_bounds[-1])
        self.d = self.rank = int(m["rank"])
        self.step = m.get("step")

    def chunk(self, i: int) -> np.ndarray:
        return _io.load_arrays(_chunk_file(self.path, i))["codes"]

    def rows(self, start: int, stop: int) -> np.ndarray:
        b = self.chunk_bounds
        first = max(int(np.searchsorted(b, start, side="right")) - 1, 0)
        parts = []
        for i in range(first, self.num_chunks):
            if b[i] >= stop:
                break
            parts.append(self.chunk(i)[max(start, b[i]) - b[i]:min(stop, b[i + 1]) - b[i]])
        return np.concatenate(parts) if parts else np.zeros((0, self.d), np.float32)

    def to_numpy(self) -> np.ndarray:
        """All codes, (n_rows, K)."""
        return self.rows(0, self.n_rows)

    @staticmethod
    def write_chunk(path: Path, i: int, codes: np.ndarray) -> None:
        Path(path).mkdir(parents=True, exist_ok=True)
        _io.save_arrays(_chunk_file(path, i), {"codes": np.asarray(codes)})

    @staticmethod
    def finish(path: Path, chunk_bounds, rank: int, **info) -> "CodesStore":
        """Writes the manifest (last, so a folder without one is incomplete)."""
        _io.write_json(Path(path) / "manifest.json",
                       {"format": CODES_FORMAT, "rank": int(rank),
                        "chunk_bounds": [int(b) for b in chunk_bounds], **info})
        return CodesStore(path)


# ---------------------------------------------------------------------------
# Per-chunk device programs.


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
    bar = tqdm(total=src.num_chunks, desc=desc, unit="chunk", leave=False,
               disable=not progress, dynamic_ncols=True)
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


def _read_rows(src: RowSource, rows: np.ndarray) -> np.ndarray:
    """Rows of the source by global index, reading each chunk involved once."""
    b = np.asarray(src.chunk_bounds)
    which = np.searchsorted(b, rows, side="right") - 1
    out = np.empty((len(rows), src.d), np.float32)
    for c in np.unique(which):
        sel = np.nonzero(which == c)[0]
        out[sel] = np.asarray(src.chunk(int(c)))[rows[sel] - b[c]]
    return out


def source_id(src: RowSource, extra: Any = None) -> str:
    """A hash identifying a source cheaply: shape, chunking, per-chunk digests
    when its manifest lists them, else the first and last chunk's contents."""
    h = hashlib.sha256()
    h.update(json.dumps([int(src.n_rows), int(src.d),
                         [int(v) for v in src.chunk_bounds]]).encode())
    manifest = getattr(src, "manifest", None)
    digests = [c.get("sha256") for c in manifest.get("chunks", [])] \
        if isinstance(manifest, dict) else []
    if digests and all(digests):
        h.update(json.dumps(digests).encode())
    else:
        for i in sorted({0, src.num_chunks - 1}):
            h.update(np.ascontiguousarray(src.chunk(i), np.float32).tobytes())
    if extra is not None:
        h.update(str(extra).encode())
    return h.hexdigest()[:32]


# ---------------------------------------------------------------------------
# The fit.


class _StreamCheckpointer:
    """Commits the small state with `_fit.Checkpointer`, then deletes the
    codes versions the new state no longer names."""

    def __init__(self, inner: _fit.Checkpointer, codes_root: Path, keep_best: bool):
        self.inner, self.codes_root, self.keep_best = inner, codes_root, keep_best

    def live(self, fs: _fit.FitState) -> set[str]:
        keep = {_version(int(fs.solver.step))}
        if self.keep_best:
            keep.add(_version(int(fs.best_step)))
        return keep

    def collect(self, fs: _fit.FitState) -> None:
        keep = self.live(fs)
        for p in self.codes_root.glob("step-*"):
            if p.name not in keep:
                shutil.rmtree(p, ignore_errors=True)

    def save(self, fs: _fit.FitState, losses: list[float]) -> None:
        self.inner.save(fs, losses)
        self.collect(fs)


def _version(step: int) -> str:
    return f"step-{step:06d}"


def fit_streaming(source, rank: int, *, sparsity: float = 0.01, init: str = "random",
                  seed: int = 0, codes_init=None, max_iter: int = 1000,
                  patience: int | None = 50, tol: float = 1e-5, tol_mode: str = "relative",
                  reg: float = 1e-6, mu_eps: float = 1e-6,
                  checkpoint_dir: str | os.PathLike | None = None,
                  keep_best_codes: bool = True, return_codes: bool = True,
                  layer: int | None = None, dtype=np.float32, progress: bool = True,
                  callback: Callable[[int, float], Any] | None = None,
                  metadata: dict | None = None) -> SNMFResult:
    """Fits SNMF to a chunked source larger than memory, one pass per iteration.

    Same settings, stopping rule and result as `snmf_jax.fit`; the losses
    equal the in-memory fit's to float32 rounding. Memory: one chunk of X and
    of the codes (plus one prefetched), and K×d state. Disk: the codes, one
    or two versions (see the module docstring).

    Args:
      source: a RowSource (e.g. an ActivationStore), a store directory, or
        an (n, d) array (chunked by 4096 rows).
      rank: K.
      sparsity, init, seed, max_iter, patience, tol, tol_mode, reg, mu_eps:
        as `snmf_jax.fit`. The svd and kmeans inits run blocked
        (`_sharded.svd_plan`, `_sharded.kmeans_plan`): 6 and 15 extra passes.
      codes_init: (n, K) initial codes: an array (or memmap), or an object
        with `rows(start, stop)` such as a CodesStore.
      checkpoint_dir: folder of the state and the codes; an existing state
        there is resumed. None: a temporary folder, deleted at the end.
      keep_best_codes: keep the best iterate's codes (else the last's).
      return_codes: load the codes into `result.codes`; False leaves them in
        `checkpoint_dir` (see `result.metadata["codes_store"]`).
      layer: the layer of a multi-layer store.
      dtype: compute dtype (float32, or float64 with x64 enabled).
      progress: progress bars (iterations, and chunks within a pass).
      callback: called as callback(step, loss) after each iteration.
      metadata: JSON-able provenance stored with the result.

    Returns:
      An SNMFResult.
    """
    src = as_source(source, layer=layer)
    n, d = int(src.n_rows), int(src.d)
    dtype = np.dtype(dtype)
    if dtype == np.float64 and not jax.config.jax_enable_x64:
        raise ValueError("dtype=float64 needs jax.config.update('jax_enable_x64', True)")
    _validate.check_settings(n=n, d=d, rank=rank, sparsity=sparsity, init=init,
                             max_iter=max_iter, patience=patience, tol=tol, tol_mode=tol_mode)
    bounds = np.asarray(src.chunk_bounds, np.int64)
    if bounds.shape != (src.num_chunks + 1,) or bounds[0] != 0 or bounds[-1] != n \
            or np.any(np.diff(bounds) < 1):
        raise ValueError(f"source chunk_bounds must rise strictly from 0 to n_rows={n} "
                         f"in num_chunks+1={src.num_chunks + 1} steps; got {bounds[:8]}...")
    if codes_init is not None and not hasattr(codes_init, "rows"):
        if tuple(codes_init.shape) != (n, rank):
            raise ValueError(f"codes_init must have shape (n_tokens, rank) = ({n}, {rank}); "
                             f"got {tuple(codes_init.shape)}")
    if not return_codes and checkpoint_dir is None:
        raise ValueError("return_codes=False keeps the codes on disk, so it needs "
                         "checkpoint_dir= (None would delete them at the end)")

    config, rule, settings = _fit.fit_settings(
        rank=rank, sparsity=sparsity, init=init, seed=seed, patience=patience, tol=tol,
        tol_mode=tol_mode, reg=reg, mu_eps=mu_eps, dtype=dtype, n=n, d=d,
        has_codes_init=codes_init is not None)
    settings["streaming"] = True

    tmp = None
    if checkpoint_dir is None:
        tmp = tempfile.mkdtemp(prefix="snmf-stream-")
        checkpoint_dir = tmp
    root = Path(checkpoint_dir)
    codes_root = root / "codes"
    codes_root.mkdir(parents=True, exist_ok=True)
    ckpt = _StreamCheckpointer(
        _fit.Checkpointer(root, settings, source_id(src, "codes_init" if codes_init is not None
                                                   else None)),
        codes_root, keep_best_codes)
    pool = cf.ThreadPoolExecutor(max_workers=2, thread_name_prefix="snmf-io")
    try:
        restored = ckpt.inner.restore()
        if restored is not None:
            fs, losses = restored
            missing = [v for v in ckpt.live(fs) if not (codes_root / v / "manifest.json").is_file()]
            if missing:
                raise ValueError(f"checkpoint {ckpt.inner.path} names codes {missing} that are "
                                 f"missing under {codes_root}; the folder was altered")
            ckpt.collect(fs)
            log.info("resuming streaming SNMF from %s at step %d", root, len(losses))
        else:
            for p in codes_root.glob("step-*"):
                shutil.rmtree(p)
            fs, losses = _initialize(src, config, init, seed, codes_init, dtype,
                                     codes_root / _version(0), pool, progress), []
            ckpt.save(fs, losses)

        def run(fs, _):
            fs = _iterate(src, fs, config, rule, codes_root, pool, progress)
            return fs, jnp.reshape(fs.solver.loss, (1,)), 1

        fs, losses = _fit.drive(run, fs, losses, max_iter=max_iter, chunk=1, checkpointer=ckpt,
                                checkpoint_every=1, progress=progress, callback=callback)
        codes_step = int(fs.best_step) if keep_best_codes else int(fs.solver.step)
        store = CodesStore(codes_root / _version(codes_step))
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
                      settings={**settings, "max_iter": int(max_iter), "codes_iter": codes_step},
                      metadata=meta)


def _initialize(src: RowSource, config: _solver.SNMFConfig, init: str, seed: int, codes_init,
                dtype, out: Path, pool, progress: bool) -> _fit.FitState:
    """Writes the initial codes to `out` and returns the initial small state."""
    k, d = config.rank, int(src.d)
    key = jax.random.PRNGKey(seed)
    feats = jnp.zeros((k, d), dtype)
    if codes_init is not None:
        def make(x, lo, hi):
            c = codes_init.rows(lo, hi) if hasattr(codes_init, "rows") else codes_init[lo:hi]
            return _validate.check_codes_init(np.asarray(c), hi - lo, k, dtype)
    elif init == "random":
        make = lambda x, lo, hi: _inits.random_codes(key, lo, hi, k, dtype)
    elif init == "svd":
        proj, feats = _sharded.svd_plan(_reducer(src, pool, dtype, progress), int(src.n_rows),
                                        d, k, key, dtype)
        make = lambda x, lo, hi: _jit_block(_sharded.svd_codes)(x, proj)
    else:
        rows = _sharded.kmeans_seed_rows(key, int(src.n_rows), k)
        cent = jnp.asarray(_read_rows(src, rows), dtype)
        feats = cent = _sharded.kmeans_plan(_reducer(src, pool, dtype, progress), cent)
        make = lambda x, lo, hi: _jit_block(_sharded.kmeans_codes)(x, cent)

    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    gram = jnp.zeros((k, k), dtype)
    cross = jnp.zeros((k, d), dtype)
    sqnorm = 0.0
    writes: list[cf.Future] = []
    for i, lo, hi, x in _passes(src, pool, "snmf init", progress):
        _check_chunk(x, i, lo, hi, d)
        x = np.asarray(x, dtype)
        c = make(x, lo, hi)
        g, b, s = _chunk_init(x, c)
        gram, cross, sqnorm = gram + g, cross + b, sqnorm + float(s)
        del x
        if writes:
            writes.pop(0).result()
        writes.append(pool.submit(CodesStore.write_chunk, out, i, c))
    for w in writes:
        w.result()
    CodesStore.finish(out, src.chunk_bounds, k, step=0)
    empty = jnp.zeros((0, k), dtype)
    s = _solver.SNMFState(codes=empty, features=jnp.asarray(feats, dtype), gram=gram,
                          cross=cross, loss=jnp.asarray(jnp.inf, dtype),
                          sqnorm=jnp.asarray(sqnorm, dtype),
                          row_sqnorm=jnp.zeros((0,), dtype), step=jnp.zeros((), jnp.int32))
    return _fit.init_fit_state(s)


def _iterate(src: RowSource, fs: _fit.FitState, config: _solver.SNMFConfig,
             rule: _fit.StopRule, codes_root: Path, pool, progress: bool) -> _fit.FitState:
    """One streamed iteration: reads codes version t, writes version t+1."""
    s = fs.solver
    step = int(s.step)
    cur = CodesStore(codes_root / _version(step))
    out = codes_root / _version(step + 1)
    shutil.rmtree(out, ignore_errors=True)  # a half-written version of a crashed run
    out.mkdir(parents=True)
    dtype = s.gram.dtype
    acc_gram, acc_cross = jnp.zeros_like(s.gram), jnp.zeros_like(s.cross)
    prepared = _scaled_features(s.gram, s.cross, config=config)
    chunk_losses, writes = [], []
    # The I/O thread also moves the chunk to the device, overlapping compute.
    read = lambda i: (jax.device_put(np.asarray(src.chunk(i), dtype)),
                      jax.device_put(cur.chunk(i)))
    bar = tqdm(total=src.num_chunks, desc=f"snmf it {step + 1}", unit="chunk", leave=False,
               disable=not progress, dynamic_ncols=True)
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
            bar.update(1)
    finally:
        for w in writes:
            w.result()
        bar.close()
    CodesStore.finish(out, src.chunk_bounds, config.rank, step=step + 1)
    # The chunk losses are sums of per-token residuals; add them in float64.
    loss = np.sum(np.asarray(jnp.stack(chunk_losses)), dtype=np.float64)
    new = s._replace(features=prepared[0], gram=acc_gram, cross=acc_cross,
                     loss=jnp.asarray(max(loss, 0.0), dtype), step=s.step + 1)
    return _fit.track_best(fs, new, rule)
