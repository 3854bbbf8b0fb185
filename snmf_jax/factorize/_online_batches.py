"""Mini-batches of the online fit: a deterministic plan over any row source.

The online fit sees its rows as a sequence of batches, numbered 0, 1, ...
over all passes. The plan depends only on the source, the batch size, the
seed and the pass, so a resumed fit recomputes it and skips to its position
without reading the rows it already used:

- an array: each pass draws a fresh permutation of all rows
  (`default_rng([seed, pass])`), cut into batches of `batch_size` (the last
  one shorter);
- a chunked source (an `ActivationStore` layer, a RowSource): each pass
  visits the chunks in a fresh random order and cuts each chunk's rows,
  permuted (`default_rng([seed, pass, chunk])`), into batches; a batch never
  spans two chunks, so one chunk is read at a time (a store's chunks hold
  hundreds of documents, so a batch still mixes many of them);
- an iterable of row blocks: rows in the order given, re-cut into batches;
  a one-shot iterator allows one pass. On resume the rows before the
  position are read again and must hash to what the checkpoint recorded.

With `shuffle=False` every order is the source's own.
"""

from __future__ import annotations

import hashlib
import math
from typing import Iterable, Iterator

import numpy as np

from snmf_jax.factorize import _checkpoint
from snmf_jax.factorize._row_sources import RowSource, as_source


def _checked(x: np.ndarray, d: int, where: str) -> np.ndarray:
    """A block of rows as float32 (m, d), finite."""
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] != d:
        raise ValueError(f"{where}: rows must have shape (m, {d}); got {tuple(x.shape)}")
    if x.dtype.kind not in "fiu":
        raise ValueError(f"{where}: rows must be real-valued; got dtype {x.dtype}")
    x = x.astype(np.float32, copy=False)
    if not np.isfinite(x).all():
        bad = np.nonzero(~np.isfinite(x).all(axis=1))[0]
        raise ValueError(f"{where}: non-finite values in {len(bad)} row(s), first at "
                         f"row(s) {bad[:5].tolist()} of the block; remove or repair those "
                         "tokens before factorizing")
    return x


class ArrayBatches:
    """Batches of an in-memory (n, d) array (numpy, memmap or jax)."""

    reiterable = True

    def __init__(self, x, batch_size: int, seed: int, shuffle: bool):
        self.x = x if isinstance(x, np.ndarray) else np.asarray(x)
        self.n_rows, self.d = int(self.x.shape[0]), int(self.x.shape[1])
        self.batch_size, self.seed, self.shuffle = batch_size, seed, shuffle
        self.batches_per_pass = math.ceil(self.n_rows / batch_size)

    def identity(self) -> dict:
        return _checkpoint.array_identity(self.x)

    def batches(self, pass_index: int, skip: int = 0) -> Iterator[np.ndarray]:
        order = (np.random.default_rng([self.seed, pass_index]).permutation(self.n_rows)
                 if self.shuffle else np.arange(self.n_rows))
        b = self.batch_size
        for j in range(skip, self.batches_per_pass):
            rows = np.sort(order[j * b:(j + 1) * b])  # sorted: memmaps read forward
            yield _checked(self.x[rows], self.d, f"X rows of batch {j} of pass {pass_index}")


