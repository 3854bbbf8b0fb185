"""`StoreWriter`: writes an activation store chunk by chunk, resumably.

See `_store` for the layout. Overwriting removes only what a writer of this
package puts in a store folder (the manifest, documents.json, chunk files
and temp files); anything else in the folder is left alone.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from snmf_jax import _checks, _chunks, _resume
# default=str on every write: free-form dataset metadata must not make an export fail.
from snmf_jax._io import write_json
from snmf_jax.activations._store import (DOCUMENTS, FORMAT, FORMAT_VERSION, MANIFEST,
                                         STORE_DTYPES, ActivationStore, read_manifest)

_OWN_FILE = _chunks.own_files(MANIFEST, DOCUMENTS)


def remove_store_files(path: Path) -> None:
    """Deletes the files a StoreWriter wrote at `path` (after checking the
    manifest is an activation store's), and the folder if that empties it.

    Chunk files go only when the store would have written them: listed in
    the manifest, or the next one (renamed into place by a writer that died
    before listing it). A user's file that merely looks like ours stays.
    """
    m = read_manifest(path)  # refuses a manifest that is not ours
    # Names come from our own naming pattern, never from the manifest: chunk i
    # is removed only under the name the writer gives it, and only when the
    # manifest lists it there with its size, or its own header says a writer
    # of this package wrote it as chunk i (the one a crash left unlisted).
    sizes = {_chunks.chunk_name(i): c.get("bytes") for i, c in enumerate(m["chunks"])
             if c.get("file") == _chunks.chunk_name(i)}
    for i in range(len(m["chunks"]) + 1):
        p = path / _chunks.chunk_name(i)
        if p.is_file() and not p.is_symlink() and (
                sizes.get(p.name) == p.stat().st_size or _wrote_chunk(p, i)):
            p.unlink()
    for p in path.iterdir():
        if p.is_file() and (p.name in (MANIFEST, DOCUMENTS) or (
                _OWN_FILE.match(p.name) and p.name.endswith(".tmp"))):
            p.unlink()
    if not any(path.iterdir()):
        path.rmdir()


def _wrote_chunk(path: Path, i: int) -> bool:
    """The safetensors header of `path` says it is chunk i of an activation store."""
    from snmf_jax._io import read_metadata  # pylint: disable=g-import-not-at-top
    try:
        meta = read_metadata(path)
    except (ValueError, OSError):
        return False
    return meta.get("format") == FORMAT and meta.get("chunk") == str(i)


class StoreWriter:
    """Writes a store chunk by chunk; resumes an interrupted one.

    Rows are appended in batches (`append`); whenever `chunk_rows` rows are
    buffered they are written as one chunk. `finish` writes the last, shorter
    chunk and marks the store complete. Host memory: one chunk buffer.

    Resuming: if `path` already holds a manifest written with the same
    `settings`, the writer keeps its complete chunks; `rows_done` tells the
    caller how many leading rows to skip (it must append exactly the rows it
    would have appended after them). Different settings raise ValueError
    unless `overwrite=True`.

    Args:
      path: store directory (created if missing).
      layers: the layers stored (tensors "X.<layer>").
      d: width of each row.
      chunk_rows: rows per chunk.
      n_rows: total rows the store will hold (checked at `finish`).
      settings: JSON-serialisable dict identifying the export; resuming
        requires an equal dict.
      info: extra manifest entries (model name, site, ...).
      documents: texts / labels / label_names / metadata for documents.json,
        or None.
      provenance: name -> (dtype, trailing shape) of per-row provenance
        tensors.
      dtype: "float32" or "float16" storage of X.
      overwrite: delete an existing store at `path` instead of resuming it.
    """

    def __init__(self, path: str | os.PathLike, *, layers: tuple[int, ...], d: int,
                 chunk_rows: int, n_rows: int, settings: Mapping[str, Any],
                 info: Mapping[str, Any] | None = None,
                 documents: Mapping[str, Any] | None = None,
                 provenance: Mapping[str, tuple[str, tuple[int, ...]]] | None = None,
                 dtype: str = "float32", overwrite: bool = False):
        if dtype not in STORE_DTYPES:
            raise ValueError(f"dtype must be one of {STORE_DTYPES}; got {dtype!r}")
        layers = tuple(layers)
        if not layers or len(set(layers)) != len(layers):
            raise ValueError(f"layers must be distinct layer indices, at least one; got "
                             f"{list(layers)}")
        for l in layers:
            _checks.integer("layers[...]", l, lo=0)
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            raise ValueError(f"out={str(self.path)!r} exists and is not a directory")
        self.layers = tuple(int(x) for x in layers)
        self.d = _checks.integer("d", d, lo=1)
        self.chunk_rows = _checks.integer("chunk_rows", chunk_rows, lo=1)
        self.n_rows = _checks.integer("n_rows", n_rows, lo=0)
        self.dtype = np.dtype(dtype)
        self.provenance = {k: (np.dtype(v[0]), tuple(v[1]))
                           for k, v in (provenance or {}).items()}
        settings = json.loads(json.dumps(dict(settings)))  # normalise tuples etc.
        mpath = self.path / MANIFEST
        if overwrite and self.path.exists():
            if mpath.exists():
                remove_store_files(self.path)
            elif any(self.path.iterdir()):
                raise ValueError(
                    f"out={str(self.path)!r} exists and is not an activation store; "
                    "refusing to delete it")
        if mpath.exists():
            manifest = read_manifest(self.path)
            _resume.refuse_resume(
                f"the activation store at {str(self.path)!r}", manifest["settings"], settings,
                kind="settings", saved_as="stored",
                remedy="it cannot be resumed; use another `out` directory or pass "
                       "overwrite=True")
            for c in manifest["chunks"]:
                try:
                    _chunks.check_entry(self.path, c, hash_bytes=False)
                except (ValueError, FileNotFoundError) as e:
                    raise ValueError(f"{e} (pass overwrite=True to start again)") from None
            self.manifest = manifest
        else:
            if self.path.exists() and any(self.path.iterdir()) and not overwrite:
                raise ValueError(
                    f"out={str(self.path)!r} exists, is not empty and has no "
                    f"{MANIFEST}; choose an empty or new directory")
            self.path.mkdir(parents=True, exist_ok=True)
            if documents is not None:
                write_json(self.path / DOCUMENTS, dict(documents), default=str)
            self.manifest = {
                "format": FORMAT, "format_version": FORMAT_VERSION,
                **dict(info or {}),
                "layers": list(self.layers), "d": self.d, "dtype": dtype,
                "chunk_rows": self.chunk_rows, "n_rows": self.n_rows,
                "provenance": {k: [v[0].name, list(v[1])]
                               for k, v in self.provenance.items()},
                "settings": settings, "complete": False, "chunks": [],
            }
            write_json(mpath, self.manifest, default=str)
        self.rows_done = sum(c["rows"] for c in self.manifest["chunks"])
        self._buf: dict[str, np.ndarray] | None = None
        self._fill = 0

    @property
    def complete(self) -> bool:
        return bool(self.manifest["complete"])

    def _buffers(self) -> dict[str, np.ndarray]:
        if self._buf is None:
            rows = min(self.chunk_rows, max(self.n_rows - self.rows_done, 1))
            self._buf = {f"X.{l}": np.empty((rows, self.d), self.dtype)
                         for l in self.layers}
            for k, (dt, tail) in self.provenance.items():
                self._buf[k] = np.empty((rows, *tail), dt)
        return self._buf

    def append(self, X: Mapping[int, np.ndarray], provenance: Mapping[str, np.ndarray]) -> None:
        """Appends m rows: X maps layer -> (m, d); provenance name -> (m, ...)."""
        if self.complete:
            raise ValueError("the store is already complete")
        if set(X) != set(self.layers):
            raise ValueError(f"append: X must map every layer of the store {list(self.layers)} "
                             f"to its rows; got layers {sorted(X)}")
        m = None
        for l in self.layers:
            shape = np.shape(X[l])
            if len(shape) != 2 or shape[1] != self.d or (m is not None and shape[0] != m):
                raise ValueError(f"append: X[{l}] must have shape (rows, d={self.d}) like the "
                                 f"other layers; got shape {shape}")
            m = shape[0]
            if not np.isfinite(X[l]).all():
                raise ValueError(f"append: X[{l}] has {int((~np.isfinite(X[l])).sum())} "
                                 "non-finite value(s); a store holds finite activations")
            if self.dtype.kind == "f" and np.size(X[l]):
                # A value the storage dtype cannot hold would be read back as inf.
                top = float(np.max(np.abs(X[l])))
                if top > float(np.finfo(self.dtype).max):
                    raise ValueError(
                        f"append: X[{l}] holds {top:.4g}, beyond the largest {self.dtype} "
                        f"({float(np.finfo(self.dtype).max):.6g}); store as float32")
        if self.rows_done + self._fill + m > self.n_rows:
            raise ValueError(
                f"appending {m} rows would exceed the store's n_rows={self.n_rows} "
                f"({self.rows_done + self._fill} already written or buffered)")
        start = 0
        while start < m:
            buf = self._buffers()
            take = min(m - start, buf[f"X.{self.layers[0]}"].shape[0] - self._fill)
            sl = slice(self._fill, self._fill + take)
            for l in self.layers:
                buf[f"X.{l}"][sl] = X[l][start:start + take]
            for k in self.provenance:
                buf[k][sl] = provenance[k][start:start + take]
            self._fill += take
            start += take
            if self._fill == self.chunk_rows:
                self._flush()

    def _flush(self) -> None:
        if not self._fill:
            return
        i = len(self.manifest["chunks"])
        tensors = {k: v[:self._fill] for k, v in self._buf.items()}
        self._commit_chunk(_chunks.write_chunk(self.path, i, tensors,
                                               {"format": FORMAT, "chunk": str(i)}))
        self.rows_done += self._fill
        self._fill = 0
        if self.n_rows - self.rows_done < self._buf[f"X.{self.layers[0]}"].shape[0]:
            self._buf = None  # the tail chunk gets a right-sized buffer

    def _commit_chunk(self, entry: dict) -> None:
        self.manifest["chunks"].append(entry)
        write_json(self.path / MANIFEST, self.manifest, default=str)

    def finish(self) -> "ActivationStore":
        """Writes the last chunk, marks the store complete and opens it."""
        if not self.complete:
            self._flush()
            if self.rows_done != self.n_rows:
                raise RuntimeError(
                    f"store at {self.path} received {self.rows_done} rows; expected "
                    f"{self.n_rows}")
            self.manifest["complete"] = True
            write_json(self.path / MANIFEST, self.manifest, default=str)
        self._buf = None
        return ActivationStore(self.path)


