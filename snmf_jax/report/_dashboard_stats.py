"""The statistics of a SAEDashboard / Neuronpedia feature page, computed for SNMF.

SAEDashboard fills its feature tables and histograms from an SAE's encoder
activations; here the codes C (n, K) play the encoder activations, the MLP
hidden activations X (n, d_mlp) the "neurons" and Φ (K, d_mlp) the decoder:

- activation density and histogram: SNMF's multiplicative updates leave every
  code positive, so "nonzero" is the report's rule, a code above `active` ×
  the feature's largest code (`active_mask`);
- neuron alignment: Φ_k's largest-|weight| neurons and their share of ‖Φ_k‖₁;
- correlated neurons and features: Pearson correlation (and cosine, which
  SAEDashboard writes under `*_l1`) of C[:, k] with each column of X, and with
  the other codes, over every token, streamed one chunk at a time;
- logit histogram: the feature's full-vocabulary logits (the vocabulary
  projection before its top-k).
"""

from __future__ import annotations

from typing import Any, Iterator, NamedTuple

import numpy as np

from snmf_jax import _checks


def active_mask(codes: np.ndarray, active: float) -> np.ndarray:
    """(n, K) bool: a code counts as active ("nonzero") when it exceeds
    `active` × its feature's largest code (the report's `frac_active` rule)."""
    if not 0 <= active < 1:
        raise ValueError(f"active must be in [0, 1); got {active}")
    top = codes.max(axis=0) if len(codes) else np.zeros(codes.shape[1], codes.dtype)  # (K,)
    return codes > active * np.maximum(top, 0)


def histogram(values: np.ndarray, n_bins: int) -> tuple[list[float], list[int]]:
    """SAEDashboard's histogram: `n_bins` equal bins over [min, max].

    Returns:
      (bar_values: bin centres, bar_heights: counts); both empty for no values.
      The counts sum to len(values) (the maximum falls in the last bin). All
      values equal: one bar at that value.
    """
    values = np.asarray(values, np.float64).ravel()
    if values.size == 0:
        return [], []
    lo, hi = float(values.min()), float(values.max())
    if hi == lo:
        return [lo], [int(values.size)]
    edges = np.linspace(lo, hi, n_bins + 1)  # (n_bins + 1,)
    counts, _ = np.histogram(values, bins=edges)
    centres = edges[:-1] + (hi - lo) / n_bins / 2
    return [float(c) for c in centres], [int(c) for c in counts]


def neuron_alignment(features: np.ndarray, n_rows: int
                     ) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """Each feature's `n_rows` largest-|weight| neurons.

    Args:
      features: (K, d_mlp) Φ.
      n_rows: neurons per feature (fewer when a feature has fewer nonzero).

    Returns:
      Per feature lists: neuron ids, signed weights, |weight| / ‖Φ_k‖₁.
    """
    from snmf_jax import interpret
    l1 = np.abs(features).sum(axis=1)  # (K,)
    ids, vals, share = [], [], []
    for k, (i, w) in enumerate(interpret.feature_neurons(features, max_neurons=n_rows)):
        ids.append(i)
        vals.append(w)
        share.append(np.abs(w) / l1[k] if l1[k] > 0 else np.zeros_like(w))
    return ids, vals, share


class Correlations(NamedTuple):
    """Top-`n_rows` Pearson correlations of each feature's codes.

    Attributes:
      neuron_ids, neuron_pearson, neuron_cosine: (K, m) with the columns of X
        (the MLP neurons), most positively correlated first.
      feature_ids, feature_pearson, feature_cosine: (K, m') with the other
        features' codes (a feature never lists itself).
      n_docs: distinct documents among the rows.
      longest_doc: tokens in the longest document (its largest position + 1).
    """

    neuron_ids: np.ndarray
    neuron_pearson: np.ndarray
    neuron_cosine: np.ndarray
    feature_ids: np.ndarray
    feature_pearson: np.ndarray
    feature_cosine: np.ndarray
    n_docs: int
    longest_doc: int


def _blocks(data: Any, n: int, block: int = 8192
            ) -> Iterator[tuple[int, np.ndarray, np.ndarray | None, np.ndarray | None]]:
    """(first row, X rows (m, d) float32, doc ids, positions) over the data in order."""
    if hasattr(data, "chunk_bounds"):  # an ActivationStore: one chunk at a time
        if data.n_rows != n:
            raise ValueError(f"data holds {data.n_rows} rows but codes have {n}")
        for i in range(data.num_chunks):
            X, prov, first = data.chunk(i), data.provenance(i), int(data.chunk_bounds[i])
            for s in range(0, len(X), block):  # bounded shifted copies downstream
                yield (first + s, X[s:s + block],
                       None if prov.doc_ids is None else prov.doc_ids[s:s + block],
                       None if prov.positions is None else prov.positions[s:s + block])
        return
    X = np.asarray(getattr(data, "X", data), np.float32)
    if X.ndim != 2 or X.shape[0] != n:
        raise ValueError(f"data must hold one (n, d) row per code row (n = {n}); got "
                         f"shape {X.shape}")
    docs, pos = getattr(data, "doc_ids", None), getattr(data, "positions", None)
    for s in range(0, n, block):
        yield (s, X[s:s + block], None if docs is None else np.asarray(docs[s:s + block]),
               None if pos is None else np.asarray(pos[s:s + block]))


