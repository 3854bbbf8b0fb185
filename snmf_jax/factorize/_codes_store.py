"""`CodesStore`: codes (n_rows, K) on disk, in the chunking of their activations.

The same chunked row store as an activation store (`snmf_jax._chunks`: one
chunk naming, one row-range mapping, per-chunk SHA-256 in the manifest);
each chunk holds one tensor "codes" (rows, K).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from snmf_jax import _checks
from snmf_jax import _chunks, _digest, _io

CODES_FORMAT = "snmf_jax.codes/2"


class CodesStore:
    """Codes on disk; satisfies RowSource (d is K).

    Written by the streaming fit (and by the multi-process CLI); read with
    `chunk(i)`, `rows(start, stop)` or `to_numpy()`. Every chunk read is
    checked against the SHA-256 the manifest records.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        mpath = self.path / _chunks.MANIFEST
        if not mpath.is_file():
            raise FileNotFoundError(f"no codes store at {self.path}: {mpath} is missing "
                                    "(an interrupted write, or not a codes folder)")
        m = _io.read_json(mpath)
        if not isinstance(m, dict) or m.get("format") != CODES_FORMAT:
            got = m.get("format") if isinstance(m, dict) else type(m).__name__
            raise ValueError(f"{mpath}: format {got!r}; expected {CODES_FORMAT!r}")
        rank = m.get("rank")
        if not _checks.is_int(rank) or rank < 1:
            raise ValueError(f"{mpath}: rank must be an int >= 1; got {rank!r}")
        step = m.get("step")
        if step is not None and (not _checks.is_int(step) or step < 0):
            raise ValueError(f"{mpath}: step must be null or an int >= 0; got {step!r}")
        if m.get("store") is not None and not isinstance(m["store"], dict):
            raise ValueError(f"{mpath}: store must be null or an object; got {m['store']!r}")
        self.manifest = m
        self._chunks = _chunks.check_entries(mpath, m.get("chunks"))
        self.chunk_bounds = _chunks.bounds_of(self._chunks)
        self.num_chunks = len(self._chunks)
        self.n_rows = int(self.chunk_bounds[-1])
        self.d = self.rank = int(m["rank"])
        self.step = m.get("step")

    def chunk(self, i: int) -> np.ndarray:
        """Codes of chunk i, verified against the manifest's SHA-256."""
        entry = self._chunks[i]
        path = _chunks.chunk_path(self.path, entry)
        data = path.read_bytes()
        if _digest.sha256_bytes(data) != entry.get("sha256"):
            raise ValueError(f"{path}: SHA-256 does not match {self.path / _chunks.MANIFEST}; "
                             "the codes chunk is corrupt")
        codes = _io.load_bytes(data)["codes"]
        want = (int(entry["rows"]), self.rank)  # (rows, K)
        if codes.shape != want:
            raise ValueError(f"{path}: codes of shape {codes.shape}; the manifest says {want}")
        return codes

    def rows(self, start: int, stop: int) -> np.ndarray:
        """Codes of rows [start, stop), (stop - start, K)."""
        return _chunks.read_range(self.chunk, self.chunk_bounds, start, stop, self.d, np.float32)

    def to_numpy(self) -> np.ndarray:
        """All codes, (n_rows, K)."""
        return self.rows(0, self.n_rows)

    @staticmethod
    def write_chunk(path: str | os.PathLike, i: int, codes: np.ndarray) -> dict[str, Any]:
        """Writes chunk i; returns its manifest entry."""
        Path(path).mkdir(parents=True, exist_ok=True)
        return _chunks.write_chunk(path, i, {"codes": np.asarray(codes)})

    @staticmethod
    def finish(path: str | os.PathLike, rank: int, entries: Sequence[dict] | None = None,
               **info) -> "CodesStore":
        """Writes the manifest (last, so a folder without one is incomplete).

        Args:
          path: the codes folder.
          rank: K.
          entries: the chunk entries `write_chunk` returned, in order; None
            lists (and hashes) the chunk files found in the folder.
          **info: extra manifest fields (e.g. step).
        """
        path = Path(path)
        if entries is None:
            entries, i = [], 0
            while (path / _chunks.chunk_name(i)).is_file():
                f = path / _chunks.chunk_name(i)
                rows = int(_io.read_shape(f, "codes")[0])
                entries.append({"file": f.name, "rows": rows, "bytes": f.stat().st_size,
                                "sha256": _digest.file_sha256(f)})
                i += 1
        _io.write_json(path / _chunks.MANIFEST,
                       {"format": CODES_FORMAT, "rank": int(rank), "chunks": list(entries),
                        **info})
        return CodesStore(path)
