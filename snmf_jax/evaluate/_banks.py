"""Feature banks of the per-feature protocol: which features, and what each one means.

A `FeatureBank` is one method's dictionary over a corpus: its codes on the
corpus tokens (for top-activating contexts) and its vectors (for steering
and the vocabulary projection). SNMF: the `SNMFResult`'s codes and Φ rows at
the hidden site; an SAE (ours, or one loaded from SAELens): its latents'
activations on the same corpus and its decoder rows at mlp_out.

`sample_features` draws a seeded sample of usable features; the rule that
skips the rest (the offline stand-in for the official describer, whose
"TRASH" descriptions the official scorers drop):

1. degenerate: the feature's vector is zero or not finite;
2. dead: fewer than `min_contexts` distinct top-activating contexts with a
   positive code on the corpus (after near-duplicate removal);
3. position-only: more than half of its top `n_describe` contexts activate
   on the first token of their document (an attention-sink feature: its
   contexts say nothing about a concept).

`describe_features` then gives each feature its two descriptions:
input-centric = its top `n_describe` contexts (the official describer read
the top 10), output-centric = its top `n_tokens` promoted (+) and suppressed
(−) tokens of the vocabulary projection (the describer read the top 25).
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True, eq=False)
class FeatureBank:
    """One method's features over a corpus.

    Attributes:
      method: name for reports ("snmf", "sae").
      codes: (n, K) nonnegative activations of the K features on `acts`' tokens.
      vectors: (K, dim) the features' vectors at `site`.
      site: "mlp_hidden" (SNMF Φ rows) or "mlp_out" (SAE decoder rows).
      acts: the corpus `Activations` the codes are on (texts and provenance).
      layer: block index.
    """

    method: str
    codes: np.ndarray
    vectors: np.ndarray
    site: str
    acts: object
    layer: int

    def __post_init__(self):
        if self.codes.ndim != 2 or self.vectors.ndim != 2:
            raise ValueError(f"FeatureBank {self.method!r}: codes and vectors must be 2-D; got "
                             f"{self.codes.shape} and {self.vectors.shape}")
        if self.codes.shape[1] != self.vectors.shape[0]:
            raise ValueError(f"FeatureBank {self.method!r}: {self.codes.shape[1]} code columns "
                             f"for {self.vectors.shape[0]} vectors")
        if self.site not in ("mlp_hidden", "mlp_out"):
            raise ValueError(f"FeatureBank.site must be 'mlp_hidden' or 'mlp_out'; got "
                             f"{self.site!r}")

    def __len__(self) -> int:
        return int(self.vectors.shape[0])


def snmf_bank(result, acts, *, layer: int) -> FeatureBank:
    """An SNMF result as a bank: codes over `acts` (the fit's tokens), Φ rows."""
    codes = np.asarray(result.codes, np.float32)
    if codes.shape[0] != acts.X.shape[0]:
        raise ValueError(f"snmf_bank: {codes.shape[0]} code rows for {acts.X.shape[0]} tokens; "
                         "pass the Activations the SNMF was fitted on")
    return FeatureBank("snmf", codes, np.asarray(result.features, np.float32), "mlp_hidden",
                       acts, int(layer))


def sae_bank(sae, acts, *, layer: int, batch: int = 4096) -> FeatureBank:
    """An SAE as a bank: its latents on `acts` (mlp_out rows), its decoder rows."""
    if acts.X.shape[1] != sae.config.d_in:
        raise ValueError(f"sae_bank: the SAE reads d_in={sae.config.d_in} but acts have width "
                         f"{acts.X.shape[1]} (export the corpus at mlp_out)")
    codes = np.concatenate([np.asarray(sae.encode(acts.X[s:s + batch]), np.float32)
                            for s in range(0, acts.X.shape[0], batch)])
    return FeatureBank("sae", np.maximum(codes, 0.0), sae.directions(), "mlp_out", acts,
                       int(layer))


@dataclasses.dataclass(frozen=True)
class FeatureDescription:
    """What one feature means, offline.

    Attributes:
      method: the bank's method; index: the feature.
      contexts: top-activating contexts (strongest first): the input-centric
        description is the first `n_describe` of them; DiffMean's activating
        texts are all of them.
      n_describe: how many contexts form the input-centric description.
      promoted, suppressed: top tokens of the vocabulary projection of +v̂ / −v̂
        (the output-centric description of +α / −α).
    """

    method: str
    index: int
    contexts: tuple[str, ...]
    n_describe: int
    promoted: tuple[str, ...]
    suppressed: tuple[str, ...]

    @property
    def input_description(self) -> list[str]:
        return list(self.contexts[:self.n_describe])

    def output_description(self, sign: int) -> list[str]:
        """The official output-centric scorer's pairing: +α is judged against the
        promoted tokens, −α against the suppressed ones."""
        return list(self.promoted if sign > 0 else self.suppressed)


def _texts(ctxs) -> list[str]:
    return [t for t in ("".join(c.tokens).strip() for c in ctxs) if t]


def sample_features(bank: FeatureBank, n: int, *, seed: int = 0, min_contexts: int = 10,
                    n_describe: int = 10, k_contexts: int = 25, window: int = 15
                    ) -> tuple[list[int], dict[int, str], dict[int, list]]:
    """A seeded sample of usable features (the skip rule is in the module docstring).

    Args:
      bank: the method's features.
      n: features wanted (fewer when fewer are usable).
      seed: the draw's seed (a permutation of all features, read in order).
      min_contexts: fewer distinct positive contexts than this: dead.
      n_describe: contexts in the input-centric description.
      k_contexts, window: top contexts kept per feature, tokens each side.

    Returns:
      (chosen feature indices in draw order, {skipped index: reason},
      {chosen index: its Contexts}).
    """
    from snmf_jax.interpret import top_contexts
    if n < 1:
        raise ValueError(f"n must be >= 1; got {n}")
    order = np.random.default_rng(seed).permutation(len(bank))
    norms = np.linalg.norm(bank.vectors, axis=1)
    chosen, skipped, ctx = [], {}, {}
    for f in order.tolist():
        if len(chosen) == n:
            break
        if not np.isfinite(norms[f]) or norms[f] == 0:
            skipped[f] = "degenerate: zero or non-finite vector"
            continue
        cs = [c for c in top_contexts(bank.codes, bank.acts, k=k_contexts, window=window,
                                      features=[f])[0] if c.value > 0]
        if len(_texts(cs)) < min_contexts:
            skipped[f] = f"dead: {len(cs)} positive contexts < {min_contexts}"
            continue
        first = sum(c.center == 0 for c in cs[:n_describe])
        if first > n_describe / 2:
            skipped[f] = f"position-only: {first} of {n_describe} top contexts on a first token"
            continue
        chosen.append(f)
        ctx[f] = cs
    return chosen, skipped, ctx


def describe_features(model, bank: FeatureBank, contexts: dict, *, n_describe: int = 10,
                      n_tokens: int = 25) -> list[FeatureDescription]:
    """Descriptions of the features in `contexts` (as `sample_features` returns them).

    Args:
      model: the Model (its unembedding and tokenizer).
      bank: the features' bank.
      contexts: {feature index: its Contexts}.
      n_describe: contexts in the input-centric description.
      n_tokens: tokens per sign in the output-centric description.

    Returns:
      One FeatureDescription per feature, in `contexts`' order.
    """
    from snmf_jax.interpret import vocab_projection
    idx = list(contexts)
    site = "mlp_hidden" if bank.site == "mlp_hidden" else "resid"
    proj = vocab_projection(model, bank.vectors[idx], layer=bank.layer, site=site, k=n_tokens)
    def decode(t: int) -> str:
        return model.tokenizer.decode([t])

    out = []
    for i, f in enumerate(idx):
        out.append(FeatureDescription(
            bank.method, int(f), tuple(_texts(contexts[f])), n_describe,
            tuple(proj.tokens(decode, i, "+")), tuple(proj.tokens(decode, i, "-"))))
    return out


def random_contexts(acts, n: int, *, window: int = 15, seed: int = 0) -> list[str]:
    """n contexts of random corpus tokens (± `window` tokens inside the document):
    the neutral texts of the per-feature DiffMean."""
    rng = np.random.default_rng(seed)
    doc = np.asarray(acts.doc_ids)
    rows = rng.choice(len(doc), size=min(n, len(doc)), replace=False)
    out = []
    for i in rows.tolist():
        lo, hi = i, i
        while lo > 0 and i - lo < window and doc[lo - 1] == doc[i]:
            lo -= 1
        while hi + 1 < len(doc) and hi - i < window and doc[hi + 1] == doc[i]:
            hi += 1
        text = acts.texts[int(doc[i])]
        out.append(text[int(acts.offsets[lo, 0]):int(acts.offsets[hi, 1])].strip())
    return [t for t in out if t]
