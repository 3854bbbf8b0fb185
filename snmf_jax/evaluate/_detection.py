"""Concept detection: does a method's direction light up on its concept's sentences?

For each concept and method: pick one direction on a training split (DiffMean
computes it; for a bank of features, such as SNMF features or SAE decoder
rows, the one whose training scores best separate the concept, by ROC-AUC
then S_CD), then score every held-out sentence by the maximum over its tokens
of cos(activation, direction), and report

    S_CD = log(mean score on the concept's sentences / mean on other concepts' sentences)

(the paper's measure; undefined, reported as NaN, when either mean is <= 0)
and the ROC-AUC of the concept's sentences against the others (AxBench).
"""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import numpy as np

from snmf_jax import _numerics
from snmf_jax.activations import Activations
from snmf_jax.baselines import diffmean
from snmf_jax.evaluate._calibrate import roc_auc


class Detection(NamedTuple):
    """One (concept, method) result.

    Attributes:
      concept, method: names.
      index: the chosen row of the bank (-1 for DiffMean).
      s_cd: log(mean_pos / mean_neg) on held-out sentences (NaN if a mean <= 0).
      auroc: held-out ROC-AUC, concept sentences vs other concepts' sentences.
      mean_pos, mean_neg: the two means.
      train_auroc: ROC-AUC of the chosen direction on the training split.
    """

    concept: str
    method: str
    index: int
    s_cd: float
    auroc: float
    mean_pos: float
    mean_neg: float
    train_auroc: float


