"""SHA-256 digests of bytes, JSON values, files and arrays: the ones the package
records and verifies (store, result and checkpoint identities). (The online
fit's running digest of a pass's rows, `factorize/_online_*.py`, is an
incremental hashlib object fed block by block, which none of these are.)

Which one to use:

- `sha256_bytes` / `sha256_pieces`: bytes you already framed yourself (a
  fingerprint of token ids, texts, weights); `sha256_pieces` hashes the
  concatenation of its pieces without building it.
- `sha256_json`: a JSON-able value (a list of chunk digests, chunk bounds).
- `file_sha256`: a file's bytes (store chunks, codes chunks), read in blocks.
- `array_sha256`: one array's dtype, shape and bytes in row order, read in
  blocks (a memmap is never loaded whole). Two arrays with the same bytes but
  another shape or dtype differ.
- `arrays_digest`: named arrays (names, dtypes, shapes, bytes), the digest
  checkpoint and result headers record and `_io.verified_arrays` checks.

The byte layouts of `array_sha256`, `arrays_digest` and `sha256_json` are
persisted (checkpoint identities, result and checkpoint headers, store
identities recorded by results): they must not change, or files already
written would stop verifying or resuming.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Iterable, Mapping

import numpy as np

__all__ = ["sha256_bytes", "sha256_pieces", "sha256_json", "file_sha256", "array_sha256",
           "arrays_digest"]

_BLOCK_BYTES = 1 << 24  # rows hashed per block: bounded host temporaries


def sha256_bytes(data: bytes) -> str:
    """SHA-256 (hex) of `data`."""
    return hashlib.sha256(data).hexdigest()


def sha256_pieces(pieces: Iterable[bytes]) -> str:
    """SHA-256 (hex) of the concatenation of `pieces` (streamed)."""
    h = hashlib.sha256()
    for piece in pieces:
        h.update(piece)
    return h.hexdigest()


def sha256_json(obj: Any) -> str:
    """SHA-256 (hex) of `json.dumps(obj)` (default separators: a persisted layout)."""
    return sha256_bytes(json.dumps(obj).encode())


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 (hex) of a file's bytes, read in 4 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def array_sha256(x) -> str:
    """SHA-256 (hex) of an array's shape, dtype and bytes in row order.

    Args:
      x: a numpy array, memmap or jax array (anything with shape, dtype and
        row slicing); hashed `_BLOCK_BYTES` of rows at a time.

    Returns:
      The hex digest of `json.dumps([shape, dtype name])` followed by the
      C-order bytes.
    """
    h = hashlib.sha256()
    h.update(json.dumps([list(x.shape), str(np.dtype(x.dtype))]).encode())
    if len(x.shape) == 0:
        h.update(np.ascontiguousarray(np.asarray(x)).tobytes())
        return h.hexdigest()
    n = x.shape[0]
    row_bytes = max(1, int(np.prod(x.shape[1:])) * np.dtype(x.dtype).itemsize)
    step = max(1, _BLOCK_BYTES // row_bytes)
    for i in range(0, n, step):
        h.update(np.ascontiguousarray(np.asarray(x[i:i + step])).tobytes())
    return h.hexdigest()


def arrays_digest(arrays: Mapping[str, np.ndarray]) -> str:
    """SHA-256 over named arrays (names, dtypes, shapes and bytes, sorted by
    name): recorded in checkpoint and result headers, verified on load."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(np.asarray(arrays[name]))
        h.update(json.dumps([name, a.dtype.str, list(a.shape)]).encode())
        h.update(a.tobytes())
    return h.hexdigest()
