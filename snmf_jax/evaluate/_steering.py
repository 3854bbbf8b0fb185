"""Causal steering evaluation, the paper's protocol.

For each method (SNMF, SAE, DiffMean) and concept, one unit direction at the
method's site. Per sign (+α along it, −α against it) α is calibrated to each
KL target on the prompt "I think that" (KL of the next-token distribution);
the direction is then added at every position while sampling continuations.
Each continuation is judged for concept presence and fluency (both 0–2);
per text the harmonic mean (0 when either is 0); per (method, sign, target)
the mean ± standard error over concepts and samples. Targets that no α
reaches are kept (steered at the largest KL found) and counted as
unreachable, not dropped.

    spec = SteeringSpec("snmf", dirs, concepts=("cooking", ...))
    run = steering_generations(model, spec, SteeringConfig())
    scored = score_steering(run, offline_judge(model))
    rows = steering_summary([scored])
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Protocol, Sequence

import numpy as np

from snmf_jax.evaluate import _model_access as access
from snmf_jax.evaluate import _judge
from snmf_jax.evaluate._offline_judge import harmonic_mean
from snmf_jax.steer import DEFAULT_PROMPT
# Reach-in, on purpose: the paper's seven KL targets are defined once, as calibrate's
# default in steer (private there); evaluate is where they are public, as PAPER_TARGETS.
from snmf_jax.steer._calibrate import DEFAULT_TARGETS

PAPER_TARGETS = DEFAULT_TARGETS  # the paper's KL targets, defined in steer


@dataclasses.dataclass(frozen=True)
class SteeringConfig:
    """The steering protocol's settings (defaults: the paper's).

    Attributes:
      prompt: calibration and generation prompt.
      targets: KL targets (nats).
      signs: +1 and/or -1; each sign is calibrated separately.
      n_samples: continuations per (direction, sign, target).
      max_new_tokens, seed: sampling length and seed.
      sampler: "top-k" (default: the official runs' effective sampler, top-k
        only at `temperature`; TransformerLens never applied the top-p the
        official call also passed) or "top-k-and-top-p" (both filters;
        near-greedy at top_p 0.3).
      top_k, top_p, temperature: the filters (top_p only with
        "top-k-and-top-p").
      minus_alpha: "calibrate" (search −α for each target on its own) or
        "reuse" (the official code: steer −α at the magnitude found for +α).
      batch_rows: generated rows (variants x samples) per generate call; a
        method's variants run in ceil(variants x samples / batch_rows) calls.
        256 is the fastest on a 2-core CPU (SmolLM2-135M: 364 tokens/s at 256
        rows, 127 at 512, where the decode step falls off a cache cliff); an
        accelerator wants more.
    """

    prompt: str = DEFAULT_PROMPT
    targets: tuple[float, ...] = PAPER_TARGETS
    signs: tuple[int, ...] = (1, -1)
    n_samples: int = 8
    max_new_tokens: int = 50
    sampler: str = "top-k"
    top_k: int = access.OFFICIAL_CALL["top_k"]
    top_p: float = access.OFFICIAL_CALL["top_p"]
    temperature: float = access.OFFICIAL_CALL["temperature"]
    minus_alpha: str = "calibrate"
    seed: int = 0
    batch_rows: int = 256

    def __post_init__(self):
        if not self.targets or any(not np.isfinite(t) or t <= 0 for t in self.targets):
            raise ValueError(f"targets must be positive KL values; got {self.targets}")
        if not self.signs or any(s not in (1, -1) for s in self.signs):
            raise ValueError(f"signs must be +1 / -1; got {self.signs}")
        for name in ("n_samples", "max_new_tokens", "batch_rows"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1; got {getattr(self, name)}")
        if self.minus_alpha not in ("calibrate", "reuse"):
            raise ValueError(f"minus_alpha must be 'calibrate' or 'reuse'; got "
                             f"{self.minus_alpha!r}")
        self.sampling  # validates sampler, top_k, top_p, temperature

    @property
    def sampling(self) -> dict:
        """{"temperature", "top_k", "top_p"} as passed to `generate`."""
        from snmf_jax.steer import sampler_settings
        return sampler_settings(self.sampler, top_k=self.top_k, top_p=self.top_p,
                                temperature=self.temperature)


@dataclasses.dataclass(frozen=True, eq=False)
class SteeringSpec:
    """One method's directions, one per concept.

    Attributes:
      method: name for reports.
      directions: F steering `Directions` (one site).
      concepts: (F,) the concept each row should steer toward.
    """

    method: str
    directions: object
    concepts: tuple[str, ...]

    def __post_init__(self):
        if len(self.concepts) != len(self.directions):
            raise ValueError(f"SteeringSpec {self.method!r}: {len(self.concepts)} concepts for "
                             f"{len(self.directions)} directions")


@dataclasses.dataclass(frozen=True, eq=False)
class SteeringRun:
    """Generations of one method, indexed [sign, direction, target, sample].

    Attributes:
      method, concepts: as in the spec.
      config: the protocol.
      alphas, kl, reachable: (S, F, T) calibration per sign.
      texts: nested lists `[S][F][T][n_samples]`.
      layer, site: where the directions were added.
    """

    method: str
    concepts: tuple[str, ...]
    config: SteeringConfig
    alphas: np.ndarray
    kl: np.ndarray
    reachable: np.ndarray
    texts: list
    layer: int
    site: str


class Judge(Protocol):
    """Scores on the official 0–2 scale: concept presence of texts for one
    description (a string, or example texts / tokens), and fluency."""

    def concept(self, texts: Sequence[str], concept) -> np.ndarray: ...

    def fluency(self, texts: Sequence[str]) -> np.ndarray: ...


# The offline judge is defined once, in _judge.py (the LLM one in _llm_judge.py).
OfflineJudge = _judge.OfflineJudge


def steering_generations(model, spec: SteeringSpec, config: SteeringConfig = SteeringConfig(),
                         *, progress: bool = False) -> SteeringRun:
    """Calibrates every (sign, direction, target) and samples its continuations.

    One batched calibration search for all signs, directions and targets; one
    generate call per `config.batch_rows` rows (whole variants, at least one).

    Args:
      model: a Model.
      spec: the method's directions and their concepts.
      config: the protocol.
      progress: show the calibration's progress bar.

    Returns:
      SteeringRun.
    """
    dirs = spec.directions
    reuse = config.minus_alpha == "reuse" and -1 in config.signs
    signs = (1,) if reuse else config.signs
    cals = access.calibrate_signs(model, dirs, signs=signs, targets=config.targets,
                                  prompt=config.prompt, progress=progress)
    if reuse:  # −α at +α's magnitude (the official code); its KL is not measured
        c = cals[0]
        cals = [c if s == 1 else dataclasses.replace(
            c, sign=-1, kl=np.full_like(c.kl, np.nan)) for s in config.signs]
    alphas = np.stack([c.alphas for c in cals])  # (S, F, T)
    kl = np.stack([c.kl for c in cals])
    reachable = np.stack([c.reachable for c in cals])
    n_s, n_f, n_t = alphas.shape
    signs = np.asarray(config.signs, np.float32)[:, None, None]
    scales = (signs * alphas).reshape(-1)  # (S*F*T,) variant order: sign, direction, target
    rows = np.tile(np.repeat(np.arange(n_f), n_t), n_s)  # (S*F*T,) direction of each variant
    texts: list[list[str]] = []
    per_call = max(1, config.batch_rows // config.n_samples)
    for s in range(0, len(rows), per_call):
        sub = rows[s:s + per_call]
        texts += access.generate_variants(
            model, config.prompt, access.select_directions(dirs, sub),
            scales[s:s + per_call], n_samples=config.n_samples,
            max_new_tokens=config.max_new_tokens, seed=config.seed + s, **config.sampling)
    it = iter(texts)
    nested = [[[next(it) for _ in range(n_t)] for _ in range(n_f)] for _ in range(n_s)]
    return SteeringRun(spec.method, tuple(spec.concepts), config, alphas, kl, reachable,
                       nested, dirs.layer, dirs.site)


def unsteered_reference(model, concepts: Sequence[str], judge: Judge,
                        config: SteeringConfig = SteeringConfig(), *, n: int = 16) -> dict:
    """The judge's scores of unsteered continuations against every concept: the
    level (KL 0) a steering method has to beat.

    Args:
      model: a Model.
      concepts: the concepts the methods steer toward.
      judge: the steering judge.
      config: the prompt and sampling (seeded apart from the steered runs').
      n: continuations, each scored against every concept.

    Returns:
      {"n_texts", "harmonic", "harmonic_se", "concept", "concept_se", "fluency",
      "fluency_se"}, means over (concept, text) pairs.
    """
    texts = access.generate_texts(model, config.prompt, n=n, max_new_tokens=config.max_new_tokens,
                                  seed=config.seed + 7919, **config.sampling)
    flu = np.asarray(judge.fluency(texts), np.float64)  # (n,)
    con = np.stack([np.asarray(judge.concept(texts, c), np.float64) for c in concepts])  # (C, n)
    out: dict = {"n_texts": n}
    for name, a in (("harmonic", harmonic_mean(con, flu[None])), ("concept", con),
                    ("fluency", np.broadcast_to(flu, con.shape))):
        out[name], out[name + "_se"] = _mean_se(a)
    return out


@dataclasses.dataclass(frozen=True, eq=False)
class ScoredRun:
    """A run's per-text scores, each (S, F, T, n_samples)."""

    run: SteeringRun
    concept: np.ndarray
    fluency: np.ndarray
    harmonic: np.ndarray


def score_steering(run: SteeringRun, judge: Judge) -> ScoredRun:
    """Judges every continuation of a run (one concept call per direction)."""
    n_s, n_f, n_t = run.alphas.shape
    n = run.config.n_samples
    flat = [t for s in run.texts for f in s for tt in f for t in tt]
    flu = np.asarray(judge.fluency(flat), np.float64).reshape(n_s, n_f, n_t, n)
    con = np.zeros_like(flu)
    for f, c in enumerate(run.concepts):
        texts = [t for s in range(n_s) for tt in run.texts[s][f] for t in tt]
        con[:, f] = np.asarray(judge.concept(texts, c), np.float64).reshape(n_s, n_t, n)
    for name, a in (("concept", con), ("fluency", flu)):
        if not np.all(np.isfinite(a)) or a.min() < 0 or a.max() > 2:
            raise ValueError(f"judge {name} scores must be finite and in [0, 2]")
    return ScoredRun(run, con, flu, harmonic_mean(con, flu))


def _mean_se(x: np.ndarray) -> tuple[float, float]:
    x = np.asarray(x, np.float64).ravel()
    se = float(x.std(ddof=1) / np.sqrt(x.size)) if x.size > 1 else float("nan")
    return float(x.mean()), se


def steering_summary(scored: Sequence[ScoredRun], *, label: str = "") -> list[dict]:
    """Per (method, sign, target): mean ± SE of concept, fluency and harmonic mean.

    The mean runs over directions (concepts) and samples; `unreachable`
    counts directions whose α never reached the target (their texts are
    kept, steered at the largest KL found); `kl` is the mean KL achieved.
    Sign 0 rows pool both signs' texts.
    """
    out = []
    for sr in scored:
        r = sr.run
        for si, sign in enumerate(list(r.config.signs) + [0]):
            pick = slice(None) if sign == 0 else slice(si, si + 1)
            if sign == 0 and len(r.config.signs) == 1:
                continue
            for ti, tgt in enumerate(r.config.targets):
                row = {"label": label, "method": r.method, "sign": sign, "target": tgt,
                       "layer": r.layer, "site": r.site,
                       "n_texts": int(sr.harmonic[pick, :, ti].size),
                       "unreachable": int((~r.reachable[pick, :, ti]).sum()),
                       "n_searches": int(r.reachable[pick, :, ti].size),
                       "kl": float(np.nanmean(r.kl[pick, :, ti]))
                       if np.isfinite(r.kl[pick, :, ti]).any() else float("nan")}
                for name in ("harmonic", "concept", "fluency"):
                    row[name], row[name + "_se"] = _mean_se(getattr(sr, name)[pick, :, ti])
                out.append(row)
    return out


def summary_markdown(rows: Sequence[dict]) -> str:
    """A markdown table of `steering_summary` rows."""
    lines = ["| label | method | sign | KL target | harmonic | concept | fluency | KL reached "
             "| unreachable |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        sign = {1: "+", -1: "−", 0: "±"}[r["sign"]]
        lines.append(
            f"| {r['label']} | {r['method']} | {sign} | {r['target']:g} | "
            f"{r['harmonic']:.3f} ± {r['harmonic_se']:.3f} | {r['concept']:.3f} ± "
            f"{r['concept_se']:.3f} | {r['fluency']:.3f} ± {r['fluency_se']:.3f} | "
            f"{r['kl']:.3f} | {r['unreachable']} / {r['n_searches']} |")
    return "\n".join(lines)


def run_records(scored: ScoredRun) -> dict:
    """Everything about one scored run as JSON-ready data (texts included)."""
    r = scored.run
    return {"method": r.method, "layer": r.layer, "site": r.site, "concepts": list(r.concepts),
            "config": dataclasses.asdict(r.config), "alphas": r.alphas.tolist(),
            "kl": r.kl.tolist(), "reachable": r.reachable.tolist(), "texts": r.texts,
            "concept": scored.concept.tolist(), "fluency": scored.fluency.tolist(),
            "harmonic": scored.harmonic.tolist()}


def feature_context_examples(codes: np.ndarray, acts, features: Sequence[int], *, k: int = 10,
                             window: int = 15) -> Mapping[str, list[str]]:
    """The unsupervised variant's concepts: each feature's top-activating contexts.

    Args:
      codes: (n, K) SNMF codes over `acts`' tokens.
      acts: the `Activations` the codes were fitted on.
      features: which features.
      k: contexts per feature (>= 2 needed by `ConceptJudge`).
      window: tokens on each side of the activating token.

    Returns:
      "feature <i>" -> context texts, for features with >= 2 contexts; build a
      `ConceptJudge` on it and steer each feature toward its own name.
    """
    from snmf_jax.interpret import top_contexts
    ctx = top_contexts(codes, acts, k=k, window=window, features=list(features))
    out = {}
    for f, cs in zip(features, ctx):
        texts = ["".join(c.tokens).strip() for c in cs]
        texts = [t for t in texts if t]
        if len(texts) >= 2:
            out[f"feature {int(f)}"] = texts
    return out
