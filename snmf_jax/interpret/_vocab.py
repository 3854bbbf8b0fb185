"""Vocabulary projection: the tokens a feature's output promotes and suppresses.

For a unit feature φ̂ at the MLP hidden site the paper reads
``unembed(final_norm(mlp_map(φ̂)))`` with ``mlp_map`` the down projection
(Gemma: then its post-feedforward norm). The norms are not odd functions, so
the suppressed side is read from −φ̂ through the same maps rather than from the
bottom of φ̂'s logits. Residual-stream directions (SAE decoder rows, DiffMean
vectors) skip the MLP map.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from snmf_jax import _numerics


_EPS = 1e-12
_SITES = ("mlp_hidden", "resid")


class VocabProjection(NamedTuple):
    """Top tokens per sign of F directions.

    Attributes:
      pos_ids: (F, k) token ids with the largest logits of +v̂, best first.
      pos_scores: (F, k) their logits.
      neg_ids: (F, k) token ids with the largest logits of −v̂, best first.
      neg_scores: (F, k) their logits (of −v̂).
    """

    pos_ids: np.ndarray
    pos_scores: np.ndarray
    neg_ids: np.ndarray
    neg_scores: np.ndarray

    def tokens(self, decode, i: int, sign: str = "+", n: int | None = None) -> list[str]:
        """Decoded tokens of direction i's side `sign` ("+" or "-")."""
        ids = self.pos_ids[i] if sign == "+" else self.neg_ids[i]
        return [decode(int(t)) for t in ids[:n]]


def _check(model, vectors, layer, site) -> np.ndarray:
    v = np.asarray(vectors, np.float32)
    if v.ndim == 1:
        v = v[None]  # (1, dim)
    if site not in _SITES:
        raise ValueError(f"site must be one of {_SITES}; got {site!r}")
    cfg = model.config
    dim = cfg.d_mlp if site == "mlp_hidden" else cfg.d_model
    if v.ndim != 2 or v.shape[1] != dim:
        raise ValueError(f"vectors must be (F, {dim}) at site {site!r}; got shape {v.shape}")
    if site == "mlp_hidden" and (layer is None or not 0 <= layer < cfg.n_layers):
        raise ValueError(f"layer must be in [0, {cfg.n_layers}) for site 'mlp_hidden'; "
                         f"got {layer!r}")
    if not np.all(np.isfinite(v)):
        raise ValueError("vectors contain NaN or Inf")
    return v


def vocab_logits(model, vectors, *, layer: int | None = None, site: str = "mlp_hidden",
                 normalize: bool = True) -> np.ndarray:
    """Full-vocabulary logits of directions (the paper's output-centric view).

    Args:
      model: a loaded `Model`.
      vectors: (F, d_mlp) features at "mlp_hidden", or (F, d_model) residual
        directions at "resid"; (dim,) for one.
      layer: the block of the MLP (needed at "mlp_hidden").
      site: "mlp_hidden" (through the MLP output map) or "resid" (direct).
      normalize: scale each vector to unit L2 norm first (the definition).

    Returns:
      (F, vocab) float32 logits of ``unembed(final_norm(mlp_map(v̂)))``.
    """
    v = _check(model, vectors, layer, site)
    if normalize:
        v = _numerics.unit_rows(v, _EPS)
    # The direction's image: the linear part of the MLP output map (no bias).
    resid = (model.mlp_output_map(v, layer=layer, bias=False) if site == "mlp_hidden"
             else v)  # (F, D)
    out = np.asarray(model.unembed(resid), np.float32)  # (F, V)
    if not np.all(np.isfinite(out)):
        raise ValueError("the vocabulary projection is not finite")
    return out


def _top(logits: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    part = np.argpartition(-logits, k - 1, axis=1)[:, :k]  # (F, k), unordered
    vals = np.take_along_axis(logits, part, axis=1)
    order = np.argsort(-vals, axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1), np.take_along_axis(vals, order, axis=1)


def vocab_projection(model, vectors, *, layer: int | None = None, site: str = "mlp_hidden",
                     k: int = 75, batch: int = 64) -> VocabProjection:
    """Top-k promoted (from +v̂) and suppressed (from −v̂) tokens with scores.

    Args:
      model: a loaded `Model`.
      vectors: (F, dim) features or directions (see `vocab_logits`).
      layer: the MLP's block (needed at "mlp_hidden").
      site: "mlp_hidden" or "resid".
      k: tokens per sign (the paper: 75).
      batch: directions per pass (bounds memory to batch × vocab floats).

    Returns:
      VocabProjection with (F, k) ids and scores per sign.
    """
    v = _check(model, vectors, layer, site)
    if k < 1:
        raise ValueError(f"k must be >= 1; got {k}")
    if batch < 1:
        raise ValueError(f"batch must be >= 1; got {batch}")
    k = min(k, model.config.vocab_size)
    parts = []
    for s in range(0, len(v), batch):
        chunk = v[s:s + batch]
        pos = vocab_logits(model, chunk, layer=layer, site=site)
        neg = vocab_logits(model, -chunk, layer=layer, site=site)
        parts.append((*_top(pos, k), *_top(neg, k)))
    if not parts:
        e = np.zeros((0, k), np.int64)
        return VocabProjection(e, e.astype(np.float32), e, e.astype(np.float32))
    return VocabProjection(*(np.concatenate([p[j] for p in parts]) for j in range(4)))