def sentence_scores(acts: Activations, directions: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Max over each document's tokens of cos(activation, direction).

    Args:
      acts: activations (one row per token, `doc_ids` say whose).
      directions: (K, d) directions (any norm; zero rows score 0).

    Returns:
      (docs (m,) sorted document ids, S (m, K) scores).
    """
    D = np.asarray(directions, np.float32)
    if D.ndim != 2 or D.shape[1] != acts.d:
        raise ValueError(f"directions must be (K, {acts.d}); got shape {D.shape}")
    Dn = _numerics.unit_rows(D, 1e-12)
    Xn = _numerics.unit_rows(acts.X, 1e-12)
    cos = Xn @ Dn.T  # (n, K)
    docs, inverse = np.unique(acts.doc_ids, return_inverse=True)
    S = np.full((len(docs), D.shape[0]), -np.inf, np.float32)
    np.maximum.at(S, inverse, cos)
    return docs, S


def _doc_labels(acts: Activations, docs: np.ndarray) -> np.ndarray:
    first = {}
    for d, l in zip(acts.doc_ids, acts.labels):
        first.setdefault(int(d), int(l))
    return np.array([first[int(d)] for d in docs])


def split_documents(acts: Activations, train_fraction: float = 0.5, seed: int = 0
                    ) -> tuple[Activations, Activations]:
    """(train, test) by whole documents, stratified by label."""
    if acts.labels is None:
        raise ValueError("split_documents: acts has no labels")
    if not 0 < train_fraction < 1:
        raise ValueError(f"train_fraction must be in (0, 1); got {train_fraction}")
    docs = np.unique(acts.doc_ids)
    labels = _doc_labels(acts, docs)
    rng = np.random.default_rng(seed)
    train_docs = []
    for l in np.unique(labels):
        mine = rng.permutation(docs[labels == l])
        k = min(max(1, int(round(train_fraction * len(mine)))), len(mine) - 1)
        train_docs.extend(mine[:k])
    mask = np.isin(acts.doc_ids, train_docs)
    return acts.select(mask), acts.select(~mask)


def _summary(scores: np.ndarray, is_pos: np.ndarray) -> tuple[float, float, float, float]:
    pos, neg = float(scores[is_pos].mean()), float(scores[~is_pos].mean())
    s_cd = math.log(pos / neg) if pos > 0 and neg > 0 else float("nan")
    return s_cd, roc_auc(scores, is_pos), pos, neg


def concept_detection(train: Activations, test: Activations, bank: np.ndarray | str, *,
                      method: str = "", concepts: Sequence[str] | None = None
                      ) -> list[Detection]:
    """Concept detection of one method on labelled activations at its site.

    Args:
      train: labelled activations the direction is chosen on.
      test: held-out labelled activations (same label names), scored.
      bank: (K, d) candidate directions (SNMF features, SAE decoder rows, ...),
        or "diffmean" to compute one DiffMean direction per concept on `train`.
      method: name written into the results (default: "diffmean" or "bank").
      concepts: which label names (default: all of train's).

    Returns:
      One `Detection` per concept.
    """
    for name, a in (("train", train), ("test", test)):
        if a.labels is None:
            raise ValueError(f"concept_detection: {name} has no labels")
    if tuple(train.label_names) != tuple(test.label_names):
        raise ValueError("concept_detection: train and test have different label_names")
    names = list(train.label_names if concepts is None else concepts)
    is_diffmean = isinstance(bank, str)
    if is_diffmean and bank != "diffmean":
        raise ValueError(f"bank must be a (K, d) array or 'diffmean'; got {bank!r}")
    method = method or ("diffmean" if is_diffmean else "bank")
    if not is_diffmean:
        tr_docs, tr_S = sentence_scores(train, bank)
        tr_lab = _doc_labels(train, tr_docs)
        te_docs, te_S = sentence_scores(test, bank)
        te_lab = _doc_labels(test, te_docs)
    out = []
    for c in names:
        if c not in train.label_names:
            raise ValueError(f"concept_detection: unknown concept {c!r}")
        li = list(train.label_names).index(c)
        if is_diffmean:
            d = diffmean(train.X, train.labels == li)[None]
            tr_docs, tr_S = sentence_scores(train, d)
            tr_lab = _doc_labels(train, tr_docs)
            te_docs, te_S = sentence_scores(test, d)
            te_lab = _doc_labels(test, te_docs)
            k = 0
        else:
            pos = tr_lab == li
            au = np.array([roc_auc(tr_S[:, j], pos) for j in range(tr_S.shape[1])])
            mp, mn = tr_S[pos].mean(0), tr_S[~pos].mean(0)
            ratio = np.where((mp > 0) & (mn > 0), np.log(np.maximum(mp, 1e-30) /
                                                         np.maximum(mn, 1e-30)), -np.inf)
            k = int(np.lexsort((-ratio, -au))[0])  # best AUROC, then best S_CD
        train_auroc = roc_auc(tr_S[:, k], tr_lab == li)
        s_cd, auroc, mp, mn = _summary(te_S[:, k], te_lab == li)
        out.append(Detection(c, method, -1 if is_diffmean else k, s_cd, auroc, mp, mn,
                             train_auroc))
    return out


def detection_table(results: Sequence[Detection]) -> str:
    """A markdown table: one row per concept, S_CD / AUROC per method, and the means."""
    methods = list(dict.fromkeys(r.method for r in results))
    concepts = list(dict.fromkeys(r.concept for r in results))
    by = {(r.concept, r.method): r for r in results}
    head = "| concept | " + " | ".join(f"{m} S_CD | {m} AUROC" for m in methods) + " |"
    lines = [head, "|" + "---|" * (1 + 2 * len(methods))]
    for c in concepts:
        cells = []
        for m in methods:
            r = by.get((c, m))
            cells += ["" if r is None else f"{r.s_cd:.3f}", "" if r is None else f"{r.auroc:.3f}"]
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    means = []
    for m in methods:
        rs = [r for r in results if r.method == m]
        means += [f"{np.nanmean([r.s_cd for r in rs]):.3f}", f"{np.mean([r.auroc for r in rs]):.3f}"]
    lines.append("| **mean** | " + " | ".join(means) + " |")
    return "\n".join(lines)
