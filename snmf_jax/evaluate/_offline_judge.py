"""The offline judge: calibrated concept and fluency scores without a hosted LLM.

Concept score of text t for concept c: p = sigmoid(a * cos(e(t), mu_c) + b),
e the MiniLM sentence embedding, mu_c the unit mean embedding of c's example
sentences, and (a, b) one Platt scaling shared by all concepts, fitted on
cross-fitted scores (each example scored against centroids built without
it; positives: its own concept, negatives: every other concept), classes
weighted equally. So p answers "is t about c rather than about another
concept of the set?" at a 50/50 prior, and transfers to unseen concepts.

Fluency score: p = logistic regression on a few features of a text, fitted
on natural texts (positives: e.g. the model's own unsteered generations and
the concept sentences) against corruptions of the same texts that mimic how
steering breaks a model (negatives): word soup (shuffled words, words drawn
at random from the pool), loops (a short n-gram repeated), stutter (each
word repeated), and half-natural texts that degenerate into a loop. The
features: mean token log-probability under a reference LM (when one is
given; catches soup, rewards repetition), distinct word bigrams, share of
the most frequent word and zlib compression ratio (catch repetition), share
of words in MiniLM's vocabulary and of letter characters (catch garbage).
Perplexity alone would rate a loop as fluent; the repetition features
overrule it.
"""

from __future__ import annotations

import re
import zlib
from typing import Callable, Mapping, NamedTuple, Sequence

import numpy as np

from snmf_jax import _numerics
from snmf_jax.evaluate._calibrate import Logistic, fit_logistic, roc_auc

_WORD = re.compile(r"[A-Za-z']+|[0-9]+|[^\sA-Za-z0-9]")


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


# ---------------------------------------------------------------------------
# Concept score.


class ConceptJudge:
    """Calibrated concept-presence probabilities from MiniLM embeddings.

    Args:
      embedder: a `SentenceEmbedder` (anything with embed(texts) -> (n, h) unit rows).
      examples: concept name -> example sentences (at least 2 concepts, 2 each).
      folds: cross-fitting folds for the Platt scaling.

    Attributes:
      names: the concepts.
      centroids: (C, h) unit mean embeddings.
      platt: the `Logistic` mapping cosine to probability.
      crossfit_auroc: AUROC of the cross-fitted cosines (own concept vs others).
    """

    def __init__(self, embedder, examples: Mapping[str, Sequence[str]], *, folds: int = 3,
                 seed: int = 0):
        if len(examples) < 2:
            raise ValueError(f"ConceptJudge: examples needs >= 2 concepts; got {len(examples)}")
        small = {c: len(v) for c, v in examples.items() if len(v) < 2}
        if small:
            raise ValueError(f"ConceptJudge: every concept needs >= 2 examples; got {small}")
        self.embedder = embedder
        self.names = tuple(examples)
        rng = np.random.default_rng(seed)
        E = {c: embedder.embed(list(v)) for c, v in examples.items()}
        fold = {c: rng.permutation(len(E[c])) % min(folds, len(E[c])) for c in self.names}
        scores, labels = [], []
        for f in range(folds):
            cents = np.stack([_numerics.unit_rows(E[c][fold[c] != f].mean(0), 1e-12) for c in self.names])  # (C, h)
            for i, c in enumerate(self.names):
                held = E[c][fold[c] == f]
                if len(held) == 0:
                    continue
                cos = held @ cents.T  # (m, C)
                scores.append(cos.ravel())
                labels.append(np.tile(np.arange(len(self.names)) == i, len(held)))
        s, y = np.concatenate(scores), np.concatenate(labels)
        self.crossfit_auroc = roc_auc(s, y)
        self.platt = fit_logistic(s[:, None], y, l2=1e-4)
        self.centroids = np.stack([_numerics.unit_rows(E[c].mean(0), 1e-12) for c in self.names])

    def cosine(self, texts: Sequence[str]) -> np.ndarray:
        """(n, C) cosine of each text's embedding with each concept centroid."""
        return self.embedder.embed(list(texts)) @ self.centroids.T

    def score(self, texts: Sequence[str], concept: str | None = None) -> np.ndarray:
        """Probabilities: (n,) for one concept, or (n, C) for all."""
        cos = self.cosine(texts)
        p = self.platt.prob(cos.reshape(-1, 1)).reshape(cos.shape)
        if concept is None:
            return p
        if concept not in self.names:
            raise ValueError(f"ConceptJudge.score: unknown concept {concept!r}; "
                             f"expected one of {list(self.names)}")
        return p[:, self.names.index(concept)]

    def auroc(self, held_out: Mapping[str, Sequence[str]]) -> dict[str, float]:
        """Per-concept AUROC on held-out texts: own concept's texts vs the others'."""
        names = [c for c in held_out if c in self.names]
        texts = [t for c in names for t in held_out[c]]
        owner = np.array([c for c in names for _ in held_out[c]])
        p = self.score(texts)
        return {c: roc_auc(p[:, self.names.index(c)], owner == c) for c in names}


