"""A one-line-per-feature summary (used by `snmf-jax demo`)."""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

from snmf_jax import _checks
from snmf_jax.interpret._contexts import top_rows


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


def summarize_features(codes: np.ndarray, *, labels: np.ndarray | None = None,
                       label_names: Sequence[str] | None = None,
                       projection=None, decode=None,
                       k: int = 10, n_tokens: int = 5) -> list[FeatureSummary]:
    """Summaries of every feature.

    Args:
      codes: (n, K) codes.
      labels: (n,) label index of each row, or None.
      label_names: names of the labels.
      projection: a `VocabProjection` of the K features, or None.
      decode: token id -> text, needed with `projection`.
      k: top rows considered per feature.
      n_tokens: promoted/suppressed tokens listed.

    Returns:
      One FeatureSummary per feature.
    """
    codes = _checks.matrix("codes", codes, nonneg=True)
    if labels is not None:
        labels = np.asarray(labels)
        n_names = len(label_names or ())
        if labels.shape != (codes.shape[0],) or labels.dtype.kind not in "iu" or (
                labels.size and (labels.min() < 0 or labels.max() >= n_names)):
            raise ValueError(f"labels must be ({codes.shape[0]},) ints in [0, {n_names}) "
                             f"(one per row, indexing label_names); got shape {labels.shape}, "
                             f"dtype {labels.dtype}")
    rows = top_rows(codes, k)
    out = []
    for j in range(codes.shape[1]):
        r = rows[j]
        label, purity = None, float("nan")
        if labels is not None:
            counts = np.bincount(labels[r], minlength=len(label_names))
            label, purity = label_names[int(counts.argmax())], float(counts.max() / len(r))
        promoted = suppressed = ()
        if projection is not None:
            promoted = tuple(projection.tokens(decode, j, "+", n_tokens))
            suppressed = tuple(projection.tokens(decode, j, "-", n_tokens))
        out.append(FeatureSummary(j, r, codes[r, j], label, purity, promoted, suppressed))
    return out
