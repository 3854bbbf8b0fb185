"""Activations in memory (`Activations`) and on disk (`ActivationStore`).

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

import dataclasses
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Iterator, Mapping, NamedTuple

import numpy as np

from snmf_jax._io import atomic_write_bytes, write_safetensors

FORMAT = "snmf-jax-activations"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
DOCUMENTS = "documents.json"
STORE_DTYPES = ("float32", "float16")


# ---------------------------------------------------------------------------
# Token text and context, shared by Activations and ActivationStore.


def _token_text(text: str, span: np.ndarray, token_id: int) -> str:
    s, e = int(span[0]), int(span[1])
    return text[s:e] if e > s else f"<special {token_id}>"


def _context(text: str, span: np.ndarray, window: int | None,
             marker: tuple[str, str]) -> str:
    s, e = int(span[0]), int(span[1])
    lo, hi = (0, len(text)) if window is None else (max(0, s - window),
                                                     min(len(text), e + window))
    left = ("…" if lo > 0 else "") + text[lo:s]
    right = text[e:hi] + ("…" if hi < len(text) else "")
    return f"{left}{marker[0]}{text[s:e]}{marker[1]}{right}"


@dataclasses.dataclass(frozen=True, eq=False)
class Activations:
    """Activations of one layer at one site, one row per token, in memory.

    Rows follow the export order: documents sorted by token length (stable),
    each document's tokens contiguous and in position order. `doc_ids` map a
    row back to its document.

    Attributes:
      X: (n, d) float32 activations.
      doc_ids: (n,) int32 document index into `texts`.
      positions: (n,) int32 token position in its document (BOS is 0).
      token_ids: (n,) int32 token id.
      offsets: (n, 2) int32 [start, end) character span of the token in its
        document's text (empty for special tokens such as BOS).
      texts: the documents.
      labels: (n,) int32 index into `label_names` (the document's label), or
        None for unlabelled data.
      label_names: label vocabulary, or None.
      layer: the layer the rows come from.
      site: "mlp_hidden", "mlp_out" or "resid_post".
      model_name: name of the model that produced them.
    """

    X: np.ndarray
    doc_ids: np.ndarray
    positions: np.ndarray
    token_ids: np.ndarray
    offsets: np.ndarray
    texts: tuple[str, ...]
    labels: np.ndarray | None = None
    label_names: tuple[str, ...] | None = None
    layer: int = 0
    site: str = "mlp_hidden"
    model_name: str = ""

    def __post_init__(self):
        n = self.X.shape[0]
        if self.X.ndim != 2:
            raise ValueError(f"Activations.X must be (n, d); got shape {self.X.shape}")
        for name in ("doc_ids", "positions", "token_ids", "labels"):
            a = getattr(self, name)
            if a is not None and a.shape != (n,):
                raise ValueError(
                    f"Activations.{name} must have shape ({n},); got {a.shape}")
        if self.offsets.shape != (n, 2):
            raise ValueError(
                f"Activations.offsets must have shape ({n}, 2); got {self.offsets.shape}")
        if (self.labels is None) != (self.label_names is None):
            raise ValueError("Activations.labels and label_names go together")

    @property
    def n(self) -> int:
        return self.X.shape[0]

    @property
    def d(self) -> int:
        return self.X.shape[1]

    def __len__(self) -> int:
        return self.X.shape[0]

    def token_text(self, i: int) -> str:
        """The text of row i's token (its span in the document)."""
        return _token_text(self.texts[self.doc_ids[i]], self.offsets[i],
                           int(self.token_ids[i]))

    def context(self, i: int, window: int | None = 80,
                marker: tuple[str, str] = ("[[", "]]")) -> str:
        """Row i's document with its token marked, e.g. ``'a [[cat]] sat'``.

        Args:
          i: row index.
          window: characters kept on each side of the token (None: all);
            cut sides are shown with an ellipsis.
          marker: strings put before and after the token.
        """
        return _context(self.texts[self.doc_ids[i]], self.offsets[i], window, marker)

    def label_of(self, i: int) -> str | None:
        """Row i's label name, or None for unlabelled data."""
        return None if self.labels is None else self.label_names[self.labels[i]]

    def select(self, rows: np.ndarray) -> "Activations":
        """A new `Activations` with the given rows (int indices or a bool mask)."""
        rows = np.asarray(rows)
        pick = lambda a: None if a is None else a[rows]
        return dataclasses.replace(
            self, X=self.X[rows], doc_ids=self.doc_ids[rows],
            positions=self.positions[rows], token_ids=self.token_ids[rows],
            offsets=self.offsets[rows], labels=pick(self.labels))


# ---------------------------------------------------------------------------
# Writing.


def _write_json(path: Path, obj: Any) -> None:
    # default=str: free-form dataset metadata must not make an export fail.
    atomic_write_bytes(path, json.dumps(obj, indent=1, ensure_ascii=False,
                                         default=str).encode())




def _chunk_name(i: int) -> str:
    return f"chunk-{i:06d}.safetensors"


def _read_manifest(path: Path) -> dict:
    mpath = path / MANIFEST
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{path} is not an activation store: no {MANIFEST}") from None
    if manifest.get("format") != FORMAT:
        raise ValueError(
            f"{mpath}: format is {manifest.get('format')!r}; expected {FORMAT!r}")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{mpath}: format_version {manifest.get('format_version')!r} is not "
            f"supported (this version of snmf-jax reads {FORMAT_VERSION})")
    return manifest


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
        if int(chunk_rows) < 1:
            raise ValueError(f"chunk_rows must be >= 1; got {chunk_rows}")
        self.path = Path(path)
        self.layers = tuple(int(x) for x in layers)
        self.d = int(d)
        self.chunk_rows = int(chunk_rows)
        self.n_rows = int(n_rows)
        self.dtype = np.dtype(dtype)
        self.provenance = {k: (np.dtype(v[0]), tuple(v[1]))
                           for k, v in (provenance or {}).items()}
        settings = json.loads(json.dumps(dict(settings)))  # normalise tuples etc.
        mpath = self.path / MANIFEST
        if overwrite and self.path.exists():
            if mpath.exists() or not any(self.path.iterdir()):
                shutil.rmtree(self.path)
            else:
                raise ValueError(
                    f"out={str(self.path)!r} exists and is not an activation store; "
                    "refusing to delete it")
        if mpath.exists():
            manifest = _read_manifest(self.path)
            if manifest["settings"] != settings:
                old = manifest["settings"]
                diff = [f"{k}: stored {old.get(k)!r} != requested {settings.get(k)!r}"
                        for k in sorted(set(old) | set(settings))
                        if old.get(k) != settings.get(k)]
                raise ValueError(
                    f"the activation store at {str(self.path)!r} was written with "
                    "different settings, so it cannot be resumed:\n  "
                    + "\n  ".join(diff)
                    + "\nUse another `out` directory or pass overwrite=True.")
            for c in manifest["chunks"]:
                f = self.path / c["file"]
                if not f.exists() or f.stat().st_size != c["bytes"]:
                    raise ValueError(
                        f"{f}: listed as complete in the manifest but missing or "
                        "of the wrong size; the store is damaged (pass "
                        "overwrite=True to start again)")
            self.manifest = manifest
        else:
            if self.path.exists() and any(self.path.iterdir()):
                raise ValueError(
                    f"out={str(self.path)!r} exists, is not empty and has no "
                    f"{MANIFEST}; choose an empty or new directory")
            self.path.mkdir(parents=True, exist_ok=True)
            if documents is not None:
                _write_json(self.path / DOCUMENTS, dict(documents))
            self.manifest = {
                "format": FORMAT, "format_version": FORMAT_VERSION,
                **dict(info or {}),
                "layers": list(self.layers), "d": self.d, "dtype": dtype,
                "chunk_rows": self.chunk_rows, "n_rows": self.n_rows,
                "provenance": {k: [v[0].name, list(v[1])]
                               for k, v in self.provenance.items()},
                "settings": settings, "complete": False, "chunks": [],
            }
            _write_json(mpath, self.manifest)
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
        m = next(iter(X.values())).shape[0]
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
        name = _chunk_name(i)
        tensors = {k: v[:self._fill] for k, v in self._buf.items()}
        digest = write_safetensors(self.path / name, tensors,
                                   {"format": FORMAT, "chunk": str(i)})
        self._commit_chunk({"file": name, "rows": self._fill,
                            "bytes": (self.path / name).stat().st_size,
                            "sha256": digest})
        self.rows_done += self._fill
        self._fill = 0
        if self.n_rows - self.rows_done < self._buf[f"X.{self.layers[0]}"].shape[0]:
            self._buf = None  # the tail chunk gets a right-sized buffer

    def _commit_chunk(self, entry: dict) -> None:
        self.manifest["chunks"].append(entry)
        _write_json(self.path / MANIFEST, self.manifest)

    def finish(self) -> "ActivationStore":
        """Writes the last chunk, marks the store complete and opens it."""
        if not self.complete:
            self._flush()
            if self.rows_done != self.n_rows:
                raise RuntimeError(
                    f"store at {self.path} received {self.rows_done} rows; expected "
                    f"{self.n_rows}")
            self.manifest["complete"] = True
            _write_json(self.path / MANIFEST, self.manifest)
        self._buf = None
        return ActivationStore(self.path)


