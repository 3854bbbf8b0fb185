"""Atomic file writes: safetensors for arrays, JSON for everything else.

Every write goes to a temporary file in the destination folder and is then
renamed over the target, so a reader (or a crash) never sees half a file.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from safetensors.numpy import load_file, save as _st_save
from safetensors import safe_open

__all__ = ["atomic_write_bytes", "write_json", "read_json", "save_arrays",
           "load_arrays", "read_metadata"]


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Writes `data` to `path` atomically (temp file + fsync + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Writes `obj` as indented JSON, atomically."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def read_json(path: str | os.PathLike) -> Any:
    with open(path, "r", encoding="utf-8") as f:
        return json.load(f)


def save_arrays(path: str | os.PathLike, arrays: Mapping[str, np.ndarray],
                metadata: Mapping[str, str] | None = None) -> None:
    """Saves named arrays (and string metadata) as one safetensors file, atomically."""
    # np.ascontiguousarray would turn 0-d arrays into 1-d ones.
    tensors = {k: np.asarray(v, order="C") for k, v in arrays.items()}
    atomic_write_bytes(path, _st_save(tensors, metadata=dict(metadata or {})))


def load_arrays(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Loads every array of a safetensors file."""
    return load_file(str(path))


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The string metadata of a safetensors file, without reading its arrays."""
    with safe_open(str(path), framework="numpy") as f:
        return dict(f.metadata() or {})
