"""The per-feature steering protocol (the paper's causal evaluation, offline).

Every sampled feature of every method is steered and judged against its own
description; nothing is matched to labelled concepts:

1. Banks (`FeatureBank`): SNMF (codes and Φ rows at mlp_hidden) and an SAE
   (its latents and decoder rows at mlp_out) on the same corpus tokens.
2. A seeded sample of N usable features per bank, each with an input-centric
   description (its top-activating contexts) and an output-centric one per
   sign (promoted tokens for +α, suppressed tokens for −α) — `_banks`.
3. DiffMean per sampled SNMF feature, as the official
   `experiments/baselines/diffmean.py` builds it (every token at mlp_out,
   token-weighted means, unit difference), from the feature's own top
   contexts against random corpus contexts; steered at mlp_out and judged
   against the SNMF feature's descriptions: a paired comparison.
4. Steering: α calibrated to each KL target on "I think that" (+α searched,
   −α at the same magnitude, as the official code does), the unit direction
   added at every position, `n_samples` continuations per (sign, target).
5. Judging (0–2, the official scale): each text against its feature's
   input-centric description (both signs, as the official input scorer) and
   against the sign's output-centric description (as the official output
   scorer); fluency; per text the harmonic mean, 0 if either is 0. Unsteered
   continuations are judged against every sampled feature's descriptions:
   the level steering has to beat.

Statistics (bootstrap over features) are in `_per_feature_stats`.

    banks = [snmf_bank(result, acts_hidden, layer=L), sae_bank(sae, acts_out, layer=L)]
    run = per_feature_generations(model, banks, PerFeatureConfig(), neutral=acts_out)
    scores = score_per_feature(run, offline_judge(model))
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from snmf_jax.evaluate import _model_access as access
from snmf_jax.evaluate._banks import (FeatureBank, FeatureDescription, describe_features,
                                      random_contexts, sample_features)
from snmf_jax.evaluate._offline_judge import harmonic_mean
from snmf_jax.evaluate._steering import (PAPER_TARGETS, SteeringConfig, SteeringRun,
                                         SteeringSpec, steering_generations)

PER_FEATURE_TARGETS = PAPER_TARGETS + (1.0, 2.0, 4.0)
PER_FEATURE_STEERING = SteeringConfig(targets=PER_FEATURE_TARGETS, minus_alpha="reuse")
# The SNMF fit of the per-feature protocol: rank and keep-fraction of the
# paper, the official scripts' budget and patience.
PER_FEATURE_FIT = {"rank": 100, "sparsity": 0.01, "max_iter": 2000, "patience": 1500}


@dataclasses.dataclass(frozen=True)
class PerFeatureConfig:
    """Settings of the per-feature protocol (defaults: the paper's where it has one).

    Attributes:
      n_features: features sampled per bank (the official runs steer every
        feature; 40 keeps a CPU run bounded).
      seed: the sample's seed.
      min_contexts, n_describe, n_tokens, k_contexts, window: see `_banks`.
      diffmean: also steer a DiffMean direction per sampled SNMF feature.
      n_unsteered: unsteered continuations (the reference level).
      steering: the steering protocol (targets: the paper's seven plus 1, 2
        and 4 nats; −α at +α's magnitude; top-k 30, temperature 1).
    """

    n_features: int = 40
    seed: int = 0
    min_contexts: int = 10
    n_describe: int = 10
    n_tokens: int = 25
    k_contexts: int = 25
    window: int = 15
    diffmean: bool = True
    n_unsteered: int = 16
    steering: SteeringConfig = PER_FEATURE_STEERING

    def __post_init__(self):
        for name in ("n_features", "min_contexts", "n_describe", "n_tokens", "k_contexts",
                     "n_unsteered"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1; got {getattr(self, name)}")
        if self.k_contexts < self.min_contexts:
            raise ValueError(f"k_contexts ({self.k_contexts}) must be >= min_contexts "
                             f"({self.min_contexts})")


@dataclasses.dataclass(frozen=True, eq=False)
class MethodRun:
    """One method's steered features.

    Attributes:
      method: "snmf", "sae", "diffmean".
      descriptions: (F,) what each steered direction is judged against
        (DiffMean: the SNMF feature it was built from).
      run: the generations, [sign][feature][target][sample].
      skipped: {feature: reason} for features the sample passed over.
    """

    method: str
    descriptions: tuple[FeatureDescription, ...]
    run: SteeringRun
    skipped: dict


@dataclasses.dataclass(frozen=True, eq=False)
class PerFeatureRun:
    """Generations of every method plus the unsteered reference texts."""

    methods: tuple[MethodRun, ...]
    unsteered: tuple[str, ...]
    config: PerFeatureConfig
    layer: int


def _directions(model, bank: FeatureBank, idx: Sequence[int]):
    if bank.site == "mlp_hidden":  # SNMF: Gemma 2/3 through the MLP output map
        return access.snmf_directions(model, bank.vectors, layer=bank.layer, indices=idx)
    return access.raw_directions(bank.vectors[list(idx)], layer=bank.layer, site=bank.site,
                                 ids=idx, config=model.config)


def per_feature_diffmean(model, descriptions: Sequence[FeatureDescription], neutral, *,
                         layer: int, window: int = 15, seed: int = 0) -> np.ndarray:
    """DiffMean directions at mlp_out, one per described feature.

    Positives: the feature's top-activating contexts (in place of the official
    LLM-written activating sentences); negatives: as many random contexts of
    the corpus `neutral` (in place of its LLM-written neutral sentences),
    drawn afresh for each feature.

    Returns:
      (F, d_model) unit rows.
    """
    from snmf_jax.baselines import diffmean_texts
    pos = [list(d.contexts) for d in descriptions]
    neg = [random_contexts(neutral, len(p), window=window, seed=seed + 1 + i)
           for i, p in enumerate(pos)]
    return diffmean_texts(model, pos, neg, layer=layer, site="mlp_out")


def per_feature_generations(model, banks: Sequence[FeatureBank],
                            config: PerFeatureConfig = PerFeatureConfig(), *, neutral=None,
                            progress: bool = False) -> PerFeatureRun:
    """Samples, describes and steers each bank's features (and DiffMean per SNMF one).

    Args:
      model: a Model.
      banks: one FeatureBank per method (at most one "snmf").
      config: the protocol.
      neutral: `Activations` of the corpus for DiffMean's random contexts
        (default: the SNMF bank's corpus).
      progress: calibration progress bars.

    Returns:
      PerFeatureRun.
    """
    if not banks:
        raise ValueError("per_feature_generations: need at least one bank")
    names = [b.method for b in banks]
    if len(set(names)) != len(names):
        raise ValueError(f"per_feature_generations: bank methods must differ; got {names}")
    layers = {b.layer for b in banks}
    if len(layers) != 1:
        raise ValueError(f"per_feature_generations: banks come from layers {sorted(layers)}")
    layer = layers.pop()
    steer = config.steering
    out = []
    for bank in banks:
        idx, skipped, ctx = sample_features(
            bank, config.n_features, seed=config.seed, min_contexts=config.min_contexts,
            n_describe=config.n_describe, k_contexts=config.k_contexts, window=config.window)
        if not idx:
            raise ValueError(f"per_feature_generations: no usable {bank.method} feature "
                             f"({len(skipped)} skipped)")
        descs = tuple(describe_features(model, bank, ctx, n_describe=config.n_describe,
                                        n_tokens=config.n_tokens))
        spec = SteeringSpec(bank.method, _directions(model, bank, idx),
                            tuple(f"{bank.method} {f}" for f in idx))
        out.append(MethodRun(bank.method, descs, steering_generations(model, spec, steer,
                                                                      progress=progress),
                             skipped))
        if bank.method == "snmf" and config.diffmean:
            D = per_feature_diffmean(model, descs, bank.acts if neutral is None else neutral,
                                     layer=layer, window=config.window, seed=config.seed)
            spec = SteeringSpec("diffmean", access.raw_directions(
                D, layer=layer, site="mlp_out", ids=idx, config=model.config), spec.concepts)
            out.append(MethodRun("diffmean", descs, steering_generations(
                model, spec, steer, progress=progress), {}))
    unsteered = access.generate_texts(model, steer.prompt, n=config.n_unsteered,
                                      max_new_tokens=steer.max_new_tokens,
                                      seed=steer.seed + 7919, **steer.sampling)
    return PerFeatureRun(tuple(out), tuple(unsteered), config, layer)


@dataclasses.dataclass(frozen=True, eq=False)
class MethodScores:
    """One method's judged texts, all on 0–2.

    Attributes:
      method: as in the run; features: (F,) feature indices.
      concept_in, concept_out, fluency: (S, F, T, n) per steered text; "in" is
        scored against the input-centric description, "out" against the
        sign's output-centric one.
      unsteered_in: (F, m), unsteered_out: (S, F, m), unsteered_fluency: (m,)
        the unsteered texts against the same descriptions.
    """

    method: str
    features: np.ndarray
    concept_in: np.ndarray
    concept_out: np.ndarray
    fluency: np.ndarray
    unsteered_in: np.ndarray
    unsteered_out: np.ndarray
    unsteered_fluency: np.ndarray

    def harmonic(self, kind: str) -> np.ndarray:
        """(S, F, T, n) per-text harmonic mean with the `kind` ("in"/"out") concept score."""
        return harmonic_mean(getattr(self, f"concept_{kind}"), self.fluency)


def _scores(name: str, x, n: int) -> np.ndarray:
    x = np.asarray(x, np.float64).reshape(-1)
    if x.shape != (n,) or not np.all(np.isfinite(x)) or x.min() < 0 or x.max() > 2:
        raise ValueError(f"judge {name} scores must be {n} finite values on 0–2; got shape "
                         f"{x.shape}, range [{np.nanmin(x) if x.size else 'nan'}, "
                         f"{np.nanmax(x) if x.size else 'nan'}]")
    return x


def score_per_feature(run: PerFeatureRun, judge) -> list[MethodScores]:
    """Judges every text of a run (scores 0–2; the judge contract: `concept(texts,
    description)` with a description a str or a list of example texts or tokens,
    and `fluency(texts)`).

    Returns:
      One MethodScores per method, in the run's order.
    """
    ref = list(run.unsteered)
    m = len(ref)
    ref_flu = _scores("fluency", judge.fluency(ref), m)
    out = []
    for mr in run.methods:
        r = mr.run
        signs = list(r.config.signs)
        n_s, n_f, n_t = r.alphas.shape
        n = r.config.n_samples
        flat = [t for s in r.texts for f in s for tt in f for t in tt]
        flu = _scores("fluency", judge.fluency(flat), len(flat)).reshape(n_s, n_f, n_t, n)
        c_in, c_out = np.zeros_like(flu), np.zeros_like(flu)
        u_in, u_out = np.zeros((n_f, m)), np.zeros((n_s, n_f, m))
        for f, d in enumerate(mr.descriptions):
            texts = [t for s in range(n_s) for tt in r.texts[s][f] for t in tt] + ref
            sc = _scores("concept", judge.concept(texts, d.input_description), len(texts))
            c_in[:, f] = sc[:-m].reshape(n_s, n_t, n)
            u_in[f] = sc[-m:]
            for si, sign in enumerate(signs):
                texts = [t for tt in r.texts[si][f] for t in tt] + ref
                sc = _scores("concept", judge.concept(texts, d.output_description(sign)),
                             len(texts))
                c_out[si, f] = sc[:-m].reshape(n_t, n)
                u_out[si, f] = sc[-m:]
        feats = np.array([d.index for d in mr.descriptions])
        out.append(MethodScores(mr.method, feats, c_in, c_out, flu, u_in, u_out, ref_flu))
    return out
