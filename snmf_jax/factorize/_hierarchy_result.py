"""The outcome of a hierarchical fit: every level's features and the links between them."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from snmf_jax import _checks
from snmf_jax import _io
from snmf_jax._checks import finite_arrays as check_finite_arrays

FORMAT = "snmf_jax.hierarchy/1"
_ARRAYS = "hierarchy.safetensors"
_INFO = "hierarchy.json"
FILES = (_ARRAYS, _INFO)  # what `save` writes in its folder


@dataclasses.dataclass(frozen=True, eq=False)
class HierarchicalResult:
    """A stack X ≈ C₀ W₁ … W_L Φ_L of SNMF levels.

    Level 0 is the SNMF of X; level i ≥ 1 is the SNMF of level i−1's
    features, whose nonnegative codes are the links W_i from the r_{i−1} fine
    features to the r_i coarse ones: Φ_{i−1} ≈ W_i Φ_i.

    Attributes:
      codes: (n, r_0) level-0 codes C₀ >= 0 (None if not kept).
      features: per level i, (r_i, d) Φ_i, signed and sparse.
      links: per level i = 1..L, links[i - 1] is W_i, (r_{i−1}, r_i) >= 0.
      losses: per level, that level's SNMF loss history (the kept restart).
      finetune_losses: (steps,) relative loss ‖X − C₀W₁…W_LΦ_L‖²/‖X‖² of the
        joint fine-tune after every Adam step, or None if not fine-tuned.
      settings: the fit's settings (ranks, sparsity, restarts, ...).
      metadata: JSON-able provenance and measurements (e.g. the product
        loss before and after fine-tuning).
    """

    codes: np.ndarray | None
    features: tuple[np.ndarray, ...]
    links: tuple[np.ndarray, ...]
    losses: tuple[np.ndarray, ...]
    finetune_losses: np.ndarray | None
    settings: dict[str, Any]
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)
    # The files `save` writes in its folder (the CLI's overwrite checks name them).
    FILES: ClassVar[tuple[str, ...]] = FILES

    def __post_init__(self):
        if len(self.links) != len(self.features) - 1:
            raise ValueError(f"a hierarchy of {len(self.features)} levels needs "
                             f"{len(self.features) - 1} links; got {len(self.links)}")
        for i, w in enumerate(self.links):
            want = (self.features[i].shape[0], self.features[i + 1].shape[0])
            if w.shape != want:
                raise ValueError(f"links[{i}] must have shape {want}; got {w.shape}")

    @property
    def ranks(self) -> tuple[int, ...]:
        return tuple(int(f.shape[0]) for f in self.features)

    @property
    def num_levels(self) -> int:
        return len(self.features)

    def collapsed_codes(self, level: int) -> np.ndarray:
        """C₀ W₁ … W_level: (n, r_level), how strongly each token expresses each
        level-`level` feature (level 0: the codes themselves)."""
        self._check_level(level)
        if self.codes is None:
            raise ValueError("this hierarchy was saved without its level-0 codes")
        c = self.codes
        for w in self.links[:level]:
            c = c @ w  # (n, r_i)
        return c

    def link_product(self, level: int) -> np.ndarray:
        """W₁ … W_level: (r_0, r_level), level-0 features onto level-`level` ones."""
        self._check_level(level)
        p = np.eye(self.ranks[0], dtype=self.features[0].dtype)
        for w in self.links[:level]:
            p = p @ w
        return p

    def unit_links(self, level: int) -> np.ndarray:
        """Links between unit-norm features, (r_{level−1}, r_level).

        Entry (c, p) is W[c, p] · ‖Φ_level[p]‖ / ‖Φ_{level−1}[c]‖: the weight of
        the unit parent in the unit child, free of both features' scale. Trees
        threshold these.
        """
        if not 1 <= level < self.num_levels:
            raise ValueError(f"level must be in [1, {self.num_levels - 1}]; got {level}")
        w = self.links[level - 1]
        child = np.linalg.norm(self.features[level - 1], axis=1)
        parent = np.linalg.norm(self.features[level], axis=1)
        return w * parent[None, :] / np.maximum(child, 1e-12)[:, None]

    def product_loss(self, x) -> float:
        """‖X − C₀ W₁ … W_L Φ_L‖²: the loss of the full product."""
        return self.level_loss(x, self.num_levels - 1)

    def level_loss(self, x, level: int) -> float:
        """‖X − C₀ W₁ … W_level Φ_level‖²: X rebuilt through level `level`."""
        x = np.asarray(x, np.float64)
        r = x - self.collapsed_codes(level).astype(np.float64) @ self.features[level]
        return float(np.sum(r * r))

    def _check_level(self, level: int) -> None:
        if not 0 <= level < self.num_levels:
            raise ValueError(f"level must be in [0, {self.num_levels - 1}]; got {level}")

    def save(self, path: str | os.PathLike) -> Path:
        """Writes `path/hierarchy.safetensors` and `path/hierarchy.json`, atomically.

        The info is also embedded in the safetensors header, which is
        authoritative on load.

        Returns:
          The folder written.
        """
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        arrays = {f"features.{i}": f for i, f in enumerate(self.features)}
        arrays.update({f"links.{i}": w for i, w in enumerate(self.links)})
        arrays.update({f"losses.{i}": np.asarray(l, np.float64)
                       for i, l in enumerate(self.losses)})
        if self.codes is not None:
            arrays["codes"] = self.codes
        if self.finetune_losses is not None:
            arrays["finetune_losses"] = np.asarray(self.finetune_losses, np.float64)
        check_finite_arrays(arrays, "the hierarchical result")
        info = _io.save_verified(path / _ARRAYS, arrays, {
            "format": FORMAT, "ranks": list(self.ranks), "settings": self.settings,
            "metadata": self.metadata}, key="snmf_jax")
        _io.write_json(path / _INFO, info)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "HierarchicalResult":
        """Reads a hierarchy written by `save`, bit-identical to the one saved."""
        path = Path(path)
        file = path / _ARRAYS
        if not file.is_file():
            raise FileNotFoundError(f"no hierarchical SNMF result at {path}: expected {file} "
                                    f"(written by HierarchicalResult.save)")
        info, a = _io.load_verified(file, FORMAT, "snmf_jax hierarchical result",
                                    key="snmf_jax")
        check_finite_arrays(a, file)
        ranks = info.get("ranks")
        if not (isinstance(ranks, list) and ranks and all(
                _checks.is_int(r) and r >= 1 for r in ranks)):
            raise ValueError(f"{file}: header field ranks must be a non-empty list of ints "
                             f">= 1; got {ranks!r}")
        levels = len(ranks)
        names = ([f"features.{i}" for i in range(levels)] + [f"links.{i}" for i in
                 range(levels - 1)] + [f"losses.{i}" for i in range(levels)])
        missing = [k for k in names if k not in a]
        if missing:
            raise ValueError(f"{file}: the header lists {levels} levels but array "
                             f"{missing[0]!r} is missing")
        extra = sorted(k for k in a if k.split(".")[0] in ("features", "links", "losses")
                       and k not in names)
        if extra:
            raise ValueError(f"{file}: the header lists {levels} levels but the file also "
                             f"holds {extra[0]!r}")
        for i, r in enumerate(ranks):
            f = a[f"features.{i}"]
            if f.ndim != 2 or f.shape[0] != r or f.dtype.kind != "f":
                raise ValueError(f"{file}: features.{i} must be a ({r}, d) float array "
                                 f"(header ranks); got {f.dtype} {f.shape}")
        for key in ("settings", "metadata"):
            if not isinstance(info.get(key, {}), dict) or key not in info and key == "settings":
                raise ValueError(f"{file}: header field {key} must be an object; got "
                                 f"{info.get(key)!r}")
        codes = a.get("codes")
        if codes is not None and (codes.ndim != 2 or codes.shape[1] != ranks[0]
                                  or (codes.size and codes.min() < 0)):
            raise ValueError(f"{file}: codes must be a nonnegative (n, {ranks[0]}) array; got "
                             f"shape {codes.shape}")
        try:
            return cls(codes=codes,
                       features=tuple(a[f"features.{i}"] for i in range(levels)),
                       links=tuple(a[f"links.{i}"] for i in range(levels - 1)),
                       losses=tuple(a[f"losses.{i}"] for i in range(levels)),
                       finetune_losses=a.get("finetune_losses"),
                       settings=info["settings"], metadata=info.get("metadata", {}))
        except ValueError as e:
            raise ValueError(f"{file}: {e}") from None
