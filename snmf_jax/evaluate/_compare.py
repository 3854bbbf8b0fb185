"""SNMF against its baselines on one model, layer and labelled dataset.

Pipeline (`compare_methods`):

1. Activations of the dataset at `mlp_hidden` (SNMF's site) and `mlp_out`
   (the baselines' site), split into training and held-out sentences
   (whole sentences, stratified by concept).
2. Directions, all chosen on the training split:
   - "diffmean": per concept, the mean over its tokens minus the mean over the
     other concepts' tokens (mlp_out);
   - "snmf": an SNMF of rank K fitted on the training activations at
     mlp_hidden; each concept gets the feature whose max-over-tokens cosine
     separates its training sentences best (training ROC-AUC, ties by S_CD);
   - "sae": a TopK SAE trained on mlp_out activations (the training split plus
     any extra corpus texts); each concept gets a decoder row chosen the
     same way as SNMF's.
3. Concept detection on the held-out split (S_CD, ROC-AUC).
4. Steering (`SteeringConfig`): each concept's direction of each method,
   judged for the concept (SNMF at mlp_hidden — Gemma 2/3: through the MLP
   output map — the baselines at mlp_out), and unsteered continuations judged
   against every concept (`info["unsteered"]`, the level to beat).
5. Optionally the unsupervised variant: SNMF features steered and judged
   against their own top-activating contexts.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Sequence

import numpy as np

from snmf_jax.evaluate import _model_access as access
from snmf_jax.evaluate._detection import Detection, concept_detection, split_documents
from snmf_jax.evaluate._steering import (OfflineJudge, ScoredRun, SteeringConfig, SteeringSpec,
                                         feature_context_examples, score_steering,
                                         steering_generations, unsteered_reference)

METHODS = ("snmf", "sae", "diffmean")


@dataclasses.dataclass(frozen=True)
class CompareConfig:
    """Settings of `compare_methods`.

    Attributes:
      methods: any of "snmf", "sae", "diffmean".
      rank: SNMF rank K (None: 2 x the number of concepts).
      sparsity, max_iter: SNMF fit options.
      sae_width: SAE latents (None: 8 x d_model); sae_k: TopK's k.
      sae_tokens: SAE training token-steps; sae_batch: tokens per step.
      train_fraction: share of each concept's sentences used to pick directions.
      unsupervised: SNMF features steered against their own contexts (0: off).
      seed: split, fit and training seed.
    """

    methods: tuple[str, ...] = METHODS
    rank: int | None = None
    sparsity: float = 0.05
    max_iter: int = 200
    sae_width: int | None = None
    sae_k: int = 32
    sae_tokens: int = 300_000
    sae_batch: int = 1024
    train_fraction: float = 0.5
    unsupervised: int = 0
    seed: int = 0

    def __post_init__(self):
        bad = [m for m in self.methods if m not in METHODS]
        if not self.methods or bad:
            raise ValueError(f"methods must be a non-empty subset of {METHODS}; got "
                             f"{list(self.methods)}")
        if self.rank is not None and self.rank < 1:
            raise ValueError(f"rank must be >= 1; got {self.rank}")
        if not 0 < self.train_fraction < 1:
            raise ValueError(f"train_fraction must be in (0, 1); got {self.train_fraction}")


@dataclasses.dataclass(frozen=True, eq=False)
class Comparison:
    """What `compare_methods` found.

    Attributes:
      detections: held-out concept detection per (concept, method).
      scored: judged steering runs (empty without a steering config).
      info: provenance: token counts, SNMF/SAE settings and quality, timings.
    """

    detections: list[Detection]
    scored: list[ScoredRun]
    info: dict


def offline_judge(model, data, config: SteeringConfig, *, n_unsteered: int = 24
                  ) -> OfflineJudge:
    """`evaluate.offline_judge(model)` with the dataset's concepts registered by
    name (each judged against its example sentences) and fluency calibrated on
    the model's unsteered continuations sampled as `config` says plus a sample
    of the dataset's sentences."""
    from snmf_jax.evaluate._judge import offline_judge as default_judge
    examples: dict = {}
    for t, l in zip(data.texts, data.labels):
        examples.setdefault(data.label_names[l], []).append(t)
    return default_judge(model, concepts=examples,
                         natural=list(data.texts)[:: max(1, len(data.texts) // 48)],
                         n_unsteered=n_unsteered, prompt=config.prompt,
                         max_new_tokens=config.max_new_tokens, seed=config.seed,
                         **config.sampling)


def _train_sae(model, tr, corpus, *, layer: int, config: CompareConfig):
    """A TopK SAE on the training split's mlp_out rows plus the extra corpus."""
    from snmf_jax.activations import from_texts
    from snmf_jax.baselines import SAEConfig, TrainConfig, train_sae
    X = [tr.X]
    if isinstance(corpus, np.ndarray):
        X.append(np.asarray(corpus, np.float32))
    elif len(corpus):
        X.append(access.model_site_activations(model, from_texts(list(corpus)), layer=layer,
                                               site="mlp_out").X)
    X = np.concatenate(X)
    width = config.sae_width or 8 * model.config.d_model
    cfg = SAEConfig(d_in=X.shape[1], d_sae=width, architecture="topk", k=config.sae_k,
                    hook_name=f"L{layer}.mlp_out", model_name=model.name or "")
    sae, tinfo = train_sae(X, cfg, TrainConfig(total_tokens=config.sae_tokens,
                                               batch_size=config.sae_batch,
                                               dead_window=100, seed=config.seed))
    return sae, {"width": width, "architecture": "topk", "k": config.sae_k,
                 "train_tokens": int(X.shape[0]), "corpus_tokens": int(X.shape[0] - tr.n),
                 "tokens_seen": int(tinfo.n_tokens)}


def _bank_index(dets: Sequence[Detection], concepts: Sequence[str]) -> list[int]:
    by = {d.concept: d.index for d in dets}
    return [by[c] for c in concepts]


def compare_methods(model, data, *, layer: int, config: CompareConfig = CompareConfig(),
                    steering: SteeringConfig | None = None, judge=None,
                    corpus: Sequence[str] | np.ndarray = (), sae=None, snmf=None,
                    progress: bool = False) -> Comparison:
    """Concept detection and (optionally) steering of SNMF, SAE and DiffMean.

    Args:
      model: a Model.
      data: a labelled `TextDataset` (every concept needs >= 2 sentences).
      layer: block index.
      config: methods and their settings.
      steering: the steering protocol; None skips steering.
      judge: a steering judge (default: `offline_judge(model, data, steering)`).
      corpus: extra unlabelled texts the SAE also trains on, or their (n, d_model)
        mlp_out activations at `layer` (to share one export between datasets).
      sae: a trained `SparseAutoencoder` on this layer's mlp_out (e.g. one read by
        `baselines.load_sae`, or trained once on a large corpus and shared
        between datasets) used instead of training one; `corpus` is then unused.
      snmf: a fitted SNMF bank for this layer's mlp_hidden (an `SNMFResult`, or
        its (K, d_hidden) features), e.g. fitted on the corpus the SAE saw, used
        instead of fitting one on the training split; each concept is matched
        to one of its features the same way. `info["snmf"]["distinct"]` and
        `info["sae"]["distinct"]` count the distinct features matched.
      progress: progress bars.

    Returns:
      Comparison.
    """
    if data.labels is None:
        raise ValueError("compare_methods: data must be labelled (concept sentences)")
    if not 0 <= layer < model.config.n_layers:
        raise ValueError(f"layer must be in [0, {model.config.n_layers}); got {layer}")
    given_snmf = None
    if snmf is not None:
        given_snmf = np.asarray(getattr(snmf, "features", snmf), np.float32)
        if given_snmf.ndim != 2 or given_snmf.shape[1] != model.config.d_mlp:
            raise ValueError(f"snmf: expected (K, {model.config.d_mlp}) mlp_hidden features; "
                             f"got shape {given_snmf.shape}")
        if not np.isfinite(given_snmf).all():
            raise ValueError("snmf: the given features hold non-finite values")
    t0 = time.time()
    concepts = tuple(data.label_names)
    info: dict = {"layer": layer, "concepts": list(concepts), "n_sentences": len(data.texts),
                  "config": dataclasses.asdict(config)}
    acts = {site: access.model_site_activations(model, data, layer=layer, site=site)
            for site in ("mlp_hidden", "mlp_out")}
    split = {site: split_documents(a, config.train_fraction, config.seed)
             for site, a in acts.items()}
    info["train_tokens"] = int(split["mlp_out"][0].n)
    info["test_tokens"] = int(split["mlp_out"][1].n)
    dets: list[Detection] = []
    specs: list[SteeringSpec] = []
    snmf = None
    if "diffmean" in config.methods:
        tr, te = split["mlp_out"]
        d = concept_detection(tr, te, "diffmean")
        dets += d
        from snmf_jax.baselines import diffmean_directions
        _, D = diffmean_directions(tr, concepts)
        specs.append(SteeringSpec("diffmean", access.raw_directions(
            D, layer=layer, site="mlp_out", config=model.config), concepts))
    if "snmf" in config.methods:
        from snmf_jax.factorize import encode, fit
        tr, te = split["mlp_hidden"]
        if given_snmf is None:
            rank = config.rank or 2 * len(concepts)
            snmf = fit(tr.X, rank, sparsity=config.sparsity, max_iter=config.max_iter,
                       seed=config.seed, progress=progress)
            features = np.asarray(snmf.features)
            snmf_info = {"rank": rank, "sparsity": config.sparsity,
                         "max_iter": config.max_iter, "fit_tokens": int(tr.n)}
        else:
            features = given_snmf
            snmf_info = {"rank": int(features.shape[0]), "given": True}
        d = concept_detection(tr, te, features, method="snmf")
        dets += d
        idx = _bank_index(d, concepts)
        info["snmf"] = {**snmf_info, "matched_features": dict(zip(concepts, idx)),
                        "distinct": len(set(idx))}
        specs.append(SteeringSpec("snmf", access.snmf_directions(
            model, features, layer=layer, indices=idx), concepts))
    if "sae" in config.methods:
        from snmf_jax.baselines import sae_metrics
        tr, te = split["mlp_out"]
        if sae is None:
            sae, sae_info = _train_sae(model, tr, corpus, layer=layer, config=config)
        else:
            if sae.config.d_in != tr.X.shape[1]:
                raise ValueError(f"sae: d_in {sae.config.d_in} does not match the model's "
                                 f"mlp_out width {tr.X.shape[1]}")
            sae_info = {"width": sae.config.d_sae, "architecture": sae.config.architecture,
                        "k": sae.config.k, "given": True}
        bank = sae.directions()
        d = concept_detection(tr, te, bank, method="sae")
        dets += d
        idx = _bank_index(d, concepts)
        info["sae"] = {**sae_info, "held_out": sae_metrics(sae, te)._asdict(),
                       "matched_latents": dict(zip(concepts, idx)), "distinct": len(set(idx))}
        specs.append(SteeringSpec("sae", access.raw_directions(
            bank[idx], layer=layer, site="mlp_out", ids=idx, config=model.config), concepts))
    info["detect_seconds"] = time.time() - t0
    scored: list[ScoredRun] = []
    if steering is not None:
        t1 = time.time()
        judge = judge if judge is not None else offline_judge(model, data, steering)
        info["unsteered"] = unsteered_reference(model, concepts, judge, steering)
        order = {m: i for i, m in enumerate(config.methods)}
        for spec in sorted(specs, key=lambda s: order[s.method]):
            scored.append(score_steering(steering_generations(model, spec, steering,
                                                              progress=progress), judge))
        if config.unsupervised and "snmf" in config.methods:
            tr = split["mlp_hidden"][0]
            k = min(config.unsupervised, int(features.shape[0]))
            # a given bank has no codes for this split: solve them for its features
            codes = np.asarray(snmf.codes) if given_snmf is None else \
                np.asarray(encode(tr.X, features))
            ex = feature_context_examples(codes, tr, range(k))
            feats = [int(n.split()[-1]) for n in ex]
            if len(ex) >= 2:
                ujudge = judge.with_concepts(ex) if isinstance(judge, OfflineJudge) else judge
                spec = SteeringSpec("snmf-unsupervised", access.snmf_directions(
                    model, features, layer=layer, indices=feats), tuple(ex))
                scored.append(score_steering(steering_generations(model, spec, steering), ujudge))
                info["unsteered_unsupervised"] = unsteered_reference(model, tuple(ex), ujudge,
                                                                     steering)
                info["unsupervised_features"] = feats
        info["steer_seconds"] = time.time() - t1
    return Comparison(dets, scored, info)
