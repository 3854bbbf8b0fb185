"""Neuron composition: which MLP neurons make up each feature, and who shares them.

An SNMF feature is a sparse signed row over neurons. Related features (the
days of the week, say) share a core of neurons and each keeps a few of its
own; the paper finds that the shared core writes the family's tokens and the
exclusive neurons the member's. `composition_effects` measures exactly that
through the vocabulary projection.
"""

from __future__ import annotations

from typing import Mapping, NamedTuple, Sequence

import numpy as np

from snmf_jax import _checks, _numerics


def _features(features, tol: float = 0.0) -> np.ndarray:
    _checks.real("tol", tol, lo=0)
    return _checks.matrix("features", features, shape="(K, d_mlp)").astype(np.float32)


def feature_neurons(features, *, max_neurons: int | None = None, tol: float = 0.0
                    ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each feature's neurons, largest |weight| first.

    Args:
      features: (K, d_mlp) Φ.
      max_neurons: keep at most this many per feature (None: all nonzero).
      tol: weights with |w| <= tol are not part of the feature.

    Returns:
      Per feature (neuron ids (m,) int, signed weights (m,) float32).
    """
    phi = _features(features, tol)
    if max_neurons is not None:
        _checks.integer("max_neurons", max_neurons, lo=1)
    out = []
    for row in phi:
        ids = np.flatnonzero(np.abs(row) > tol)
        ids = ids[np.argsort(-np.abs(row[ids]), kind="stable")][:max_neurons]
        out.append((ids, row[ids]))
    return out


def neuron_overlap(features, *, tol: float = 0.0, kind: str = "count") -> np.ndarray:
    """Feature × feature overlap of neuron sets.

    Args:
      features: (K, d_mlp) Φ.
      tol: weights with |w| <= tol do not count.
      kind: "count" (shared neurons; the diagonal is each feature's size) or
        "jaccard" (|A ∩ B| / |A ∪ B|; the diagonal is 1 for nonempty features).

    Returns:
      (K, K) symmetric: int64 counts or float32 Jaccard indices.
    """
    if kind not in ("count", "jaccard"):
        raise ValueError(f"kind must be 'count' or 'jaccard'; got {kind!r}")
    s = (np.abs(_features(features, tol)) > tol).astype(np.float32)  # (K, d)
    inter = np.rint(s @ s.T).astype(np.int64)  # (K, K); exact up to 2^24 neurons
    if kind == "count":
        return inter
    size = np.diag(inter)
    union = size[:, None] + size[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0).astype(np.float32)


def shared_neurons(features, *, min_features: int = 2, tol: float = 0.0
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Neurons that take part in many features.

    Args:
      features: (K, d_mlp) Φ.
      min_features: keep neurons used by at least this many features.
      tol: weights with |w| <= tol do not count.

    Returns:
      (neuron ids, how many features use each), most shared first.
    """
    counts = (np.abs(_features(features, tol)) > tol).sum(axis=0)  # (d,)
    ids = np.flatnonzero(counts >= min_features)
    ids = ids[np.argsort(-counts[ids], kind="stable")]
    return ids, counts[ids]


class GroupComposition(NamedTuple):
    """Shared core and exclusive neurons of a group of related features.

    Attributes:
      members: the feature indices.
      shared: neurons used by at least `min_members` members.
      exclusive: per member, the neurons no other member uses.
    """

    members: tuple[int, ...]
    shared: np.ndarray
    exclusive: dict[int, np.ndarray]


def group_composition(features, group: Sequence[int], *, min_members: int | None = None,
                      tol: float = 0.0) -> GroupComposition:
    """Shared core and each member's exclusive neurons.

    Args:
      features: (K, d_mlp) Φ.
      group: indices of related features (at least two).
      min_members: a neuron is shared when at least this many members use it
        (default: all of them).
      tol: weights with |w| <= tol do not count.

    Returns:
      GroupComposition.
    """
    phi = _features(features)
    members = tuple(int(g) for g in group)
    if len(members) < 2 or len(set(members)) != len(members):
        raise ValueError(f"group must hold at least two distinct features; got {members}")
    bad = [g for g in members if not 0 <= g < len(phi)]
    if bad:
        raise ValueError(f"group indices must be in [0, {len(phi)}); got {bad}")
    need = len(members) if min_members is None else int(min_members)
    if not 1 <= need <= len(members):
        raise ValueError(f"min_members must be in [1, {len(members)}]; got {min_members}")
    s = np.abs(phi[list(members)]) > tol  # (M, d)
    uses = s.sum(axis=0)
    shared = np.flatnonzero(uses >= need)
    exclusive = {m: np.flatnonzero(s[j] & (uses == 1)) for j, m in enumerate(members)}
    return GroupComposition(members, shared, exclusive)


class CompositionEffects(NamedTuple):
    """Mean vocabulary-projection logit of token sets, per member and part.

    Attributes:
      members: the feature indices (rows).
      token_sets: the names of the token sets (columns).
      shared: (M, S) effect of each member restricted to the shared core.
      exclusive: (M, S) effect of each member restricted to its own neurons
        (NaN where a member has none).
    """

    members: tuple[int, ...]
    token_sets: tuple[str, ...]
    shared: np.ndarray
    exclusive: np.ndarray


def composition_effects(model, features, composition: GroupComposition, *, layer: int,
                        token_sets: Mapping[str, Sequence[int]],
                        prompt: str | Sequence[int] | None = None,
                        alpha: float = 8.0) -> CompositionEffects:
    """Which tokens the shared core and the exclusive neurons promote.

    Each member's feature is cut down to only its shared neurons, or only its
    exclusive ones, and each cut is normalised. Without a prompt, each cut is
    read through the vocabulary projection (`vocab_logits`); with a prompt,
    the model runs on it with the cut amplified (α × the unit cut added at
    every position; Gemma 2/3: its image through the MLP output map, at
    mlp_out) and the effect is the change of the last position's logits
    against the unsteered run. Effects are centred by their mean over the
    vocabulary and averaged over each token set. The paper's finding reads:
    the shared parts raise the family's tokens (every member's set), the
    exclusive part of a member raises its own set most.

    Args:
      model: a loaded `Model`.
      features: (K, d_mlp) Φ.
      composition: from `group_composition`.
      layer: the layer the features were fitted on.
      token_sets: name -> token ids (e.g. each member's word, the family's).
      prompt: None (vocabulary projection), a text or a list of token ids.
      alpha: the amplification with a prompt (activation units).

    Returns:
      CompositionEffects.
    """
    from snmf_jax.interpret._vocab import vocab_logits

    phi = _features(features)
    names = tuple(token_sets)
    if not names or any(len(token_sets[n]) == 0 for n in names):
        raise ValueError("token_sets must name at least one nonempty set of token ids")
    rows = []
    for part in ("shared", "exclusive"):
        for m in composition.members:
            ids = composition.shared if part == "shared" else composition.exclusive[m]
            v = np.zeros(phi.shape[1], np.float32)
            v[ids] = phi[m, ids]
            rows.append(v)
    v = np.stack(rows)  # (2M, d)
    empty = ~np.any(v != 0, axis=1)
    v = np.where(empty[:, None], 1.0, v)
    v = _numerics.unit_rows(v, 0.0)  # no floor needed: empty rows are ones
    if prompt is None:
        logits = vocab_logits(model, v, layer=layer)  # (2M, V)
    else:
        from snmf_jax.steer import make_patch
        ids = (model.tokenizer.encode(prompt) if isinstance(prompt, str)
               else [int(t) for t in prompt])
        site = "mlp_hidden"
        if model.config.post_mlp_norm:  # an mlp_hidden edit is normalised away
            v = np.asarray(model.mlp_output_map(v, layer=layer, bias=False), np.float32)
            v, site = _numerics.unit_rows(v, 1e-12), "mlp_out"
        vecs = np.concatenate([np.zeros_like(v[:1]), v])  # row 0: the unsteered run
        scales = np.r_[0.0, np.full(len(v), alpha)].astype(np.float32)
        tokens = np.tile(np.asarray(ids, np.int32), (len(vecs), 1))  # (2M + 1, T)
        out = model.forward(tokens, patch=make_patch(layer, site, vecs, scale=scales))
        last = np.asarray(out.logits[:, -1], np.float32)
        logits = last[1:] - last[:1]
    logits = logits - logits.mean(axis=1, keepdims=True)
    eff = np.stack([logits[:, np.asarray(token_sets[n], np.int64)].mean(axis=1)
                    for n in names], axis=1)  # (2M, S)
    eff[empty] = np.nan
    m = len(composition.members)
    return CompositionEffects(composition.members, names, eff[:m], eff[m:])
