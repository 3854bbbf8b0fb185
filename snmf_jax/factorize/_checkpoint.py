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
import logging
import os
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np

from snmf_jax import _digest, _io, _resume
from snmf_jax.factorize import _solver
from snmf_jax.factorize._loop import FitState

log = logging.getLogger("snmf_jax")

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


def write_state(path: Path, fmt: str, arrays: dict[str, np.ndarray], settings: dict,
                data_id: dict, extra: dict[str, str] | None = None) -> None:
    """Writes a checkpoint file: arrays, a header (format, settings, data
    identity, `extra` fields) and the SHA-256 of the arrays, atomically.

    The one layout of the batch fits' and the online fit's checkpoints.
    """
    _io.save_verified(path, arrays, {"format": fmt,
                                     "settings": json.dumps(settings, sort_keys=True),
                                     "data": json.dumps(data_id, sort_keys=True),
                                     **(extra or {})})


def read_state(path: Path, fmt: str, what: str, settings: dict, data_id: dict, *,
               ignore: tuple[str, ...] = ()) -> tuple[dict[str, str], dict[str, np.ndarray]]:
    """Reads a `write_state` file written for this data and these settings.

    Args:
      path: the file.
      fmt: its expected format string.
      what: what it is, for messages ("checkpoint", "online checkpoint").
      settings, data_id: the current ones; a file written for others is
        refused naming the difference (settings keys in `ignore` may differ).

    Returns:
      (header, arrays verified against the header's digest).
    """
    def check(meta: dict) -> None:  # before any array is read
        saved_id = _io.parse_json(meta.get("data", "null"), f"{path} (header)")
        if not isinstance(saved_id, dict):
            raise ValueError(f"checkpoint {path} was written for different data "
                             "(by an older version, without a data identity); delete it")
        _resume.refuse_resume(f"checkpoint {path}", saved_id, data_id, kind="data",
                              remedy=_REMEDY)
        saved = _io.parse_json(meta.get("settings", "null"), f"{path} (header)")
        if not isinstance(saved, dict):
            raise ValueError(f"{path}: no settings in its header; delete it")
        # Every setting either side records must match (a key only one side has
        # is a difference too), but for `ignore` (a budget that may grow).
        _resume.refuse_resume(f"checkpoint {path}", saved, settings, kind="settings",
                              remedy=_REMEDY, ignore=ignore)

    return _io.load_verified(path, fmt, f"snmf_jax {what}", check=check)


def open_checkpoint(checkpoint_dir, settings: dict, x, codes_init=None
                    ) -> tuple["Checkpointer | None", tuple[FitState, list[float]] | None]:
    """The checkpointer of an in-memory fit and the state it resumes from.

    Args:
      checkpoint_dir: the folder, or None (no checkpoints; X is not hashed).
      settings: the fit's settings.
      x, codes_init: the data fitted (`array_identity`).

    Returns:
      (Checkpointer or None, restored (FitState, losses) or None: start).
    """
    if checkpoint_dir is None:
        return None, None
    ckpt = Checkpointer(checkpoint_dir, settings, array_identity(x, codes_init))
    restored = ckpt.restore()
    if restored is not None:
        log.info("resuming SNMF from %s at step %d", ckpt.path, len(restored[1]))
    return ckpt, restored


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
        write_state(self.path, _CKPT_FORMAT, arrays, self.settings, self.data_id)

    def restore(self) -> tuple[FitState, list[float]] | None:
        if not self.path.exists():
            return None
        # max_iter may grow: a longer budget continues the same trajectory,
        # checked against the iterations done below.
        _, a = read_state(self.path, _CKPT_FORMAT, "checkpoint", self.settings, self.data_id,
                          ignore=("max_iter",))
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