# ---------------------------------------------------------------------------
# Fluency score.


FEATURES = ("lm_logprob", "distinct2", "top_word", "compress", "in_vocab", "letters")


def _vocab() -> frozenset:
    try:
        from snmf_jax.evaluate._minilm import minilm_dir
        lines = (minilm_dir() / "vocab.txt").read_text(encoding="utf-8").split("\n")
    except FileNotFoundError:
        return frozenset()
    return frozenset(w for w in lines if w.isalpha())


def text_features(texts: Sequence[str], vocab: frozenset = frozenset(),
                  logprob: np.ndarray | None = None) -> np.ndarray:
    """(n, 6) fluency features in `FEATURES` order (lm_logprob 0 without an LM)."""
    out = np.zeros((len(texts), len(FEATURES)))
    for i, t in enumerate(texts):
        w = _words(t)
        n = max(len(w), 1)
        bigrams = list(zip(w, w[1:]))
        out[i, 1] = len(set(bigrams)) / len(bigrams) if bigrams else 1.0
        out[i, 2] = (max(w.count(x) for x in set(w)) / n) if w else 1.0
        raw = t.encode("utf-8")
        out[i, 3] = len(zlib.compress(raw, 9)) / max(len(raw), 1) if raw else 0.0
        alpha = [x for x in w if x.isalpha()]
        out[i, 4] = (sum(x in vocab for x in alpha) / len(alpha)) if alpha and vocab else 1.0
        out[i, 5] = sum(ch.isalpha() or ch.isspace() for ch in t) / max(len(t), 1)
    if logprob is not None:
        out[:, 0] = np.asarray(logprob, np.float64)
    return out


