"""`ActivationStore`: read-only view of activations on disk (see `_writer`).

On-disk layout of a store (a directory)::

    manifest.json              format, model, site, layers, d, dtype,
                               chunk_rows, settings, complete chunks
    documents.json             texts, per-document labels, label names
    chunk-000000.safetensors   rows [0, chunk_rows)
    chunk-000001.safetensors   rows [chunk_rows, 2 * chunk_rows)
    ...

Every chunk holds `chunk_rows` rows (the last one may hold fewer) as plain
safetensors tensors::

    X.<layer>   (rows, d)  activations of that layer (float32 or float16)
    doc_ids     (rows,)    int32 index of the document in documents.json
    positions   (rows,)    int32 token position in the document (BOS = 0)
    token_ids   (rows,)    int32
    offsets     (rows, 2)  int32 [start, end) character span of the token
    labels      (rows,)    int32 label index (labelled datasets only)

Safetensors, not zarr: no new dependency; `safe_open` reads one tensor of one
chunk without touching the rest; every tool that reads safetensors (numpy,
torch, JAX, Rust) can open a chunk; the format is a JSON header plus raw
little-endian bytes, so we write it straight from the chunk buffer without an
extra copy.

Crash safety: a chunk is written to a temp file in the same directory, flushed
and fsync'ed, then renamed into place; only then is the manifest (written the
same way) updated to list it. A chunk file not listed in the manifest is
never read, so a half-written chunk is never taken for a complete one.
Reading never writes, so any number of processes can read a store at once.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterator, NamedTuple

import numpy as np

from snmf_jax import _checks
from snmf_jax import _chunks, _digest
from snmf_jax._io import (MAX_JSON_BYTES, parse_json, read_bytes, read_json,
                          reading_safetensors)
from snmf_jax.activations._activations import Activations, context_text, token_text

FORMAT = "snmf-jax-activations"
FORMAT_VERSION = 1
MANIFEST = _chunks.MANIFEST
DOCUMENTS = "documents.json"
STORE_DTYPES = ("float32", "float16")


def read_manifest(path: Path) -> dict:
    mpath = path / MANIFEST
    try:
        manifest = parse_json(read_bytes(mpath, MAX_JSON_BYTES, "manifest").decode(
            "utf-8", errors="strict"), mpath)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{path} is not an activation store: no {MANIFEST}") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{mpath}: not valid JSON ({e})") from None
    if not isinstance(manifest, dict):
        raise ValueError(f"{mpath}: expected a JSON object; got {type(manifest).__name__}")
    if manifest.get("format") != FORMAT:
        raise ValueError(
            f"{mpath}: format is {manifest.get('format')!r}; expected {FORMAT!r}")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{mpath}: format_version {manifest.get('format_version')!r} is not "
            f"supported (this version of snmf-jax reads {FORMAT_VERSION})")
    check_manifest_fields(manifest, mpath)
    return manifest


def check_manifest_fields(m: dict, mpath: Path) -> None:
    """The fields a reader relies on have the types and ranges a writer gives them,
    so an edited or damaged manifest fails here, naming the file, not as a
    KeyError (or a silently wrong row mapping) later."""
    def bad(what: str, got) -> ValueError:
        return ValueError(f"{mpath}: {what}; got {got!r}")

    def is_int(v, lo):
        return _checks.is_int(v) and v >= lo

    for key in ("layers", "d", "dtype", "chunk_rows", "chunks", "complete"):
        if key not in m:
            raise ValueError(f"{mpath}: missing field {key!r}; the store is damaged")
    if not (isinstance(m["layers"], list) and m["layers"]
            and all(is_int(l, 0) for l in m["layers"])):
        raise bad("layers must be a non-empty list of ints >= 0", m["layers"])
    for key in ("d", "chunk_rows"):
        if not is_int(m[key], 1):
            raise bad(f"{key} must be an int >= 1", m[key])
    if m["dtype"] not in STORE_DTYPES:
        raise bad(f"dtype must be one of {STORE_DTYPES}", m["dtype"])
    if not isinstance(m["complete"], bool):
        raise bad("complete must be true or false", m["complete"])
    for key in ("site", "model"):
        if m.get(key) is not None and not isinstance(m[key], str):
            raise bad(f"{key} must be a string", m[key])
    if "n_rows" in m and not is_int(m["n_rows"], 0):
        raise bad("n_rows must be an int >= 0", m["n_rows"])
    if not isinstance(m.get("settings", {}), dict):
        raise bad("settings must be an object", m["settings"])
    _chunks.check_entries(mpath, m["chunks"])


class Provenance(NamedTuple):
    """Where the rows of a chunk come from (all (rows,) int32 but offsets)."""

    doc_ids: np.ndarray
    positions: np.ndarray
    token_ids: np.ndarray
    offsets: np.ndarray  # (rows, 2)
    labels: np.ndarray | None


class ActivationStore:
    """Read-only view of an activation store directory.

    Opening reads only the manifest; `chunk(i)` reads one tensor of one chunk
    file. Typical streaming use::

        store = ActivationStore("runs/acts")
        for i in range(store.num_chunks):
            X = store.chunk(i)            # (rows_i, d) float32
            ...

    The first read of each chunk through this object checks the file's size
    and SHA-256 against the manifest (a mismatch raises, naming the file),
    and chunk file names must stay inside the store folder.

    Args:
      path: the store directory.
      allow_incomplete: open a store whose export has not finished (only its
        complete chunks are visible); by default that is an error.

    Attributes:
      path, manifest (the parsed manifest.json), layers, site, model_name,
      d, dtype (storage dtype), chunk_rows, num_chunks, n_rows,
      chunk_bounds ((num_chunks + 1,) int64: chunk i holds rows
      [chunk_bounds[i], chunk_bounds[i + 1])).
    """

    def __init__(self, path: str | os.PathLike, *, allow_incomplete: bool = False):
        self.path = Path(path)
        self.manifest = read_manifest(self.path)
        if not self.manifest["complete"] and not allow_incomplete:
            done = sum(c["rows"] for c in self.manifest["chunks"])
            raise ValueError(
                f"the activation store at {str(self.path)!r} is incomplete "
                f"({done} of {self.manifest['n_rows']} rows in "
                f"{len(self.manifest['chunks'])} chunks); rerun the same export "
                "to resume it, or pass allow_incomplete=True")
        m = self.manifest
        self.layers: tuple[int, ...] = tuple(m["layers"])
        self.site: str | None = m.get("site")
        self.model_name: str | None = m.get("model")
        self.d: int = m["d"]
        self.dtype = np.dtype(m["dtype"])
        self.chunk_rows: int = m["chunk_rows"]
        self._chunks = m["chunks"]
        self.chunk_bounds = _chunks.bounds_of(self._chunks)
        self._docs: dict | None = None
        self._verified: set[int] = set()

    # -- shape ---------------------------------------------------------------

    @property
    def num_chunks(self) -> int:
        return len(self._chunks)

    @property
    def n_rows(self) -> int:
        return int(self.chunk_bounds[-1])

    @property
    def shape(self) -> tuple[int, int]:
        return (self.n_rows, self.d)

    def __len__(self) -> int:
        return self.n_rows

    def __repr__(self) -> str:
        return (f"ActivationStore({str(self.path)!r}, model={self.model_name!r}, "
                f"site={self.site!r}, layers={list(self.layers)}, "
                f"shape={self.shape}, chunks={self.num_chunks})")

    def identity(self, layer: int | None = None) -> dict[str, Any]:
        """What a result fitted on this store records, so a reader can refuse
        another store: the SHA-256 over the chunk digests of the manifest (no
        data is read), the layer, site, model and row count."""
        digests = [c.get("sha256") for c in self._chunks]
        return {"sha256": _digest.sha256_json(digests),
                "layer": self._layer(layer), "site": self.site, "model": self.model_name,
                "n_rows": self.n_rows}

    def check_identity(self, recorded: Any, layer: int | None, *, what: str) -> None:
        """Refuses a store other than the one `what` records it was fitted on.

        Args:
          recorded: the `store` identity a result, hierarchy or codes store
            recorded (`identity`); None (an older file) checks nothing here.
          layer: the layer the caller will use (None: the store's only one).
          what: names the fitted file in messages.
        """
        if recorded is None:
            return
        if not isinstance(recorded, dict):
            raise ValueError(f"{what}: its recorded store identity must be an object; got "
                             f"{type(recorded).__name__}")
        use = layer if layer is not None else recorded.get("layer")
        if use is not None and use not in self.layers:
            raise ValueError(f"{what} was fitted on layer {use!r}, which {str(self.path)!r} "
                             f"does not hold (layers {list(self.layers)})")
        now = self.identity(use)
        for key in ("sha256", "layer", "site", "n_rows"):
            if key in recorded and recorded[key] != now[key]:
                got = "other data" if key == "sha256" else repr(now[key])
                raise ValueError(
                    f"{what} was fitted on another store ({key}: recorded "
                    f"{str(recorded[key])[:16]!r}, {str(self.path)!r} has {got}); pass the "
                    "store, layer and site it was fitted on")

    # -- reading -------------------------------------------------------------

    def _layer(self, layer: int | None) -> int:
        if layer is None:
            if len(self.layers) != 1:
                raise ValueError(
                    f"this store holds layers {list(self.layers)}; pass layer=")
            return self.layers[0]
        if layer not in self.layers:
            raise ValueError(f"layer must be one of {list(self.layers)}; got {layer!r}")
        return layer

    def _file(self, i: int) -> Path:
        if not _checks.is_int(i):
            raise TypeError(f"chunk index must be an int; got {i!r}")
        if not -self.num_chunks <= i < self.num_chunks:
            raise IndexError(
                f"chunk index {i} out of range for a store of {self.num_chunks} chunks")
        i = i % self.num_chunks
        if i not in self._verified:  # first read of a chunk: check it against the manifest
            path = _chunks.check_entry(self.path, self._chunks[i], hash_bytes=True)
            self._verified.add(i)
            return path
        return _chunks.chunk_path(self.path, self._chunks[i])

    def _tensor(self, i: int, name: str) -> np.ndarray:
        from safetensors import safe_open
        path = self._file(i)
        with reading_safetensors(path), safe_open(str(path), framework="numpy") as f:
            return f.get_tensor(name)

    def chunk(self, i: int, layer: int | None = None,
              dtype: Any = np.float32) -> np.ndarray:
        """Rows of chunk i: (chunk_bounds[i+1] - chunk_bounds[i], d).

        Args:
          i: chunk index.
          layer: which layer (None: the only one).
          dtype: returned dtype (default float32); None keeps the storage dtype.
        """
        x = self._tensor(i, f"X.{self._layer(layer)}")
        j = i % self.num_chunks
        want = (int(self.chunk_bounds[j + 1] - self.chunk_bounds[j]), self.d)  # (rows, d)
        if x.shape != want:
            raise ValueError(f"{self._file(i)}: holds an array of shape {x.shape} but the "
                             f"manifest says (rows, d) = {want}; the store is damaged")
        return x if dtype is None else x.astype(dtype, copy=False)

    def provenance(self, i: int) -> Provenance:
        """doc_ids, positions, token_ids, offsets and labels of chunk i."""
        from safetensors import safe_open
        with safe_open(str(self._file(i)), framework="numpy") as f:
            keys = set(f.keys())
            get = lambda k: f.get_tensor(k) if k in keys else None
            return Provenance(get("doc_ids"), get("positions"), get("token_ids"),
                              get("offsets"), get("labels"))

    def __iter__(self) -> Iterator[np.ndarray]:
        """Iterates over the chunks of the only layer, in order."""
        return self.iter_chunks()

    def iter_chunks(self, layer: int | None = None,
                    dtype: Any = np.float32) -> Iterator[np.ndarray]:
        """Yields chunk(0), chunk(1), ... of one layer."""
        layer = self._layer(layer)
        for i in range(self.num_chunks):
            yield self.chunk(i, layer, dtype)

    def _span(self, start: int, stop: int) -> list[tuple[int, slice]]:
        """(chunk index, local row slice) pairs covering rows [start, stop)."""
        return _chunks.spans(self.chunk_bounds, start, stop)

    def rows(self, start: int, stop: int, layer: int | None = None,
             dtype: Any = np.float32) -> np.ndarray:
        """Rows [start, stop) of one layer, (stop - start, d), across chunks.

        Reads only the chunks that overlap the range.
        """
        layer = self._layer(layer)
        return _chunks.read_range(lambda i: self.chunk(i, layer, dtype), self.chunk_bounds,
                                  start, stop, self.d, self.dtype if dtype is None else dtype)

    def provenance_rows(self, start: int, stop: int) -> Provenance:
        """Provenance of rows [start, stop), across chunks."""
        parts = [Provenance(*(None if a is None else a[sl] for a in self.provenance(i)))
                 for i, sl in self._span(start, stop)]
        if not parts:
            e = np.empty((0,), np.int32)
            return Provenance(e, e, e, np.empty((0, 2), np.int32),
                              e if "labels" in self.manifest["provenance"] else None)
        return Provenance(*(None if parts[0][j] is None else
                            np.concatenate([p[j] for p in parts])
                            for j in range(len(Provenance._fields))))

    # -- documents -----------------------------------------------------------

    def _documents(self) -> dict:
        if self._docs is None:
            p = self.path / DOCUMENTS
            # The texts of the whole export: data, not a sidecar, so a far larger bound.
            self._docs = (read_json(p, max_bytes=4 << 30) if p.exists()
                          else {"texts": [], "labels": None, "label_names": None})
            if not isinstance(self._docs, dict) or not isinstance(
                    self._docs.get("texts", []), list):
                raise ValueError(f"{p}: expected a JSON object with a list of texts")
        return self._docs

    @property
    def texts(self) -> tuple[str, ...]:
        return tuple(self._documents()["texts"])

    @property
    def label_names(self) -> tuple[str, ...] | None:
        names = self._documents().get("label_names")
        return None if names is None else tuple(names)

    def token_text(self, row: int) -> str:
        """Text of the token of row `row`."""
        p = self.provenance_rows(row, row + 1)
        return token_text(self._documents()["texts"][p.doc_ids[0]], p.offsets[0],
                           int(p.token_ids[0]))

    def context(self, row: int, window: int | None = 80,
                marker: tuple[str, str] = ("[[", "]]")) -> str:
        """The row's document with its token marked (see Activations.context)."""
        p = self.provenance_rows(row, row + 1)
        return context_text(self._documents()["texts"][p.doc_ids[0]], p.offsets[0],
                        window, marker)

    # -- whole-store helpers ---------------------------------------------------

    def to_activations(self, layer: int | None = None) -> Activations:
        """Loads one layer and its provenance into memory (small stores only)."""
        layer = self._layer(layer)
        X = np.empty((self.n_rows, self.d), np.float32)
        for i in range(self.num_chunks):
            X[self.chunk_bounds[i]:self.chunk_bounds[i + 1]] = self.chunk(i, layer)
        p = self.provenance_rows(0, self.n_rows)
        return Activations(
            X=X, doc_ids=p.doc_ids, positions=p.positions, token_ids=p.token_ids,
            offsets=p.offsets, texts=self.texts, labels=p.labels,
            label_names=self.label_names if p.labels is not None else None,
            layer=layer, site=self.site or "", model_name=self.model_name or "")

    def verify(self) -> None:
        """Re-hashes every chunk file; raises ValueError naming a corrupt one."""
        for c in self._chunks:
            _chunks.check_entry(self.path, c, hash_bytes=True)
