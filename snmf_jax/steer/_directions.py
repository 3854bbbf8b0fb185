"""Steering directions: unit vectors at a site, from features or any method.

An SNMF feature Φ_k (a row over MLP neurons) steers by adding α · Φ_k/‖Φ_k‖
to `mlp_hidden`. For models whose MLP output passes a post-feedforward norm
(Gemma 2/3), an edit of `mlp_hidden` is divided by the norm's RMS and so
mostly cancelled; there the paper steers at `mlp_out` with the feature's image
through the down projection and that norm, renormalised. The norm is
scale-invariant, so the image of a direction v is the direction of
``scale ⊙ (v @ W_down)``.

Two ways in, two concepts: `feature_directions(model, features, layer=...)`
for SNMF features (rows over MLP neurons; the site is chosen and the map to
"mlp_out" is the model's own `mlp_output_map`), and
`Directions.from_vectors(vectors, layer=..., site=...)` for vectors that
already live at a site (SAE decoder rows, difference-in-means vectors).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from snmf_jax import _checks, _numerics
from snmf_jax.models import SITES, ModelConfig, as_arrays, mlp_output_map
from snmf_jax.steer._patches import PatchMode, make_patch

_EPS = 1e-12


def has_post_mlp_norm(config: ModelConfig) -> bool:
    """True for models whose MLP output is normalised before the residual add."""
    return config.post_mlp_norm


@dataclasses.dataclass(frozen=True, eq=False)
class Directions:
    """F unit steering directions at one site.

    Attributes:
      vectors: (F, dim) float32 rows of unit L2 norm (zero rows stay zero).
      layer: block index.
      site: "mlp_hidden", "mlp_out" or "resid_post".
      ids: (F,) identifiers of the rows (feature indices), for reports.
    """

    vectors: np.ndarray
    layer: int
    site: str
    ids: tuple[int, ...] = ()

    def __post_init__(self):
        if self.vectors.ndim != 2:
            raise ValueError(f"Directions.vectors must be (F, dim); got shape {self.vectors.shape}")
        if self.site not in SITES:
            raise ValueError(f"Directions.site must be one of {SITES}; got {self.site!r}")
        if self.ids and len(self.ids) != len(self.vectors):
            raise ValueError(f"Directions.ids has {len(self.ids)} entries; expected "
                             f"{len(self.vectors)}")

    def __len__(self) -> int:
        return int(self.vectors.shape[0])

    @classmethod
    def from_vectors(cls, vectors, *, layer: int, site: str, normalize: bool = True,
                     ids: Sequence[int] = (), config: ModelConfig | None = None
                     ) -> "Directions":
        """Wraps raw vectors at a site (SAE decoder rows, DiffMean vectors, ...).

        Args:
          vectors: (F, dim) or (dim,).
          layer: block index.
          site: "mlp_hidden", "mlp_out" or "resid_post".
          normalize: scale rows to unit norm (alpha is then in activation units).
          ids: optional row identifiers.
          config: when given, the layer and width are checked.

        Returns:
          Directions.
        """
        v = np.asarray(vectors, np.float32)
        if v.ndim == 1:
            v = v[None]  # (1, dim)
        if not np.all(np.isfinite(v)):
            raise ValueError("vectors contain NaN or Inf")
        if config is not None:
            if not 0 <= layer < config.n_layers:
                raise ValueError(f"layer must be in [0, {config.n_layers}); got {layer}")
            if v.shape[-1] != config.site_dim(site):
                raise ValueError(f"vectors must have width {config.site_dim(site)} at "
                                 f"{site!r}; got shape {v.shape}")
        return cls(_numerics.unit_rows(v, _EPS) if normalize else v, int(layer), site,
                   tuple(int(i) for i in ids))

    def select(self, rows: int | Sequence[int]) -> "Directions":
        """The sub-set of rows (by position, not id)."""
        rows = [rows] if isinstance(rows, (int, np.integer)) else list(rows)
        ids = tuple(self.ids[r] for r in rows) if self.ids else tuple(rows)
        return dataclasses.replace(self, vectors=self.vectors[rows], ids=ids)

    def patch(self, alpha=1.0, *, mode: PatchMode = "add"):
        """The batched patch adding alpha * vectors (one variant per row).

        Args:
          alpha: () or (F,) scales (signed: negative alpha steers away).
          mode: "add" or "replace".

        Returns:
          A Patch with vectors (F, dim) and scales (F,); with F == 1 the
          vector is (dim,) and the scale as given.
        """
        alpha = np.asarray(alpha, np.float32)
        if len(self) == 1 and alpha.ndim == 0:
            return make_patch(self.layer, self.site, self.vectors[0], scale=alpha, mode=mode)
        alpha = np.broadcast_to(alpha, (len(self),))
        return make_patch(self.layer, self.site, self.vectors, scale=alpha, mode=mode)


def feature_directions(model, features, *, layer: int, indices: Sequence[int] | None = None,
                       site: str = "auto") -> Directions:
    """Steering directions of SNMF features (rows of Φ over MLP neurons).

    Args:
      model: a Model (its params and config are used for "mlp_out").
      features: (K, d_mlp) Φ.
      layer: the layer the features were fitted on.
      indices: features to keep (default: all).
      site: "mlp_hidden" (the unit feature row), "mlp_out" (its renormalised
        image through the down projection and any post-feedforward norm), or
        "auto": "mlp_out" for models with a post-feedforward norm (Gemma 2/3),
        else "mlp_hidden".

    Returns:
      Directions with ids = the feature indices.
    """
    config = model.config
    phi = _checks.matrix("features", features, shape="(K, d_mlp)").astype(np.float32)
    if phi.shape[1] != config.d_mlp:
        raise ValueError(f"features must be (K, d_mlp={config.d_mlp}); got shape {phi.shape}")
    if not 0 <= layer < config.n_layers:
        raise ValueError(f"layer must be in [0, {config.n_layers}); got {layer}")
    idx = list(range(phi.shape[0])) if indices is None else [int(i) for i in indices]
    bad = [i for i in idx if not 0 <= i < phi.shape[0]]
    if bad:
        raise ValueError(f"feature indices must be in [0, {phi.shape[0]}); got {bad}")
    if site == "auto":
        site = "mlp_out" if has_post_mlp_norm(config) else "mlp_hidden"
    unit = _numerics.unit_rows(phi[idx], _EPS)  # (F, d_mlp)
    if site == "mlp_hidden":
        vec = unit
    elif site == "mlp_out":
        # The image through the down projection and any post-feedforward
        # norm (linear part: a bias is an offset, not a direction).
        vec = _numerics.unit_rows(np.asarray(mlp_output_map(
            model.params, unit, config=config, layer=layer, bias=False), np.float32), _EPS)
    else:
        raise ValueError(f"site must be 'auto', 'mlp_hidden' or 'mlp_out'; got {site!r}")
    return Directions(vec, int(layer), site, tuple(idx))


def hidden_preimage(params, config: ModelConfig, layer: int, target) -> np.ndarray:
    """The least-norm mlp_hidden vector v with v @ W_down = target (least squares).

    Useful to steer the residual stream toward a known direction (e.g. a word's
    unembedding row) through the MLP-hidden site.

    Args:
      params: model params.
      config: the model's config.
      layer: block index.
      target: (d_model,) residual-stream vector.

    Returns:
      (d_mlp,) float32.
    """
    w = np.asarray(as_arrays(params)["layers"]["down"]["kernel"][layer],
                   np.float64)  # (d_mlp, D)
    t = np.asarray(target, np.float64)
    if t.shape != (config.d_model,):
        raise ValueError(f"target must have shape ({config.d_model},); got {t.shape}")
    # v @ w = t  <=>  w.T @ v = t: the minimum-norm solution of an underdetermined system.
    v, *_ = np.linalg.lstsq(w.T, t, rcond=None)
    return v.astype(np.float32)
