"""Step 1 of every fit: input checks that run before any work, with
messages a user can act on.

`begin` is the preamble the three fit drivers share (options, metadata,
checkpoint folder); `check_data` / `local_data` / `source_bounds` check the
rows where each driver finds them (one array, this process's rows, chunks).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from snmf_jax import _checks
from snmf_jax.factorize import _options, _row_sources


def begin(fn: str, rank, options, option_kwargs: dict, metadata, checkpoint_dir
          ) -> _options.FitConfig:
    """The checks every fit driver starts with.

    Args:
      fn: the driver's name (for messages).
      rank, options, option_kwargs: as the driver got them (`_options.resolve`).
      metadata: JSON-able provenance, or None.
      checkpoint_dir: the checkpoint folder, or None.

    Returns:
      The validated FitConfig.
    """
    opts = _options.resolve(fn, rank, options, option_kwargs)
    _checks.json_able("metadata", metadata)
    check_directory(checkpoint_dir)
    return opts


def mesh(mesh, mesh_of_x):
    """The sharded fit's mesh: `mesh=`, else the mesh of X's NamedSharding."""
    if mesh is None:
        mesh = mesh_of_x
        if mesh is None:
            raise ValueError("fit_sharded needs mesh= (or X with a NamedSharding)")
    if not isinstance(mesh, Mesh):
        raise TypeError(f"mesh must be a jax.sharding.Mesh; got {type(mesh).__name__}")
    return mesh


def in_memory(x, opts, codes_init):
    """Steps 1-2 of the one-device fit: checks X and places it on the device
    at unit scale (`unit_scale`), then checks the rank and codes_init.

    Returns:
      (X / scale as a jax array, scale, checked codes_init or None, the
      fit's settings).
    """
    x = check_data(x, stacklevel=5)  # a warning points at the line calling fit
    # Tiny or huge data is fitted at unit scale and scaled back (exact: a power of two).
    scale = unit_scale(x)
    if scale != 1.0:
        x = x / jnp.asarray(scale, x.dtype)
    n, d = x.shape
    opts.check_shape(n, d)
    if codes_init is not None:
        codes_init = check_codes_init(codes_init, n, opts.rank, x.dtype)
    settings = opts.settings(dtype=x.dtype, n=n, d=d, has_codes_init=codes_init is not None)
    return x, scale, codes_init, settings


def check_directory(checkpoint_dir) -> Path | None:
    """Fails before any work when checkpoint_dir exists and is not a folder."""
    if checkpoint_dir is None:
        return None
    path = Path(checkpoint_dir)
    if path.exists() and not path.is_dir():
        raise ValueError(f"checkpoint_dir {str(path)!r} exists and is not a directory")
    return path


def describe_nonfinite(a, name: str) -> str | None:
    """A message locating NaN/Inf entries of a 2-D array, or None if all finite."""
    bad = ~jnp.isfinite(a)
    count = int(jnp.sum(bad))
    if count == 0:
        return None
    n_nan = int(jnp.sum(jnp.isnan(a)))
    rows, cols = np.nonzero(np.asarray(bad))
    first = ", ".join(f"({r}, {c})" for r, c in zip(rows[:5], cols[:5]))
    return (f"{name} has {count} non-finite value(s) (NaN: {n_nan}, Inf: "
            f"{count - n_nan}) in {len(np.unique(rows))} row(s); first at "
            f"(row, column) {first}. Remove or repair those tokens before "
            f"factorizing.")


def compute_dtype(dtype, name: str = "X", stacklevel: int = 4) -> np.dtype:
    """The dtype a fit computes in: float32, or float64 when x64 is on."""
    dtype = np.dtype(dtype)
    if dtype == np.float64 and not jax.config.jax_enable_x64:
        warnings.warn(
            f"{name} is float64 but JAX's x64 mode is off, so the fit runs in "
            f"float32. Enable it with jax.config.update('jax_enable_x64', True).",
            stacklevel=stacklevel)
        return np.dtype(np.float32)
    return dtype if dtype in (np.float32, np.float64) else np.dtype(np.float32)


def check_data(x, name: str = "X", stacklevel: int = 4) -> jax.Array:
    """Validates and converts the data matrix.

    Args:
      x: (n_tokens, d) numpy or jax array.
      name: argument name used in messages.
      stacklevel: frames from `compute_dtype` up to the user's call (its warning's line).

    Returns:
      x as a jax array of a floating dtype JAX can compute in.
    """
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        x = np.asarray(x)
    # bfloat16 (ml_dtypes) has numpy kind "V"; it is a float, computed in float32.
    if np.dtype(x.dtype).kind not in "biuf" and np.dtype(x.dtype).name != "bfloat16":
        raise ValueError(f"{name} must be a real-valued numeric array; got dtype {x.dtype}")
    if x.ndim != 2:
        raise ValueError(
            f"{name} must be 2-D (n_tokens, d_mlp); got shape {tuple(x.shape)}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} is empty: shape {tuple(x.shape)}")
    x = jnp.asarray(x, compute_dtype(x.dtype, name, stacklevel))
    msg = describe_nonfinite(x, name)
    if msg:
        raise ValueError(msg)
    return x


def check_codes_init(codes, n: int, rank: int, dtype) -> jax.Array:
    """Validates explicit initial codes of shape (n, rank), >= 0 and finite."""
    codes = jnp.asarray(codes)
    if codes.shape != (n, rank):
        raise ValueError(
            f"codes_init must have shape (n_tokens, rank) = ({n}, {rank}); got "
            f"{tuple(codes.shape)}")
    msg = describe_nonfinite(codes, "codes_init")
    if msg:
        raise ValueError(msg)
    neg = int(jnp.sum(codes < 0))
    if neg:
        raise ValueError(
            f"codes_init must be nonnegative; {neg} entries are negative "
            f"(min {float(jnp.min(codes)):.3g})")
    # The multiplicative update keeps a zero code zero: from all-zero codes
    # nothing can move (the fit would "converge" on C = 0 at once). A single
    # dead column is allowed: that feature stays unused, the fit goes on.
    if not bool(jnp.any(codes > 0)):
        raise ValueError("codes_init is all zero; the multiplicative update keeps zero codes "
                         "zero, so nothing could be fitted (give positive initial codes)")
    return codes.astype(dtype)


# Outside this band of max|X| the update's fixed epsilons (mu_eps, reg) are not
# negligible (small data: at max|X| ~ 1e-3 the fit is already worse) or ‖X‖²
# nears float32's range (large data); `unit_scale` moves X inside it.
SCALE_BAND = (2.0 ** -4, 2.0 ** 20)


def check_scale(top: float, fit: str) -> None:
    """Refuses data whose largest |value| `top` lies outside `SCALE_BAND` for a
    fit that does not rescale (the streaming fit sees X chunk by chunk, so it
    cannot divide it by one scale before its first pass)."""
    lo, hi = SCALE_BAND
    if top != 0.0 and not lo <= top <= hi:
        raise ValueError(
            f"X's largest |value| is {top:.3g}, outside [{lo:g}, {hi:g}] where {fit} fits "
            "as well as at unit scale (tiny data fits to a loss of ~0, huge data overflows "
            "float32); divide the activations by a power of two near that value, or fit "
            "them in memory with sj.fit, which rescales by itself")


def unit_scale(x: jax.Array) -> float:
    """The power of two s to fit X / s with, so max|X / s| lands in [1, 2).

    1.0 when max|X| is already inside `SCALE_BAND` (the fit, and the paper's
    reference trajectories, are untouched). A power of two scales float data
    exactly, so the result of X / s, scaled back (features × s, losses × s²),
    is the result of the same fit at unit scale.
    """
    top = float(jnp.max(jnp.abs(x)))
    lo, hi = SCALE_BAND
    if top == 0.0 or lo <= top <= hi:  # all-zero data: a zero fit, as before
        return 1.0
    return float(2.0 ** np.floor(np.log2(top)))


def local_data(x, name: str = "X"):
    """Validates this process's rows without moving them to a device.

    Returns:
      (x with a computable float dtype, None or a message on non-finite rows).
    """
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_tokens, d_mlp); got shape {tuple(x.shape)}")
    dtype = compute_dtype(x.dtype, name, 5)  # compute_dtype < here < place < fit_sharded
    if isinstance(x, np.ndarray):
        x = x.astype(dtype, copy=False)
        step = max(1, (1 << 24) // max(1, x.shape[1]))  # bounded temporaries
        finite = all(np.isfinite(x[i:i + step]).all() for i in range(0, x.shape[0], step))
    else:
        x = x.astype(dtype)
        finite = bool(jnp.all(jnp.isfinite(x)))
    msg = None if finite else describe_nonfinite(jnp.asarray(x), name)
    return x, msg


def source(source, layer, opts, codes_init, dtype, *, return_codes: bool, checkpoint_dir):
    """The streaming fit's checks of a chunked source (before any pass).

    Returns:
      (the RowSource, the compute dtype).
    """
    src = _row_sources.as_source(source, layer=layer)
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
    return src, dtype