class ChunkBatches:
    """Batches of a chunked RowSource, one chunk in memory at a time."""

    reiterable = True

    def __init__(self, src: RowSource, batch_size: int, seed: int, shuffle: bool):
        self.src = src
        self.n_rows, self.d = int(src.n_rows), int(src.d)
        self.batch_size, self.seed, self.shuffle = batch_size, seed, shuffle
        b = np.asarray(src.chunk_bounds, np.int64)
        if b.shape != (src.num_chunks + 1,) or b[0] != 0 or np.any(np.diff(b) < 0):
            raise ValueError(f"source chunk_bounds must rise from 0 in num_chunks + 1 = "
                             f"{src.num_chunks + 1} steps; got {b[:8].tolist()}...")
        self.rows = np.diff(b)
        self.per_chunk = -(-self.rows // batch_size)  # ceil
        self.batches_per_pass = int(self.per_chunk.sum())

    def identity(self) -> dict:
        return _checkpoint.source_identity(self.src)

    def _order(self, pass_index: int) -> np.ndarray:
        n = self.src.num_chunks
        return (np.random.default_rng([self.seed, pass_index]).permutation(n)
                if self.shuffle else np.arange(n))

    def batches(self, pass_index: int, skip: int = 0) -> Iterator[np.ndarray]:
        done, b = 0, self.batch_size
        for c in self._order(pass_index):
            c = int(c)
            count = int(self.per_chunk[c])
            if done + count <= skip:  # the whole chunk precedes the position: not read
                done += count
                continue
            x = _checked(self.src.chunk(c), self.d, f"chunk {c}")
            if x.shape[0] != self.rows[c]:
                raise ValueError(f"chunk {c} has {x.shape[0]} rows; its bounds say "
                                 f"{self.rows[c]}")
            perm = (np.random.default_rng([self.seed, pass_index, c]).permutation(len(x))
                    if self.shuffle else np.arange(len(x)))
            for j in range(max(0, skip - done), count):
                yield x[np.sort(perm[j * b:(j + 1) * b])]
            done += count


class IterableBatches:
    """Batches re-cut from an iterable of (m, d) row blocks, in the given order.

    A re-iterable (a list of arrays, an object whose `__iter__` starts over)
    allows several passes; a one-shot iterator allows one.
    """

    def __init__(self, blocks: Iterable, batch_size: int):
        self.blocks = blocks
        self.reiterable = iter(blocks) is not blocks
        self.batch_size = batch_size
        self.n_rows = None  # known after the first pass
        self.batches_per_pass = None
        self.d: int | None = None
        # With track=True (a checkpointed fit), the SHA-256 of this pass's rows
        # up to the position: a resumed fit re-reads the rows it skips and
        # compares (`skipped_digest`) with what the checkpoint recorded.
        self.track = False
        self.digest = hashlib.sha256()
        self.skipped_digest: str | None = None
        self._used = False

    def identity(self) -> dict:
        return {"kind": "iterable"}

    def batches(self, pass_index: int, skip: int = 0) -> Iterator[np.ndarray]:
        if self._used and not self.reiterable:
            raise ValueError("source is a one-shot iterator, so it allows one pass; pass a "
                             "list of blocks or a re-iterable object for passes > 1")
        self._used = True
        self.digest = hashlib.sha256()
        self.skipped_digest = self.digest.hexdigest() if skip == 0 else None
        pending, count, b = [], 0, self.batch_size
        j = 0

        def emit(batch):
            if self.track and j <= skip:  # the driver hashes the batches it fits
                self.digest.update(np.ascontiguousarray(batch).tobytes())
            if j == skip:
                self.skipped_digest = self.digest.hexdigest()
            return j > skip

        for i, block in enumerate(iter(self.blocks)):
            block = np.asarray(block)
            if self.d is None:
                if block.ndim != 2:
                    raise ValueError(f"source blocks must be 2-D (m, d); block 0 has shape "
                                     f"{block.shape}")
                self.d = int(block.shape[1])
            block = _checked(block, self.d, f"source block {i}")
            pending.append(block)
            count += len(block)
            while count >= b:
                rows = np.concatenate(pending)
                batch, rest = rows[:b], rows[b:]
                pending, count = ([rest] if len(rest) else []), len(rest)
                j += 1
                if emit(batch):
                    yield batch
        if count:
            j += 1
            batch = np.concatenate(pending)
            if emit(batch):
                yield batch
        if self.batches_per_pass is None:
            self.batches_per_pass = j


def batch_plan(source, *, layer: int | None, batch_size: int, seed: int, shuffle: bool):
    """The batch plan of a fit_online source (see the module docstring)."""
    if isinstance(source, (str, bytes)) or hasattr(source, "__fspath__"):
        return ChunkBatches(as_source(source, layer=layer), batch_size, seed, shuffle)
    if hasattr(source, "chunk_bounds") or type(source).__name__ == "ActivationStore":
        return ChunkBatches(as_source(source, layer=layer), batch_size, seed, shuffle)
    if layer is not None:
        raise ValueError(f"layer= applies to an activation store; got a {type(source).__name__}")
    if hasattr(source, "shape") and hasattr(source, "dtype"):
        if len(source.shape) != 2:
            raise ValueError(f"X must be 2-D (n_tokens, d); got shape {tuple(source.shape)}")
        if 0 in tuple(source.shape):
            raise ValueError(f"X is empty: shape {tuple(source.shape)}")
        if np.dtype(source.dtype).kind not in "fiu":
            raise ValueError(f"X must be real-valued; got dtype {source.dtype}")
        return ArrayBatches(source, batch_size, seed, shuffle)
    if isinstance(source, Iterable):
        return IterableBatches(source, batch_size)
    raise TypeError(f"source must be an (n, d) array, an ActivationStore (or its path), a "
                    f"RowSource or an iterable of (m, d) row blocks; got "
                    f"{type(source).__name__}")
