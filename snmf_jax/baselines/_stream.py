"""Shuffled minibatches of activations from memory or an `ActivationStore`."""

from __future__ import annotations

from typing import Any, Callable, Iterator

import numpy as np

from snmf_jax.activations import Activations, ActivationStore


def _chunk_reader(data: Any, layer: int | None) -> tuple[int, Callable[[int], np.ndarray], int]:
    """(number of chunks, chunk(i) -> (rows, d) float32, d) for any supported source."""
    if isinstance(data, ActivationStore):
        if data.num_chunks == 0:
            raise ValueError(f"data: the store at {str(data.path)!r} has no rows")
        return data.num_chunks, lambda i: data.chunk(i, layer), data.d
    X = data.X if isinstance(data, Activations) else data
    X = np.asarray(X, np.float32)
    if X.ndim != 2 or X.shape[0] == 0:
        raise ValueError(
            f"data must be a non-empty (n, d) array, Activations or ActivationStore; "
            f"got shape {X.shape}")
    _checked(X, "the array")  # once here; store chunks are checked as they are read
    return 1, lambda i: X, X.shape[1]


def _checked(X: np.ndarray, where: str) -> np.ndarray:
    if not np.all(np.isfinite(X)):
        raise ValueError(f"data: non-finite activations in {where}")
    return X


def mean_and_scale(data: Any, *, layer: int | None, d_in: int,
                   normalize: bool) -> tuple[np.ndarray, float]:
    """Data mean (d,) and the scale that makes the mean row norm sqrt(d).

    Estimated on the first chunk (at most 65536 rows): enough for a mean and a
    norm, and it keeps a streaming run from reading the store twice.

    Raises:
      ValueError: d differs from d_in, or the chunk has non-finite values.
    """
    _, chunk, d = _chunk_reader(data, layer)
    if d != d_in:
        raise ValueError(f"data: activations have width {d}; the SAE expects d_in={d_in}")
    X = _checked(chunk(0)[:65536], "chunk 0")  # an array is also checked whole
    mean = X.mean(0)
    if not normalize:
        return mean, 1.0
    norm = float(np.mean(np.linalg.norm(X, axis=1)))
    if norm <= 0:
        raise ValueError("data: the activations are all zero")
    return mean, float(np.sqrt(d) / norm)


def iter_minibatches(data: Any, batch_size: int, *, layer: int | None = None,
                     seed: int = 0, buffer: int = 65536) -> Iterator[np.ndarray]:
    """Endless shuffled (batch_size, d) float32 minibatches.

    Each pass visits the chunks in a fresh random order; rows of consecutive
    chunks go through a shuffling buffer of about `buffer` rows, so a batch
    mixes documents even though a store's chunks are grouped by document.
    Every row is used once per pass (the remainder carries over).

    Args:
      data: (n, d) array, Activations or ActivationStore.
      batch_size: rows per batch.
      layer: layer of a multi-layer store.
      seed: shuffling seed.
      buffer: rows gathered before shuffling.
    """
    n_chunks, chunk, d = _chunk_reader(data, layer)
    rng = np.random.default_rng(seed)
    pending = np.empty((0, d), np.float32)
    while True:
        for i in rng.permutation(n_chunks):
            X = chunk(int(i))
            if n_chunks > 1:
                _checked(X, f"chunk {int(i)}")
            parts = [pending, X]
            pending = np.concatenate(parts) if len(pending) else parts[1]
            if len(pending) < max(buffer, batch_size) and n_chunks > 1:
                continue
            pending = pending[rng.permutation(len(pending))]
            n_full = len(pending) // batch_size
            for b in range(n_full):
                yield pending[b * batch_size:(b + 1) * batch_size]
            pending = pending[n_full * batch_size:]
