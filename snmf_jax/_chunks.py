"""The chunked row store shared by activation stores and codes stores.

A store is a folder of safetensors chunks plus a `manifest.json` that lists
them; each chunk entry records its file name, row count, size and SHA-256:

    {"file": "chunk-000003.safetensors", "rows": 4096, "bytes": ..., "sha256": ...}

Chunk i holds rows [bounds[i], bounds[i + 1]). This module is the one place
that names chunk files, maps a row range to chunks, writes a chunk (atomic,
hashed while written) and resolves a chunk's path, refusing names that
would leave the folder.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from snmf_jax import _checks, _digest
from snmf_jax._io import write_safetensors

MANIFEST = "manifest.json"


_CHUNK_FILE = r"chunk-\d{6}\.safetensors"


def own_files(*names: str) -> re.Pattern:
    """The one "files we wrote" pattern of a chunked folder: chunk files, the
    given file names, and the temp files `_io.atomic_open` leaves while writing
    any of them (".<name>.<random>.tmp"). Folder removal deletes only what this
    matches, so a user's file that merely sits there is refused, not deleted.

    Args:
      names: the folder's other files (manifest.json, documents.json, ...).

    Returns:
      A compiled pattern to `fullmatch`/`match` a file name against.
    """
    ours = "|".join([_CHUNK_FILE, *map(re.escape, names)])
    return re.compile(rf"^(?:{ours}|\.(?:{ours})\..*\.tmp)$")


_OWN = own_files(MANIFEST)


def remove_chunk_folder(path: str | os.PathLike) -> None:
    """Removes a chunked store folder this package wrote (complete or half-written).

    Only a folder holding nothing but a manifest, chunk files and temp files
    is removed; anything else in it means it is not ours, and it is refused
    (ValueError naming the file) rather than deleted.
    """
    path = Path(path)
    if not path.exists():
        return
    foreign = [p for p in path.iterdir() if not (p.is_file() and _OWN.match(p.name))]
    if foreign:
        raise ValueError(f"refusing to delete {path}: it holds {foreign[0].name!r}, which "
                         "snmf_jax did not write; move it away or choose another folder")
    for p in path.iterdir():
        p.unlink()
    path.rmdir()


def chunk_name(i: int) -> str:
    """File name of chunk i."""
    return f"chunk-{i:06d}.safetensors"


def check_entries(manifest_path: str | os.PathLike, entries: Any) -> list:
    """The `chunks` list of a manifest: objects with an int `rows` >= 1 (file
    names are checked by `chunk_path`, sizes and hashes by `check_entry`)."""
    if not isinstance(entries, list):
        raise ValueError(f"{manifest_path}: chunks must be a list of chunk entries; got "
                         f"{type(entries).__name__}")
    for i, c in enumerate(entries):
        rows = c.get("rows") if isinstance(c, dict) else c
        if not (isinstance(c, dict) and _checks.is_int(rows)
                and rows >= 1):
            raise ValueError(f"{manifest_path}: chunk entry {i} must be an object with rows "
                             f">= 1; got {rows!r}")
    return entries


def bounds_of(entries: list[Mapping[str, Any]]) -> np.ndarray:
    """(num_chunks + 1,) int64 row bounds of manifest chunk entries."""
    return np.concatenate([[0], np.cumsum([int(c["rows"]) for c in entries], dtype=np.int64)])


def locate(bounds: np.ndarray, rows) -> np.ndarray:
    """The chunk holding each global row: (len(rows),) int64."""
    return np.searchsorted(np.asarray(bounds), rows, side="right").astype(np.int64) - 1


def spans(bounds: np.ndarray, start: int, stop: int) -> list[tuple[int, slice]]:
    """(chunk index, local row slice) pairs covering rows [start, stop)."""
    n = int(bounds[-1])
    for name, v in (("start", start), ("stop", stop)):
        if not _checks.is_int(v):
            raise TypeError(f"rows: {name} must be an int row index; got {v!r}")
    if not 0 <= start <= stop <= n:
        raise IndexError(f"rows({start}, {stop}) out of range for a store of {n} rows")
    out = []
    first = int(locate(bounds, start))
    for i in range(max(first, 0), len(bounds) - 1):
        lo, hi = int(bounds[i]), int(bounds[i + 1])
        if lo >= stop:
            break
        out.append((i, slice(max(start, lo) - lo, min(stop, hi) - lo)))
    return out


def read_range(chunk: Callable[[int], np.ndarray], bounds: np.ndarray, start: int, stop: int,
               width: int, dtype) -> np.ndarray:
    """Rows [start, stop) of a chunked matrix, reading only the chunks involved."""
    parts = [chunk(i)[sl] for i, sl in spans(bounds, start, stop)]
    if not parts:
        return np.empty((0, width), dtype)
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def write_chunk(folder: str | os.PathLike, i: int, tensors: Mapping[str, np.ndarray],
                metadata: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Writes chunk i atomically; returns its manifest entry."""
    folder = Path(folder)
    name = chunk_name(i)
    digest = write_safetensors(folder / name, tensors, metadata)
    rows = int(next(iter(tensors.values())).shape[0])
    return {"file": name, "rows": rows, "bytes": (folder / name).stat().st_size,
            "sha256": digest}


def listed_path(folder: str | os.PathLike, name: Any, listing: str | os.PathLike,
                what: str = "file name", inside: str | None = None) -> Path:
    """`folder / name` for a name read from the file `listing` (a manifest, an
    index), which must be a plain file name: `../x`, `sub/../../x` or an
    absolute path would read or write outside the folder and is refused.

    Args:
      folder: the folder the listed files live in.
      name: the name as read from the listing.
      listing: the file the name was read from, for the message.
      what: how the name is called in the message.
      inside: how the folder is called in the message (default: its path).

    Returns:
      The path inside `folder`.
    """
    if (not isinstance(name, str) or not name or Path(name).name != name
            or name in (".", "..")):
        raise ValueError(f"{listing}: {what} {name!r} is not a plain file name inside "
                         f"{folder if inside is None else inside}")
    return Path(folder) / name


def chunk_path(folder: str | os.PathLike, entry: Mapping[str, Any]) -> Path:
    """The path of a manifest entry's file, which must be a plain name inside
    `folder` (a manifest naming `../x` or an absolute path is refused)."""
    return listed_path(folder, entry.get("file"), Path(folder) / MANIFEST,
                       "chunk file name", "the store folder")


def check_entry(folder: str | os.PathLike, entry: Mapping[str, Any], *,
                hash_bytes: bool) -> Path:
    """Checks a listed chunk exists with the recorded size (and SHA-256)."""
    path = chunk_path(folder, entry)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: listed in the manifest but missing or of the wrong "
                                "size (missing); the store is damaged")
    size = path.stat().st_size
    if size != entry.get("bytes"):
        raise ValueError(f"{path}: listed in the manifest but missing or of the wrong size "
                         f"({size} bytes; the manifest says {entry.get('bytes')}); the store "
                         "is damaged")
    if hash_bytes and _digest.file_sha256(path) != entry.get("sha256"):
        raise ValueError(f"{path}: SHA-256 does not match the manifest; the chunk is corrupt")
    return path
