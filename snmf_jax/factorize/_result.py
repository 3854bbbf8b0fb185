"""The outcome of a fit, saved as safetensors + JSON."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from snmf_jax import _checks
from snmf_jax import _io
from snmf_jax._checks import finite_arrays as check_finite_arrays

FORMAT = "snmf_jax.result/1"
_ARRAYS = "snmf.safetensors"
_INFO = "snmf.json"
FILES = (_ARRAYS, _INFO)  # what `save` writes in its folder


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
    # The files `save` writes in its folder (the CLI's overwrite checks name them).
    FILES: ClassVar[tuple[str, ...]] = FILES

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
        info = _io.save_verified(path / _ARRAYS, arrays, self._info(), key="snmf_jax")
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
        info, arrays = _io.load_verified(file, FORMAT, "snmf_jax result", key="snmf_jax")
        check_finite_arrays(arrays, file)
        check_header(info, arrays, file)
        return cls(features=arrays["features"], codes=arrays.get("codes"),
                   losses=arrays["losses"], best_iter=info["best_iter"],
                   converged=info["converged"], settings=info["settings"],
                   metadata=info.get("metadata", {}))


def assemble(fs, losses: list[float], settings: dict, max_iter: int, metadata: dict | None, *,
             codes: np.ndarray | None, scale: float = 1.0, extra_settings: dict | None = None,
             extra_metadata: dict | None = None) -> SNMFResult:
    """Step 5 of the batch fits: the SNMFResult of a final FitState.

    Args:
      fs: the final FitState (its best iterate is returned).
      losses: every iteration's loss.
      settings: the fit's settings (`FitConfig.settings`).
      max_iter: the budget asked for (recorded; a resumed fit may raise it).
      metadata: the user's provenance.
      codes: the best codes, on the host (None: not returned).
      scale: the power of two X was divided by (`_check.unit_scale`); the
        features are scaled back (overflow is an error) and the losses by scale².
      extra_settings, extra_metadata: what the driver adds (devices, ...).

    Returns:
      The SNMFResult.
    """
    features = np.asarray(fs.best_features)
    if scale != 1.0:
        with np.errstate(over="ignore"):
            features = features * np.asarray(scale, features.dtype)
        if not np.isfinite(features).all():
            raise FloatingPointError(
                f"the features of X (largest |value| ~{scale:.3g}) overflow {features.dtype} "
                "once scaled back; rescale X (e.g. divide by its largest absolute value) "
                "and retry.")
    return SNMFResult(features=features, codes=codes,
                      losses=np.asarray(losses, dtype=np.float64) * scale ** 2,
                      best_iter=int(fs.best_step), converged=bool(fs.done),
                      settings={**settings, "max_iter": int(max_iter), **(extra_settings or {})},
                      metadata={**(metadata or {}), **(extra_metadata or {})})


def _field(file, name: str, ok: bool, expected: str, got) -> None:
    if not ok:
        raise ValueError(f"{file}: header field {name} must be {expected}; got {got!r}")


def check_header(info: dict, arrays: dict, file) -> None:
    """Every field a reader relies on has the type and range `save` gives it
    (a hand-edited or crafted header fails here naming the file and field,
    not later as a wrong `.loss` or a truthy "no").

    Args:
      info: the parsed header.
      arrays: the file's arrays (already verified against the header digest).
      file: the file, for messages.
    """
    for name in ("features", "losses"):
        _field(file, name, name in arrays, "present", None)
    phi, losses, codes = arrays["features"], arrays["losses"], arrays.get("codes")
    _field(file, "features", phi.ndim == 2 and phi.dtype.kind == "f" and phi.shape[0] >= 1,
           "a (K, d) float array", f"{phi.dtype} {phi.shape}")
    _field(file, "losses", losses.ndim == 1 and losses.dtype.kind == "f",
           "a 1-D float array", f"{losses.dtype} {losses.shape}")
    if codes is not None:
        _field(file, "codes", codes.ndim == 2 and codes.dtype.kind == "f"
               and codes.shape[1] == phi.shape[0], f"an (n, K={phi.shape[0]}) float array",
               f"{codes.dtype} {codes.shape}")
        _field(file, "codes", not codes.size or codes.min() >= 0, "nonnegative",
               float(codes.min()) if codes.size else None)
    n = losses.shape[0] if losses.ndim == 1 else 0
    best = info.get("best_iter")
    ok = _checks.is_int(best) and (
        1 <= best <= n if n else best == 0)
    _field(file, "best_iter", ok, f"an int in [1, {n}] (the 1-based best iteration)"
           if n else "0 (no iterations)", best)
    _field(file, "converged", isinstance(info.get("converged"), bool), "true or false",
           info.get("converged"))
    _field(file, "settings", isinstance(info.get("settings"), dict), "an object",
           info.get("settings"))
    meta = info.get("metadata", {})
    _field(file, "metadata", isinstance(meta, dict), "an object", meta)
    # The provenance readers act on: the layer, site and store it was fitted on.
    layer = meta.get("layer")
    _field(file, "metadata.layer", layer is None or (_checks.is_int(layer) and layer >= 0), "null or an int >= 0", layer)
    _field(file, "metadata.site", meta.get("site") is None or isinstance(meta["site"], str),
           "null or a string", meta.get("site"))
    _field(file, "metadata.store", meta.get("store") is None or isinstance(meta["store"], dict),
           "null or an object", meta.get("store"))