def _top(corr: np.ndarray, cos: np.ndarray, m: int) -> tuple[np.ndarray, ...]:
    m = min(m, corr.shape[1])
    order = np.argsort(-corr, axis=1, kind="stable")[:, :m]  # (K, m)
    return (order, np.take_along_axis(corr, order, axis=1),
            np.take_along_axis(cos, order, axis=1))


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den clipped to [-1, 1]; 0 where den is 0 (a side without variance)."""
    safe = np.where(den > 0, den, 1.0)
    return np.clip(np.where(den > 0, num / safe, 0.0), -1.0, 1.0)


def _pearson(n: int, sxy, sx, sx2, sy, sy2) -> np.ndarray:
    """(X, Y) Pearson correlations from sums over n rows (shifted or not)."""
    var_x, var_y = n * sx2 - sx ** 2, n * sy2 - sy ** 2
    den = np.sqrt(np.outer(np.maximum(var_x, 0), np.maximum(var_y, 0)))
    return _ratio(n * sxy - np.outer(sx, sy), den)


def correlations(codes: np.ndarray, data: Any, *, n_rows: int = 3) -> Correlations:
    """Correlated neurons and features of every feature, in one pass over the data.

    Args:
      codes: (n, K) codes of the rows of `data`.
      data: the `Activations`, `ActivationStore` or (n, d_mlp) array the codes
        belong to (its X is read chunk by chunk).
      n_rows: entries per table (SAEDashboard: 3).

    Returns:
      Correlations.
    """
    codes = _checks.matrix("codes", codes, nonneg=True).astype(np.float32, copy=False)
    _checks.integer("n_rows", n_rows, lo=1)
    n, K = codes.shape
    if n < 2:
        raise ValueError(f"codes must have at least 2 rows to correlate; got {n}")
    sums: dict[str, Any] = {}
    shift_c = shift_x = None
    docs: set[int] = set()
    longest = 0
    for start, X, doc_ids, positions in _blocks(data, n):
        if not np.all(np.isfinite(X)):
            raise ValueError(f"data: non-finite activations in rows from {start}")
        C = codes[start:start + len(X)]  # (m, K) float32
        if shift_c is None:
            # Sums of shifted values: a correlation does not change under a
            # shift, and shifting by about the mean keeps n·Σxy − ΣxΣy from
            # cancelling to noise when means dwarf the spread, so the float32
            # products (accumulated in float64 across blocks) stay accurate.
            shift_c, shift_x = C.mean(0), X.mean(0)  # float32
            sums = dict.fromkeys(("cx", "cc", "c", "c2", "x", "x2"), 0.0)
        C, X = C - shift_c, X - shift_x
        sums["cx"] = sums["cx"] + (C.T @ X).astype(np.float64)  # (K, d)
        sums["cc"] = sums["cc"] + (C.T @ C).astype(np.float64)  # (K, K)
        sums["c"] = sums["c"] + C.sum(0, dtype=np.float64)
        sums["c2"] = sums["c2"] + np.square(C).sum(0, dtype=np.float64)
        sums["x"] = sums["x"] + X.sum(0, dtype=np.float64)
        sums["x2"] = sums["x2"] + np.square(X).sum(0, dtype=np.float64)
        if doc_ids is not None:
            docs.update(np.unique(doc_ids).tolist())
        if positions is not None and len(positions):
            longest = max(longest, int(positions.max()) + 1)
    cx, cc, sc, sc2, sx, sx2 = (sums[k] for k in ("cx", "cc", "c", "c2", "x", "x2"))
    shift_c, shift_x = shift_c.astype(np.float64), shift_x.astype(np.float64)
    p_neur = _pearson(n, cx, sc, sc2, sx, sx2)
    p_feat = _pearson(n, cc, sc, sc2, sc, sc2)
    # Unshifted sums for the cosines: Σ(c'+a)(x'+b) = Σc'x' + aΣx' + bΣc' + n·ab.
    raw_cx = cx + np.outer(shift_c, sx) + np.outer(sc, shift_x) + n * np.outer(shift_c, shift_x)
    raw_cc = cc + np.outer(shift_c, sc) + np.outer(sc, shift_c) + n * np.outer(shift_c, shift_c)
    raw_c2 = sc2 + 2 * shift_c * sc + n * shift_c ** 2  # (K,)
    raw_x2 = sx2 + 2 * shift_x * sx + n * shift_x ** 2  # (d,)
    cos_neur = _ratio(raw_cx, np.sqrt(np.outer(raw_c2, raw_x2)))
    cos_feat = _ratio(raw_cc, np.sqrt(np.outer(raw_c2, raw_c2)))
    # A feature is not its own correlate: push the diagonal below every candidate.
    np.fill_diagonal(p_feat, -np.inf)
    neur = _top(p_neur, cos_neur, n_rows)
    feat = _top(p_feat, cos_feat, min(n_rows, K - 1))
    return Correlations(*neur, *feat, n_docs=len(docs), longest_doc=longest)


def logit_histograms(model, features: np.ndarray, layer: int, n_bins: int, *,
                     batch: int = 64) -> list[tuple[list[float], list[int]]]:
    """Per feature, the histogram of its full-vocabulary logits (unit φ̂)."""
    from snmf_jax import interpret
    out = []
    for s in range(0, len(features), batch):
        logits = interpret.vocab_logits(model, features[s:s + batch], layer=layer)  # (F, V)
        out.extend(histogram(row, n_bins) for row in logits)
    return out
