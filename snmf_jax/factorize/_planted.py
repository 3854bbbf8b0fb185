"""Synthetic activations with a known two-level tree of neuron groups.

Each parent concept owns a core group of neurons; each of its children
owns an exclusive group and shares its parent's core. A leaf's feature is
core + exclusive (signed values); every token expresses one leaf, with a
random positive strength, plus Gaussian noise. Hierarchical SNMF should put
each child under the coarse feature of its true parent.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from snmf_jax import _numerics


class PlantedHierarchy(NamedTuple):
    """Planted data and its truth.

    Attributes:
      X: (n, d) float32 activations.
      leaf: (n,) int: the leaf each token expresses.
      leaf_features: (n_leaves, d) the true fine features.
      parent_features: (n_parents, d) the true cores.
      parent_of: (n_leaves,) int: each leaf's parent.
    """

    X: np.ndarray
    leaf: np.ndarray
    leaf_features: np.ndarray
    parent_features: np.ndarray
    parent_of: np.ndarray


def planted_hierarchy(*, parents: int = 4, children: int = 3, d: int = 256,
                      core: int = 8, exclusive: int = 6, tokens_per_leaf: int = 60,
                      noise: float = 0.05, jitter: float = 0.3,
                      seed: int = 0) -> PlantedHierarchy:
    """Draws activations from a random two-level tree of neuron groups.

    Args:
      parents: coarse concepts.
      children: leaves per parent.
      d: neurons; must fit parents·core + parents·children·exclusive groups.
      core: neurons in each parent's shared core.
      exclusive: neurons exclusive to each leaf.
      tokens_per_leaf: tokens expressing each leaf.
      noise: standard deviation of the Gaussian noise added to every entry.
      jitter: each child scales its parent's core values by U(1 ± jitter).
      seed: numpy seed.

    Returns:
      A PlantedHierarchy.
    """
    n_leaves = parents * children
    need = parents * core + n_leaves * exclusive
    if need > d:
        raise ValueError(f"d must be >= parents·core + leaves·exclusive = {need}; got {d}")
    rng = np.random.default_rng(seed)
    perm = rng.permutation(d)
    sign = lambda k: rng.choice([-1.0, 1.0], size=k) * rng.uniform(0.7, 1.3, size=k)
    parent_features = np.zeros((parents, d))
    leaf_features = np.zeros((n_leaves, d))
    parent_of = np.repeat(np.arange(parents), children)
    pos = 0
    for p in range(parents):
        parent_features[p, perm[pos:pos + core]] = sign(core)
        pos += core
    for leaf in range(n_leaves):
        # The core's values vary a little from child to child, as a real
        # family's shared neurons do, so no single core feature explains
        # every child exactly.
        leaf_features[leaf] = parent_features[parent_of[leaf]] * rng.uniform(
            1 - jitter, 1 + jitter, size=d)
        leaf_features[leaf, perm[pos:pos + exclusive]] = sign(exclusive)
        pos += exclusive
    leaf = np.repeat(np.arange(n_leaves), tokens_per_leaf)
    strength = rng.uniform(0.5, 1.5, size=leaf.shape[0])
    x = strength[:, None] * leaf_features[leaf] + noise * rng.standard_normal((leaf.shape[0], d))
    order = rng.permutation(leaf.shape[0])
    return PlantedHierarchy(x[order].astype(np.float32), leaf[order], leaf_features,
                            parent_features, parent_of)


def parent_recovery(h, planted: PlantedHierarchy) -> dict[str, float]:
    """How well a fitted hierarchy recovers the planted tree.

    Each true leaf is matched to the level-0 feature of largest |cosine|,
    each true parent to the level-1 feature of largest |cosine| with its
    core; a match shared by two true concepts (a merge) counts as missed. A
    leaf is linked correctly when its matched feature's strongest unit link
    goes to the feature matched to its true parent.

    Args:
      h: a HierarchicalResult with at least two levels.
      planted: the truth.

    Returns:
      {"leaves": fraction of leaves found (distinct level-0 features, |cos| ≥ 0.9),
       "links": fraction of found leaves linked to their true parent,
       "overall": fraction of all leaves found and linked correctly}.
    """
    unit = lambda a: _numerics.unit_rows(a, 1e-12)
    cos = np.abs(unit(planted.leaf_features) @ unit(h.features[0]).T)  # (leaves, r0)
    fine = cos.argmax(1)
    coarse = np.abs(unit(planted.parent_features) @ unit(h.features[1]).T).argmax(1)
    found = (np.bincount(fine, minlength=h.ranks[0])[fine] == 1) & (cos.max(1) >= 0.9)
    ok_coarse = np.bincount(coarse, minlength=h.ranks[1])[coarse] == 1  # (parents,)
    linked = h.unit_links(1)[fine].argmax(1)  # (leaves,)
    right = ok_coarse[planted.parent_of] & (linked == coarse[planted.parent_of])
    return {"leaves": float(found.mean()),
            "links": float(right[found].mean()) if found.any() else 0.0,
            "overall": float((found & right).mean())}
