"""The outcome of a fit, saved as safetensors + JSON."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from snmf_jax import _io
from snmf_jax._checks import finite_arrays as check_finite_arrays

FORMAT = "snmf_jax.result/1"
_ARRAYS = "snmf.safetensors"
_INFO = "snmf.json"


@dataclasses.dataclass(frozen=True, eq=False)
class SNMFResult:
    """Features and codes of a fit (the best iterate) and its history.

    Attributes:
      features: (K, d) Φ, signed and sparse.
      codes: (n, K) C >= 0.
      losses: (n_iter,) ‖X − CΦ‖² after every iteration.
      best_iter: 1-based iteration of the returned iterate.
      converged: True when early stopping ended the fit before max_iter.
      settings: the fit's settings (rank, sparsity, init, seed, ...).
      metadata: free-form JSON-able provenance (model, layer, site, ...).
    """

    features: np.ndarray
    codes: np.ndarray | None
    losses: np.ndarray
    best_iter: int
    converged: bool
    settings: dict[str, Any]
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def rank(self) -> int:
        return self.features.shape[0]

    @property
    def n_iter(self) -> int:
        return int(self.losses.shape[0])

    @property
    def loss(self) -> float:
        """Loss of the returned (best) iterate."""
        return float(self.losses[self.best_iter - 1]) if self.best_iter else float("nan")

    def _info(self) -> dict[str, Any]:
        return {"format": FORMAT, "best_iter": int(self.best_iter),
                "converged": bool(self.converged), "settings": self.settings,
                "metadata": self.metadata}

    def save(self, path: str | os.PathLike) -> Path:
        """Writes `path/snmf.safetensors` (arrays) and `path/snmf.json` (info).

        Each file is written atomically; the info is also embedded in the
        safetensors header, which is authoritative on load.

        Returns:
          The folder written.
        """
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        arrays = {"features": self.features, "losses": self.losses}
        if self.codes is not None:
            arrays["codes"] = self.codes
        check_finite_arrays(arrays, "the result")
        info = {**self._info(), "arrays_sha256": _io.arrays_digest(arrays)}
        _io.save_arrays(path / _ARRAYS, arrays, {"snmf_jax": json.dumps(info)})
        _io.write_json(path / _INFO, info)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "SNMFResult":
        """Reads a result written by `save`.

        Args:
          path: the folder given to `save`.

        Returns:
          The SNMFResult, bit-identical to the one saved.
        """
        path = Path(path)
        file = path / _ARRAYS
        if not file.is_file():
            raise FileNotFoundError(
                f"no SNMF result at {path}: expected {file} (written by SNMFResult.save)")
        meta = _io.read_metadata(file)
        if "snmf_jax" not in meta:
            raise ValueError(f"{file} is a safetensors file but not an snmf_jax result")
        info = _io.parse_json(meta["snmf_jax"], f"{file} (header)")
        if not isinstance(info, dict) or info.get("format") != FORMAT:
            got = info.get("format") if isinstance(info, dict) else info
            raise ValueError(f"{file}: unsupported format {got!r}; expected {FORMAT!r}")
        arrays = _io.verified_arrays(file, info.get("arrays_sha256"))
        check_finite_arrays(arrays, file)
        return cls(features=arrays["features"], codes=arrays.get("codes"),
                   losses=arrays["losses"], best_iter=info["best_iter"],
                   converged=info["converged"], settings=info["settings"],
                   metadata=info.get("metadata", {}))
