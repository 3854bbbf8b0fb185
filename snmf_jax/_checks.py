"""Argument checks shared by every public entry point: one helper per kind of value.

Each raises with one line naming the argument, what was expected and what
was found, so a mistake fails before any work (see issue 12's rules).
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Mapping

import numpy as np

__all__ = ["is_int", "is_real", "integer", "real", "finite_arrays", "finite_array", "token_ids", "concrete", "matrix",
           "json_able"]


def is_int(v) -> bool:
    """An int or NumPy integer; a bool is never an int here (True is not a count)."""
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def is_real(v) -> bool:
    """An int, float or NumPy number that is not a bool (finiteness is checked apart)."""
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def integer(name: str, v: Any, *, lo: int | None = None, hi: int | None = None) -> int:
    """An int (not a bool, not a float) in [lo, hi]; returns it as int."""
    if not is_int(v) or (lo is not None and v < lo) or (hi is not None and v > hi):
        rng = ("" if lo is None and hi is None else
               f" >= {lo}" if hi is None else f" <= {hi}" if lo is None else f" in [{lo}, {hi}]")
        raise ValueError(f"{name} must be an int{rng}; got {v!r}")
    return int(v)


def real(name: str, v: Any, *, lo: float | None = None, hi: float | None = None,
         lo_open: bool = False, hi_open: bool = False) -> float:
    """A finite real number (not a bool) within the given bounds; returns a float."""
    ok = is_real(v) and math.isfinite(float(v))
    if ok and lo is not None:
        ok = v > lo if lo_open else v >= lo
    if ok and hi is not None:
        ok = v < hi if hi_open else v <= hi
    if not ok:
        if lo is not None and hi is not None:
            rng = f"in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
        elif lo is not None:
            rng = f"a finite number {'>' if lo_open else '>='} {lo}"
        elif hi is not None:
            rng = f"a finite number {'<' if hi_open else '<='} {hi}"
        else:
            rng = "a finite number"
        raise ValueError(f"{name} must be {rng}; got {v!r}")
    return float(v)


def concrete(x) -> bool:
    """True unless x is a JAX tracer (inside jit/vmap values cannot be checked;
    the public entry points check them before tracing)."""
    import jax  # pylint: disable=g-import-not-at-top
    return not isinstance(x, jax.core.Tracer)


def finite_array(name: str, x) -> None:
    """A concrete numeric array is finite (skipped under tracing), else one line
    naming it; a non-numeric dtype is refused too."""
    if not concrete(x):
        return
    a = np.asarray(x)
    if a.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be a real-valued numeric array; got dtype {a.dtype}")
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        count = int((~np.isfinite(a)).sum())
        raise ValueError(f"{name} must be finite; got {count} non-finite value(s) (NaN/Inf)")


def finite_arrays(arrays: Mapping[str, Any], where: str | os.PathLike) -> None:
    """Every float array is finite, else ValueError naming the array and `where`."""
    for name, a in arrays.items():
        if a is None:
            continue
        a = np.asarray(a)
        if a.dtype.kind in "fc" and not np.isfinite(a).all():
            count = int((~np.isfinite(a)).sum())
            raise ValueError(f"{where}: {name} has {count} non-finite value(s); a "
                             "non-finite result is an error")


def matrix(name: str, a: Any, *, shape: str = "(n, K)", nonneg: bool = False) -> np.ndarray:
    """A finite real 2-D array (codes, features): returned as a float array.

    Args:
      name: the argument's name, for messages.
      a: the array.
      shape: how the expected shape is written in messages.
      nonneg: also require every entry >= 0 (codes).
    """
    a = np.asarray(a)
    if a.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be a real-valued {shape} array; got dtype {a.dtype}")
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D {shape} array; got shape {a.shape}")
    if a.dtype.kind != "f":
        a = a.astype(np.float32)
    if not np.isfinite(a).all():
        raise ValueError(f"{name} must be finite; got {int((~np.isfinite(a)).sum())} "
                         "NaN/Inf value(s)")
    if nonneg and a.size and a.min() < 0:
        raise ValueError(f"{name} must be nonnegative; got {int((a < 0).sum())} negative "
                         f"value(s) (min {float(a.min()):.3g})")
    return a


def token_ids(name: str, ids: Any, vocab_size: int) -> np.ndarray:
    """Integer token ids in [0, vocab_size); returns them as an int32 array."""
    a = np.asarray(ids)
    if a.size and a.dtype.kind not in "iu":
        raise ValueError(f"{name} must be integer token ids; got dtype {a.dtype}")
    if a.size and (a.min() < 0 or a.max() >= vocab_size):
        bad = a[(a < 0) | (a >= vocab_size)].ravel()[0]
        raise ValueError(f"{name} must be token ids in [0, {vocab_size}); got {int(bad)}")
    return a.astype(np.int32)


def json_able(name: str, obj: Any) -> None:
    """`obj` can be written as JSON (checked before a fit, not when saving its result)."""
    try:
        json.dumps(obj)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be JSON-serialisable (it is saved with the result); "
                         f"{e}") from None
