"""Difference-in-means directions (DiffMean)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from snmf_jax.activations import Activations


def diffmean(X: np.ndarray, in_concept: np.ndarray) -> np.ndarray:
    """Unit direction mean(X[in_concept]) - mean(X[~in_concept]).

    Args:
      X: (n, d) activations at any site (one row per token).
      in_concept: (n,) bool, the tokens of the concept's sentences.

    Returns:
      (d,) float32 unit vector.

    Raises:
      ValueError: shapes disagree, one side is empty, the activations are not
        finite, or the two means coincide.
    """
    X = np.asarray(X)
    mask = np.asarray(in_concept, bool)
    if X.ndim != 2:
        raise ValueError(f"diffmean: X must be (n, d); got shape {X.shape}")
    if mask.shape != (X.shape[0],):
        raise ValueError(f"diffmean: in_concept must have shape ({X.shape[0]},); got {mask.shape}")
    if mask.all() or not mask.any():
        raise ValueError(f"diffmean: in_concept selects {int(mask.sum())} of {len(mask)} "
                         "rows; both sides need at least one")
    if not np.all(np.isfinite(X)):
        raise ValueError("diffmean: X has non-finite values")
    delta = X[mask].mean(0, dtype=np.float64) - X[~mask].mean(0, dtype=np.float64)
    norm = np.linalg.norm(delta)
    if norm == 0:
        raise ValueError("diffmean: the concept mean equals the others' mean")
    return (delta / norm).astype(np.float32)


def diffmean_directions(acts: Activations, concepts: Sequence[str] | None = None,
                        ) -> tuple[tuple[str, ...], np.ndarray]:
    """One DiffMean direction per labelled concept.

    Args:
      acts: labelled activations (e.g. `export_activations(model,
        load_concepts(), layers=L, site="mlp_out")`); each concept's tokens
        against every other labelled token.
      concepts: which label names (default: all).

    Returns:
      (names, D) with D (len(names), d) float32 unit rows.
    """
    if acts.labels is None:
        raise ValueError("diffmean_directions: acts has no labels; export a labelled dataset")
    names = tuple(acts.label_names if concepts is None else concepts)
    index = {n: i for i, n in enumerate(acts.label_names)}
    missing = [n for n in names if n not in index]
    if missing:
        raise ValueError(f"diffmean_directions: unknown concepts {missing}; "
                         f"expected some of {list(acts.label_names)}")
    D = np.stack([diffmean(acts.X, acts.labels == index[n]) for n in names])
    return names, D
