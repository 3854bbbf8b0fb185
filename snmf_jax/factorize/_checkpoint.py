"""Checkpoints of a fit, and the identity of the data they were written for.

Data identity (`array_identity`, `source_identity`) is a small JSON dict
computed from the content actually fitted:

- in memory: shape, dtype and the SHA-256 of the array's bytes in row order,
  so any change (one value, reordered rows) gives another identity;
- a store: the per-chunk SHA-256 its manifest records, plus the layer, the
  site and the row range fitted (a source without recorded digests is
  hashed chunk by chunk).

`Checkpointer.restore` compares the saved identity and settings with the
current ones key by key and refuses a checkpoint written for other data or
other settings with a message naming what differs. The checkpoint file also
carries the SHA-256 of its arrays, verified on load.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np

from snmf_jax import _digest, _io, _resume
from snmf_jax.factorize import _solver
from snmf_jax.factorize._loop import FitState

CHECKPOINT_FILE = "snmf_checkpoint.safetensors"
_CKPT_FORMAT = "snmf_jax.checkpoint/1"
_REMEDY = "delete it or choose another checkpoint_dir"


def array_identity(x, codes_init=None) -> dict[str, Any]:
    """Identity of in-memory data (and of explicit initial codes)."""
    ident = {"kind": "array", "shape": [int(v) for v in x.shape],
             "dtype": str(np.dtype(x.dtype)), "sha256": _digest.array_sha256(x)}
    if codes_init is not None:
        ident["codes_init"] = _digest.array_sha256(codes_init)
    return ident


def source_identity(src, codes_init=None) -> dict[str, Any]:
    """Identity of a chunked RowSource: chunk digests, layer, site, rows.

    Uses the per-chunk SHA-256 of a store manifest when it records them
    (no data is read); otherwise hashes every chunk.
    """
    manifest = getattr(src, "manifest", None)
    chunks = manifest.get("chunks", []) if isinstance(manifest, dict) else []
    digests = [c.get("sha256") for c in chunks]
    if not (digests and all(digests) and len(digests) == src.num_chunks):
        # float32 bytes only (a persisted layout, kept so written checkpoints
        # resume): each chunk's shape is fixed by chunk_bounds_sha256 and d below.
        digests = [_digest.sha256_bytes(np.ascontiguousarray(src.chunk(i), np.float32).tobytes())
                   for i in range(src.num_chunks)]
    ident = {"kind": "chunks", "rows": [0, int(src.n_rows)], "d": int(src.d),
             "chunk_bounds_sha256": _digest.sha256_json([int(v) for v in src.chunk_bounds]),
             "chunks_sha256": _digest.sha256_json(digests),
             "layer": getattr(src, "layer", None),
             "site": (manifest or {}).get("site") if isinstance(manifest, dict) else None}
    if codes_init is not None:
        ident["codes_init"] = (_digest.array_sha256(codes_init) if hasattr(codes_init, "shape")
                               else source_identity(codes_init)["chunks_sha256"])
    return ident


def check_directory(checkpoint_dir) -> Path | None:
    """Fails before any work when checkpoint_dir exists and is not a folder."""
    if checkpoint_dir is None:
        return None
    path = Path(checkpoint_dir)
    if path.exists() and not path.is_dir():
        raise ValueError(f"checkpoint_dir {str(path)!r} exists and is not a directory")
    return path


class Checkpointer:
    """Saves/restores a FitState (+ losses) to `directory/CHECKPOINT_FILE`.

    Args:
      directory: checkpoint folder (created on save).
      settings: the fit's settings; must match on restore.
      data_id: the data identity (`array_identity` / `source_identity`);
        must match on restore.
    """

    def __init__(self, directory: str | os.PathLike, settings: dict, data_id: dict):
        self.path = Path(directory) / CHECKPOINT_FILE
        self.settings = settings
        self.data_id = data_id

    def save(self, fs: FitState, losses: list[float]) -> None:
        arrays = {f"solver.{k}": np.asarray(v) for k, v in fs.solver._asdict().items()}
        arrays.update({k: np.asarray(v) for k, v in fs._asdict().items() if k != "solver"})
        arrays["done"] = arrays["done"].astype(np.uint8)
        arrays["losses"] = np.asarray(losses, dtype=np.float64)
        meta = {"format": _CKPT_FORMAT, "settings": json.dumps(self.settings, sort_keys=True),
                "data": json.dumps(self.data_id, sort_keys=True),
                "arrays_sha256": _digest.arrays_digest(arrays)}
        _io.save_arrays(self.path, arrays, meta)

    def restore(self) -> tuple[FitState, list[float]] | None:
        if not self.path.exists():
            return None
        meta = _io.read_metadata(self.path)
        if meta.get("format") != _CKPT_FORMAT:
            raise ValueError(f"{self.path} is not an snmf_jax checkpoint "
                             f"(format {meta.get('format')!r})")
        saved_id = _io.parse_json(meta.get("data", "null"), f"{self.path} (header)")
        if not isinstance(saved_id, dict):
            raise ValueError(f"checkpoint {self.path} was written for different data "
                             "(by an older version, without a data identity); delete it")
        _resume.refuse_resume(f"checkpoint {self.path}", saved_id, self.data_id, kind="data",
                              remedy=_REMEDY)
        saved = _io.parse_json(meta.get("settings", "null"), f"{self.path} (header)")
        if not isinstance(saved, dict):
            raise ValueError(f"{self.path}: no settings in its header; delete it")
        # Every setting either side records must match (a key only one side has
        # is a difference too); max_iter may grow: a longer budget continues
        # the same trajectory, checked against the iterations done below.
        _resume.refuse_resume(f"checkpoint {self.path}", saved, self.settings, kind="settings",
                              remedy=_REMEDY, ignore=("max_iter",))
        a = _io.verified_arrays(self.path, meta.get("arrays_sha256"))
        missing = [k for k in (*(f"solver.{f}" for f in _solver.SNMFState._fields),
                               *(f for f in FitState._fields if f != "solver"), "losses")
                   if k not in a]
        if missing:
            raise ValueError(f"{self.path}: array {missing[0]!r} is missing; the checkpoint "
                             "is damaged, delete it")
        budget = self.settings.get("max_iter")
        if budget is not None and a["losses"].shape[0] > budget:
            raise ValueError(f"checkpoint {self.path} has already run {a['losses'].shape[0]} "
                             f"iterations, more than max_iter={budget}; resuming it would "
                             "return a longer fit than asked for (delete it, or raise max_iter)")
        solver = _solver.SNMFState(**{k: jnp.asarray(a[f"solver.{k}"])
                                      for k in _solver.SNMFState._fields})
        fs = FitState(solver=solver, best_codes=jnp.asarray(a["best_codes"]),
                      best_features=jnp.asarray(a["best_features"]),
                      best_loss=jnp.asarray(a["best_loss"]),
                      best_step=jnp.asarray(a["best_step"]),
                      stall=jnp.asarray(a["stall"]),
                      done=jnp.asarray(a["done"].astype(bool)))
        return fs, [float(v) for v in a["losses"]]
