"""Top-activating contexts: where in the data a feature fires most.

For each feature, the tokens with the largest codes (codes <= 0 never count),
each shown with a window of tokens around it cut at its document's edges and
the feature's codes over the whole window, so a page can shade it. Rows of an
export are grouped by document and in position order, so a document is a
contiguous run of rows and a window is a slice of rows.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

from snmf_jax import _checks


class Context(NamedTuple):
    """One activating token in its window.

    Attributes:
      row: the activating row (token) of X.
      value: its code.
      doc: its document index.
      tokens: the window's token strings (each with the whitespace before it).
      values: (w,) the feature's codes over the window.
      center: index of the activating token in `tokens`.
      label: the document's label name, or None.
    """

    row: int
    value: float
    doc: int
    tokens: tuple[str, ...]
    values: np.ndarray
    center: int
    label: str | None = None


class _Source(NamedTuple):
    doc_ids: np.ndarray
    token_ids: np.ndarray
    offsets: np.ndarray
    texts: Sequence[str]
    labels: np.ndarray | None
    label_names: Sequence[str] | None


def _source(data, n: int) -> _Source:
    """Provenance of an `Activations` or an `ActivationStore` (no X read)."""
    if hasattr(data, "provenance_rows"):  # ActivationStore
        p = data.provenance_rows(0, data.n_rows)
        src = _Source(p.doc_ids, p.token_ids, p.offsets, data.texts, p.labels,
                      data.label_names if p.labels is not None else None)
    elif hasattr(data, "doc_ids"):
        src = _Source(data.doc_ids, data.token_ids, data.offsets, data.texts, data.labels,
                      data.label_names)
    else:
        raise TypeError(f"data must be Activations or an ActivationStore; got "
                        f"{type(data).__name__}")
    if len(src.doc_ids) != n:
        raise ValueError(f"codes have {n} rows but the data has {len(src.doc_ids)} tokens")
    return src


def top_rows(codes: np.ndarray, k: int = 10) -> np.ndarray:
    """Rows with the largest codes per feature (ties and zeros included).

    Args:
      codes: (n, K) nonnegative codes.
      k: rows per feature.

    Returns:
      (K, k) row indices, largest code first.
    """
    codes = _checks.matrix("codes", codes, nonneg=True)
    k = min(_checks.integer("k", k, lo=1), codes.shape[0])
    part = np.argpartition(-codes, k - 1, axis=0)[:k].T  # (K, k), unordered
    order = np.argsort(-np.take_along_axis(codes.T, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def _doc_bounds(doc_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(first row, one past the last row) of each row's document run."""
    n = len(doc_ids)
    idx = np.arange(n)
    start = np.r_[True, doc_ids[1:] != doc_ids[:-1]]
    first = np.maximum.accumulate(np.where(start, idx, 0))
    end = np.r_[doc_ids[1:] != doc_ids[:-1], True]
    last = np.minimum.accumulate(np.where(end, idx, n - 1)[::-1])[::-1]
    return first, last + 1


def _piece(src: _Source, i: int, first: int) -> str:
    """Row i's token text with the whitespace that precedes it in the document."""
    text = src.texts[int(src.doc_ids[i])]
    s, e = int(src.offsets[i, 0]), int(src.offsets[i, 1])
    if e <= s:
        return f"<{int(src.token_ids[i])}>"
    if i > first:
        prev = int(src.offsets[i - 1, 1])
        if 0 <= prev <= s:
            s = prev
    return text[s:e]


def _context(src, col, i, window, dedup_window, first, stop, pieces, seen):
    """Context of row i, or None when a near-identical one was already taken."""
    lo, hi = max(int(first[i]), i - window), min(int(stop[i]), i + window + 1)
    if dedup_window is not None:
        # A token already inside a shown window of its document would show the
        # same text again with another token marked.
        doc = int(src.doc_ids[i])
        if any(abs(i - j) <= window for j in seen.get(("rows", doc), ())):
            return None
        a, b = max(lo, i - dedup_window), min(hi, i + dedup_window + 1)
        key = (i - a, tuple(src.token_ids[a:b].tolist()))
        if key in seen:
            return None
        seen[key] = True
        seen.setdefault(("rows", doc), []).append(i)
    toks = []
    for j in range(lo, hi):
        if j not in pieces:
            pieces[j] = _piece(src, j, int(first[j]))
        toks.append(pieces[j])
    label = None if src.labels is None else src.label_names[int(src.labels[i])]
    return Context(i, float(col[i]), int(src.doc_ids[i]), tuple(toks),
                   np.asarray(col[lo:hi], np.float32), i - lo, label)


def top_contexts(codes: np.ndarray, data, *, k: int = 25, window: int = 15,
                 dedup_window: int | None = 4, features: Sequence[int] | None = None
                 ) -> list[list[Context]]:
    """The top-activating contexts of each feature.

    Args:
      codes: (n, K) codes, one row per token of `data`.
      data: the `Activations` or `ActivationStore` the codes were fitted on
        (only its provenance and texts are read).
      k: contexts per feature (the paper: 25).
      window: tokens kept on each side of the activating token, inside its
        document (the paper: 15).
      dedup_window: two contexts whose token ids agree within ± this many
        tokens of the activating token are near-identical, and so is a token
        inside the window of a stronger context of its document (the same
        text with another token marked); only the stronger is kept. None
        keeps duplicates.
      features: which features (default: all).

    Returns:
      Per feature, at most k Contexts, strongest first (fewer when fewer
      tokens have a positive code).
    """
    codes = _checks.matrix("codes", codes, nonneg=True)
    _checks.integer("k", k, lo=1)
    _checks.integer("window", window, lo=0)
    if dedup_window is not None:
        _checks.integer("dedup_window", dedup_window, lo=0)
    n, n_feat = codes.shape
    if features is not None:
        for f in features:
            _checks.integer("features[...]", f, lo=0, hi=n_feat - 1)
    src = _source(data, n)
    first, stop = _doc_bounds(np.asarray(src.doc_ids))
    feats = range(n_feat) if features is None else [int(f) for f in features]
    # Candidates beyond k leave room for the near-duplicates that get skipped.
    m = min(n, k * 4 if dedup_window is not None else k)
    pieces: dict[int, str] = {}
    out = []
    for f in feats:
        col = codes[:, f]
        ctxs: list[Context] = []
        seen: dict = {}  # token-id keys, and ("rows", doc) -> rows shown
        done, size = 0, m
        while True:
            cand = np.argpartition(-col, size - 1)[:size] if size < n else np.arange(n)
            cand = cand[np.argsort(-col[cand], kind="stable")][done:]
            for i in cand:
                i = int(i)
                if col[i] <= 0 or len(ctxs) == k:
                    break
                ctx = _context(src, col, i, window, dedup_window, first, stop, pieces, seen)
                if ctx is not None:
                    ctxs.append(ctx)
            done = size
            # Too many near-duplicates among the candidates: look further down.
            exhausted = len(cand) == 0 or col[int(cand[-1])] <= 0
            if len(ctxs) == k or size >= n or exhausted:
                break
            size = min(n, size * 4)
        out.append(ctxs)
    return out
