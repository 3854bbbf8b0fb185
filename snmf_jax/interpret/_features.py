"""First looks at features: activating tokens, concepts, vocabulary projection."""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

from snmf_jax.models import mlp_output_map, unembedding_matrix


class FeatureSummary(NamedTuple):
    """What one feature responds to and what it writes.

    Attributes:
      index: feature index k.
      top_rows: rows of X with the largest codes C[:, k], best first.
      top_codes: their codes.
      label: most common label among the top rows (None if unlabelled).
      purity: share of the top rows carrying `label`.
      promoted: vocabulary tokens whose logits the feature raises most.
      suppressed: tokens it lowers most.
    """

    index: int
    top_rows: np.ndarray
    top_codes: np.ndarray
    label: str | None
    purity: float
    promoted: tuple[str, ...]
    suppressed: tuple[str, ...]


def top_rows(codes: np.ndarray, k: int = 10) -> np.ndarray:
    """Rows with the largest codes per feature.

    Args:
      codes: (n, K) nonnegative codes.
      k: rows per feature.

    Returns:
      (K, k) row indices, largest code first.
    """
    k = min(k, codes.shape[0])
    part = np.argpartition(-codes, k - 1, axis=0)[:k].T  # (K, k), unordered
    order = np.argsort(-np.take_along_axis(codes.T, part, axis=1), axis=1)
    return np.take_along_axis(part, order, axis=1)


def vocab_projection(params, config, features: np.ndarray, layer: int,
                     ) -> np.ndarray:
    """Logit effect of each feature: Φ_k · W_down · W_U (K, vocab).

    The feature's image in the residual stream is read by the unembedding
    directly (a logit-lens view that skips later layers and the final norm).

    Args:
      params: model params (stacked-layer layout).
      config: its ModelConfig.
      features: (K, d_mlp) features.
      layer: the layer the features were fitted on.

    Returns:
      (K, vocab) float32 logit contributions.
    """
    # Feature images in the residual stream (through any post-MLP norm).
    resid = np.asarray(mlp_output_map(params, np.asarray(features, np.float32), config=config,
                                      layer=layer, bias=False), np.float32)  # (K, D)
    return resid @ np.asarray(unembedding_matrix(params, config), np.float32)  # (K, V)


def summarize_features(codes: np.ndarray, *, labels: np.ndarray | None = None,
                       label_names: Sequence[str] | None = None,
                       logits: np.ndarray | None = None, decode=None,
                       k: int = 10, n_tokens: int = 5) -> list[FeatureSummary]:
    """Summaries of every feature.

    Args:
      codes: (n, K) codes.
      labels: (n,) label index of each row, or None.
      label_names: names of the labels.
      logits: (K, vocab) vocabulary projection, or None.
      decode: token id -> text, needed with `logits`.
      k: top rows considered per feature.
      n_tokens: promoted/suppressed tokens listed.

    Returns:
      One FeatureSummary per feature.
    """
    rows = top_rows(codes, k)
    out = []
    for j in range(codes.shape[1]):
        r = rows[j]
        label, purity = None, float("nan")
        if labels is not None:
            counts = np.bincount(labels[r], minlength=len(label_names))
            label, purity = label_names[int(counts.argmax())], float(counts.max() / len(r))
        promoted = suppressed = ()
        if logits is not None:
            order = np.argsort(logits[j])
            promoted = tuple(decode(int(t)) for t in order[::-1][:n_tokens])
            suppressed = tuple(decode(int(t)) for t in order[:n_tokens])
        out.append(FeatureSummary(j, r, codes[r, j], label, purity, promoted, suppressed))
    return out