def corrupt(texts: Sequence[str], seed: int = 0) -> tuple[list[str], list[str]]:
    """Disfluent versions of natural texts, one per text: (texts, kinds).

    Kinds cycle through "shuffle", "soup", "loop", "stutter", "tail_loop".
    """
    rng = np.random.default_rng(seed)
    pool = [w for t in texts for w in t.split()]
    kinds = ("shuffle", "soup", "loop", "stutter", "tail_loop")
    out, ks = [], []
    for i, t in enumerate(texts):
        w = t.split() or ["the"]
        kind = kinds[(i + seed) % len(kinds)]
        if kind == "shuffle":
            r = [w[j] for j in rng.permutation(len(w))]
        elif kind == "soup":
            r = [pool[j] for j in rng.integers(0, len(pool), len(w))]
        elif kind == "loop":
            m = int(rng.integers(1, 4))
            s = int(rng.integers(0, max(len(w) - m, 0) + 1))
            r = (w[s:s + m] * (len(w) // m + 1))[:max(len(w), 6)]
        elif kind == "stutter":
            r = [x for x in w for _ in range(int(rng.integers(2, 4)))][:max(len(w), 6)]
        else:
            h = max(len(w) // 2, 1)
            m = int(rng.integers(1, 4))
            r = w[:h] + (w[h - m:h] * (len(w) // m + 1))[:max(len(w) - h, 4)]
        out.append(" ".join(r))
        ks.append(kind)
    return out, ks


class FluencyReport(NamedTuple):
    """Held-out check of a fluency calibration.

    Attributes:
      auroc: natural vs all corruptions.
      auroc_by_kind: natural vs each kind of corruption.
      natural_mean: mean score of the held-out natural texts.
      corrupt_mean: mean score of their corruptions.
    """

    auroc: float
    auroc_by_kind: dict
    natural_mean: float
    corrupt_mean: float


class FluencyJudge:
    """Calibrated fluency probabilities.

    Args:
      natural: fluent texts to calibrate on (the model's own unsteered
        generations first of all: they define "fluent" for this model).
      logprob_fn: optional texts -> (n,) mean token log-probability under a
        reference LM (`lm_logprob_fn(model)`); without it soup of real
        words is harder to catch.
      seed: corruption seed.
    """

    def __init__(self, natural: Sequence[str], *,
                 logprob_fn: Callable[[Sequence[str]], np.ndarray] | None = None,
                 seed: int = 0):
        if len(natural) < 10:
            raise ValueError(f"FluencyJudge: natural needs >= 10 texts; got {len(natural)}")
        self.logprob_fn = logprob_fn
        self.vocab = _vocab()
        bad, _ = corrupt(natural, seed)
        bad2, _ = corrupt(natural, seed + 1)
        texts = list(natural) + bad + bad2
        self.calibration_texts = tuple(texts)  # to prove a validation set disjoint
        y = np.r_[np.ones(len(natural)), np.zeros(len(bad) + len(bad2))].astype(bool)
        X = self.features(texts)
        cols = list(range(len(FEATURES))) if logprob_fn is not None else list(
            range(1, len(FEATURES)))
        self.columns = tuple(cols)
        self.model: Logistic = fit_logistic(X[:, cols], y, l2=1e-3)

    def features(self, texts: Sequence[str]) -> np.ndarray:
        lp = self.logprob_fn(list(texts)) if self.logprob_fn is not None else None
        return text_features(texts, self.vocab, lp)

    def score(self, texts: Sequence[str]) -> np.ndarray:
        """(n,) probability that each text is fluent."""
        return self.model.prob(self.features(texts)[:, list(self.columns)])

    def report(self, natural_held_out: Sequence[str], seed: int = 100) -> FluencyReport:
        """AUROC of held-out natural texts against fresh corruptions of them."""
        bad, kinds = corrupt(natural_held_out, seed)
        p_nat, p_bad = self.score(natural_held_out), self.score(bad)
        kinds = np.array(kinds)
        y = np.r_[np.ones(len(p_nat)), np.zeros(len(p_bad))]
        by_kind = {k: roc_auc(np.r_[p_nat, p_bad[kinds == k]],
                              np.r_[np.ones(len(p_nat)), np.zeros((kinds == k).sum())])
                   for k in sorted(set(kinds))}
        return FluencyReport(roc_auc(np.r_[p_nat, p_bad], y), by_kind,
                             float(p_nat.mean()), float(p_bad.mean()))


def harmonic_mean(concept: np.ndarray, fluency: np.ndarray) -> np.ndarray:
    """Per-text harmonic mean 2cf / (c + f) of concept and fluency scores on the
    official 0–2 scale, 0 where either is 0 (as the official scorer does).

    Args:
      concept, fluency: broadcastable arrays of scores in [0, 2].

    Raises:
      ValueError: a score is NaN, infinite or outside [0, 2] (a judge on
        another scale, or a failed one, must not be averaged silently).
    """
    c, f = np.asarray(concept, np.float64), np.asarray(fluency, np.float64)
    for name, a in (("concept", c), ("fluency", f)):
        if a.size and not np.all(np.isfinite(a)):
            raise ValueError(f"harmonic_mean: {name} scores must be finite; got "
                             f"{int((~np.isfinite(a)).sum())} NaN/Inf of {a.size}")
        if a.size and (a.min() < 0 or a.max() > 2):
            raise ValueError(f"harmonic_mean: {name} scores must lie in [0, 2] (the official "
                             f"scale); got [{a.min():.4g}, {a.max():.4g}]")
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where((c > 0) & (f > 0), 2 * c * f / (c + f), 0.0)