# ---------------------------------------------------------------------------
# Reading.


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
        self.manifest = _read_manifest(self.path)
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
        self.chunk_bounds = np.concatenate(
            [[0], np.cumsum([c["rows"] for c in self._chunks], dtype=np.int64)])
        self._docs: dict | None = None

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
        if not -self.num_chunks <= i < self.num_chunks:
            raise IndexError(
                f"chunk index {i} out of range for a store of {self.num_chunks} chunks")
        return self.path / self._chunks[i]["file"]

    def _tensor(self, i: int, name: str) -> np.ndarray:
        from safetensors import safe_open
        with safe_open(str(self._file(i)), framework="numpy") as f:
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
        n = self.n_rows
        if not (0 <= start <= stop <= n):
            raise IndexError(
                f"rows({start}, {stop}) out of range for a store of {n} rows")
        out = []
        first = int(np.searchsorted(self.chunk_bounds, start, side="right")) - 1
        for i in range(max(first, 0), self.num_chunks):
            lo, hi = int(self.chunk_bounds[i]), int(self.chunk_bounds[i + 1])
            if lo >= stop:
                break
            out.append((i, slice(max(start, lo) - lo, min(stop, hi) - lo)))
        return out

    def rows(self, start: int, stop: int, layer: int | None = None,
             dtype: Any = np.float32) -> np.ndarray:
        """Rows [start, stop) of one layer, (stop - start, d), across chunks.

        Reads only the chunks that overlap the range.
        """
        layer = self._layer(layer)
        parts = [self.chunk(i, layer, dtype)[sl] for i, sl in self._span(start, stop)]
        if not parts:
            return np.empty((0, self.d), self.dtype if dtype is None else dtype)
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

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
            self._docs = (json.loads(p.read_text(encoding="utf-8")) if p.exists()
                          else {"texts": [], "labels": None, "label_names": None})
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
        return _token_text(self._documents()["texts"][p.doc_ids[0]], p.offsets[0],
                           int(p.token_ids[0]))

    def context(self, row: int, window: int | None = 80,
                marker: tuple[str, str] = ("[[", "]]")) -> str:
        """The row's document with its token marked (see Activations.context)."""
        p = self.provenance_rows(row, row + 1)
        return _context(self._documents()["texts"][p.doc_ids[0]], p.offsets[0],
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
        """Re-hashes every chunk file; raises ValueError on a mismatch."""
        for i, c in enumerate(self._chunks):
            h = hashlib.sha256()
            with open(self.path / c["file"], "rb") as f:
                for block in iter(lambda: f.read(1 << 22), b""):
                    h.update(block)
            if h.hexdigest() != c["sha256"]:
                raise ValueError(
                    f"{self.path / c['file']}: SHA-256 does not match the manifest; "
                    "the chunk is corrupt")
