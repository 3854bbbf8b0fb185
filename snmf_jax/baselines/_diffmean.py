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


def diffmean_texts(model, positives: Sequence[Sequence[str]], negatives: Sequence[Sequence[str]],
                   *, layer: int, site: str = "mlp_out", batch_size: int = 16) -> np.ndarray:
    """One DiffMean direction per (positive texts, negative texts) pair, the way the
    official `experiments/baselines/diffmean.py` computes it: every token of every
    text at `site` (default mlp_out, the official runs' mode), the token-weighted
    mean of the positive texts minus that of the negative ones, unit-normalised.

    One difference: the official code keeps the BOS row where the tokenizer adds
    one (Gemma); the export here drops it (BOS rows are outliers that say nothing
    about the texts). SmolLM2's tokenizer adds no BOS, so there the two agree.

    Args:
      model: a Model.
      positives: F lists of activating texts (e.g. each SNMF feature's
        top-activating contexts).
      negatives: F lists of neutral texts.
      layer: block index.
      site: activation site.
      batch_size: texts per forward pass.

    Returns:
      (F, d) float32 unit rows.
    """
    from snmf_jax.activations import export_activations, from_texts
    if len(positives) != len(negatives) or not len(positives):
        raise ValueError(f"diffmean_texts: need one negative set per positive set; got "
                         f"{len(positives)} and {len(negatives)}")
    empty = [i for i, (p, q) in enumerate(zip(positives, negatives)) if not p or not q]
    if empty:
        raise ValueError(f"diffmean_texts: sets {empty} have no positive or no negative texts")
    texts, owner = [], []  # owner[j] = (set, +1 | -1) of text j
    for i, (p, q) in enumerate(zip(positives, negatives)):
        texts += list(p) + list(q)
        owner += [(i, 1)] * len(p) + [(i, -1)] * len(q)
    acts = export_activations(model, from_texts(texts), layer, site=site,
                              batch_size=batch_size, progress=False)
    doc_set = np.array([o[0] for o in owner])[acts.doc_ids]  # (n,) set of each token
    doc_pos = np.array([o[1] for o in owner])[acts.doc_ids] > 0  # (n,) positive side
    out = []
    for i in range(len(positives)):
        rows = doc_set == i
        out.append(diffmean(acts.X[rows], doc_pos[rows]))
    return np.stack(out)
