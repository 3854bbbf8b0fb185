"""Row sources: a (n_rows, d) matrix read in fixed chunks (the streaming fit's input)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from snmf_jax import _chunks, _io
from snmf_jax.activations import ActivationStore


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
        with _io.reading_safetensors(self.path), safe_open(str(self.path), framework="numpy") as f:
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


class LayerSource:
    """One layer of an ActivationStore (its identity includes the layer and site)."""

    def __init__(self, store, layer: int | None):
        self.store, self.layer = store, store._layer(layer)
        self.n_rows, self.d = int(store.n_rows), int(store.d)
        self.num_chunks, self.chunk_bounds = int(store.num_chunks), store.chunk_bounds
        self.manifest = store.manifest

    def chunk(self, i: int) -> np.ndarray:
        return self.store.chunk(i, self.layer)


def as_source(obj, *, layer: int | None = None, chunk_rows: int | None = None) -> RowSource:
    """A RowSource from a source, an ActivationStore (path or object) or an array.

    Args:
      obj: a RowSource, an activation store directory, a .safetensors file
        (tensor "X"), or an (n, d) array.
      layer: the layer of a store (None: its only layer).
      chunk_rows: chunking of an array (default 4096).

    Returns:
      A RowSource.
    """
    if isinstance(obj, (str, os.PathLike)):
        if Path(obj).is_file():
            return SafetensorsSource(obj, chunk_rows=chunk_rows or 4096)
        obj = ActivationStore(obj)
    if isinstance(obj, ActivationStore):
        return LayerSource(obj, layer)
    if layer is not None:
        raise ValueError(f"layer= applies to an activation store; got a {type(obj).__name__}")
    if isinstance(obj, RowSource):
        return obj
    if hasattr(obj, "shape") and hasattr(obj, "dtype"):
        return ArraySource(obj, chunk_rows or 4096)
    raise TypeError(f"source must be a RowSource (n_rows, d, num_chunks, chunk_bounds, "
                    f"chunk(i)), a store path or a 2-D array; got {type(obj).__name__}")


def gather_rows(src: RowSource, rows: np.ndarray) -> np.ndarray:
    """Rows of the source by global index, reading each chunk involved once."""
    b = np.asarray(src.chunk_bounds)
    which = _chunks.locate(b, rows)
    out = np.empty((len(rows), src.d), np.float32)
    for c in np.unique(which):
        sel = np.nonzero(which == c)[0]
        out[sel] = np.asarray(src.chunk(int(c)))[rows[sel] - b[c]]
    return out
