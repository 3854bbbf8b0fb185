"""Label association: which labels' tokens activate a feature, and vice versa.

The score of (feature k, label l) is the ROC-AUC of the code C[:, k] as a
detector of the tokens (or, pooled by max, documents) labelled l against all
the others: 1 when every
token of l outranks every other token, 0.5 at chance. Unlike mean codes it
does not favour frequent labels, and ties (many zero codes) count one half.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

from snmf_jax import _checks


class LabelAssociation(NamedTuple):
    """Scores of every (feature, label) pair.

    Attributes:
      label_names: the L labels.
      auc: (K, L) ROC-AUC of each feature's code for each label's tokens.
      mean_code: (K, L) mean code of each feature over each label's tokens.
    """

    label_names: tuple[str, ...]
    auc: np.ndarray
    mean_code: np.ndarray

    def best_labels(self, feature: int, n: int = 3) -> list[tuple[str, float]]:
        """The n labels with the highest AUC for a feature, best first."""
        order = np.argsort(-self.auc[feature], kind="stable")[:n]
        return [(self.label_names[int(l)], float(self.auc[feature, l])) for l in order]

    def best_features(self, label: str | int, n: int = 3) -> list[tuple[int, float]]:
        """The n features with the highest AUC for a label, best first."""
        l = self.label_names.index(label) if isinstance(label, str) else int(label)
        order = np.argsort(-self.auc[:, l], kind="stable")[:n]
        return [(int(k), float(self.auc[k, l])) for k in order]


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of each column, ties sharing their average rank."""
    n, k = x.shape
    order = np.argsort(x, axis=0, kind="stable")  # (n, K)
    sx = np.take_along_axis(x, order, axis=0)
    ranks = np.empty((n, k), np.float64)
    for j in range(k):
        v = sx[:, j]
        starts = np.flatnonzero(np.r_[True, v[1:] != v[:-1]])
        ends = np.r_[starts[1:], n]
        avg = (starts + ends + 1) / 2.0  # mean of ranks starts+1 .. ends
        ranks[order[:, j], j] = np.repeat(avg, ends - starts)
    return ranks


def _pool_documents(codes, labels, doc_ids):
    """Per document: the max code of each feature and the document's label."""
    doc_ids = np.asarray(doc_ids)
    if doc_ids.shape != labels.shape:
        raise ValueError(f"doc_ids must have shape {labels.shape}; got {doc_ids.shape}")
    order = np.argsort(doc_ids, kind="stable")
    d = doc_ids[order]
    starts = np.flatnonzero(np.r_[True, d[1:] != d[:-1]])
    pooled = np.maximum.reduceat(codes[order], starts, axis=0)  # (docs, K)
    lab = labels[order]
    mixed = np.minimum.reduceat(lab, starts) != np.maximum.reduceat(lab, starts)
    if np.any(mixed):
        raise ValueError("pooling by document needs one label per document; "
                         f"{int(mixed.sum())} documents mix labels")
    return pooled, lab[starts]


def label_association(codes: np.ndarray, labels: np.ndarray,
                      label_names: Sequence[str], *, doc_ids: np.ndarray | None = None
                      ) -> LabelAssociation:
    """ROC-AUC and mean code of every feature for every label.

    Args:
      codes: (n, K) codes.
      labels: (n,) int label index of each token (negative: unlabelled, left out).
      label_names: the L label names.
      doc_ids: (n,) document of each token, or None. Given, each document
        counts once with its largest code per feature: the right unit when
        labels belong to whole sentences (the concept dataset) while a feature
        fires on one or two of their tokens.

    Returns:
      LabelAssociation (labels without tokens get AUC NaN).
    """
    codes = _checks.matrix("codes", codes).astype(np.float64)
    labels = np.asarray(labels)
    names = tuple(str(s) for s in label_names)
    if codes.ndim != 2:
        raise ValueError(f"codes must be (n, K); got shape {codes.shape}")
    if labels.shape != (codes.shape[0],):
        raise ValueError(f"labels must have shape ({codes.shape[0]},); got {labels.shape}")
    if labels.size and labels.dtype.kind not in "iu":
        raise ValueError(f"labels must be integer label indices; got dtype {labels.dtype}")
    if not np.all(np.isfinite(codes)):
        raise ValueError("codes contain NaN or Inf")
    if labels.size and labels.max() >= len(names):
        raise ValueError(f"labels must be < len(label_names)={len(names)}; got "
                         f"{int(labels.max())}")
    if doc_ids is not None:
        codes, labels = _pool_documents(codes, labels, doc_ids)
    keep = labels >= 0
    codes, labels = codes[keep], labels[keep]
    n = len(labels)
    onehot = np.zeros((len(names), n))
    onehot[labels, np.arange(n)] = 1.0  # (L, n)
    n_pos = onehot.sum(axis=1)  # (L,)
    rank_sum = onehot @ _average_ranks(codes)  # (L, K)
    n_neg = n - n_pos
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (rank_sum - n_pos[:, None] * (n_pos[:, None] + 1) / 2) / (
            n_pos[:, None] * n_neg[:, None])
        mean = (onehot @ codes) / n_pos[:, None]
    bad = (n_pos == 0) | (n_neg == 0)
    auc[bad] = np.nan
    mean[n_pos == 0] = np.nan
    return LabelAssociation(names, auc.T.astype(np.float32), mean.T.astype(np.float32))
