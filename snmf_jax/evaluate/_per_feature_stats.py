"""Statistics of the per-feature protocol: bootstrap over features.

Per (method, sign, target, metric) each feature's texts are averaged first;
the interval resamples features (`_bootstrap`). Metrics, all on 0–2:
"concept_in" / "concept_out" (against the input- / output-centric
description), "fluency", "harmonic_in" / "harmonic_out" (per-text harmonic
means, 0 if either score is 0). Sign 0 pools both signs; target "all" pools
every target. The unsteered level is the same statistic over the unsteered
texts judged against each feature's descriptions. SNMF − DiffMean is paired:
the DiffMean direction of a feature is built from that SNMF feature.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from snmf_jax.evaluate._bootstrap import bootstrap_mean, paired_difference
from snmf_jax.evaluate._offline_judge import harmonic_mean

METRICS = ("harmonic_in", "harmonic_out", "concept_in", "concept_out", "fluency")


def _per_text(ms, metric: str) -> np.ndarray:
    """(S, F, T, n) scores of one metric."""
    if metric.startswith("harmonic_"):
        return ms.harmonic(metric.split("_")[1])
    return getattr(ms, metric)


def _unsteered_per_feature(ms, metric: str) -> np.ndarray:
    """(F,) each feature's mean over the unsteered texts (output: both signs' descriptions)."""
    flu = ms.unsteered_fluency[None]  # (1, m)
    con = {"in": ms.unsteered_in, "out": ms.unsteered_out.mean(0)}  # (F, m) each
    if metric == "fluency":
        return np.broadcast_to(flu, ms.unsteered_in.shape).mean(1)
    kind = metric.split("_")[1]
    if metric.startswith("concept_"):
        return con[kind].mean(1)
    if kind == "in":
        return harmonic_mean(ms.unsteered_in, flu).mean(1)
    return harmonic_mean(ms.unsteered_out, flu[None]).mean((0, 2))


def feature_means(ms, metric: str, sign_index: int | None, target_index: int | None
                  ) -> np.ndarray:
    """(F,) per-feature mean of `metric` at one sign / target (None: pooled)."""
    x = _per_text(ms, metric)  # (S, F, T, n)
    if sign_index is not None:
        x = x[sign_index:sign_index + 1]
    if target_index is not None:
        x = x[:, :, target_index:target_index + 1]
    return x.mean(axis=(0, 2, 3))


def per_feature_summary(scores: Sequence, signs: Sequence[int], targets: Sequence[float], *,
                        n_boot: int = 2000, seed: int = 0,
                        paired: tuple[str, str] = ("snmf", "diffmean")) -> dict:
    """Bootstrap intervals for every (method, sign, target, metric), the unsteered
    levels and the paired difference.

    Args:
      scores: `MethodScores` per method.
      signs: the run's signs, in the score arrays' order.
      targets: the run's KL targets.
      n_boot, seed: bootstrap settings.
      paired: (a, b): report a − b per feature when both methods ran on the
        same features.

    Returns:
      {"rows": [{method, sign, target, metric, mean, lo, hi, n}], "unsteered":
      [{method, metric, mean, lo, hi, n}], "paired": [{a, b, sign, target,
      metric, mean, lo, hi, n}]}; sign 0 = both signs, target "all" = pooled.
    """
    sign_opts = [(s, i) for i, s in enumerate(signs)] + ([(0, None)] if len(signs) > 1 else [])
    tgt_opts = [(t, i) for i, t in enumerate(targets)] + [("all", None)]
    rows, unsteered, pairs = [], [], []
    by = {ms.method: ms for ms in scores}
    for ms in scores:
        for metric in METRICS:
            iv = bootstrap_mean(_unsteered_per_feature(ms, metric), n_boot=n_boot, seed=seed)
            unsteered.append({"method": ms.method, "metric": metric, **iv.as_dict()})
            for sign, si in sign_opts:
                for tgt, ti in tgt_opts:
                    iv = bootstrap_mean(feature_means(ms, metric, si, ti), n_boot=n_boot,
                                        seed=seed)
                    rows.append({"method": ms.method, "sign": sign, "target": tgt,
                                 "metric": metric, **iv.as_dict()})
    a, b = paired
    if a in by and b in by:
        if not np.array_equal(by[a].features, by[b].features):
            raise ValueError(f"paired {a} − {b}: the methods were run on different features")
        for metric in METRICS:
            for sign, si in sign_opts:
                for tgt, ti in tgt_opts:
                    iv = paired_difference(feature_means(by[a], metric, si, ti),
                                           feature_means(by[b], metric, si, ti),
                                           n_boot=n_boot, seed=seed)
                    pairs.append({"a": a, "b": b, "sign": sign, "target": tgt,
                                  "metric": metric, **iv.as_dict()})
    return {"rows": rows, "unsteered": unsteered, "paired": pairs}
