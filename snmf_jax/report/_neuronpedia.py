"""Export in the JSON layout SAEDashboard's Neuronpedia runner writes.

One batch file: ``{"model_id", "layer", "sae_id", "features": [...]}`` with,
per feature, ``feature_index`` (and SAEDashboard's ``featureIndex``),
``pos_str``/``pos_values`` and ``neg_str``/``neg_values`` (the vocabulary
projection), ``frac_nonzero``, ``neuron_alignment_indices``/``_values`` (the
feature's neurons) and ``activations``: per top context ``tokens``,
``values``, ``maxValue`` and ``maxValueTokenIndex``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Mapping

from snmf_jax._io import atomic_write_bytes
from snmf_jax.report._data import FORMAT


def neuronpedia_features(report: Mapping, *, model_id: str | None = None,
                         layer: int | str | None = None, sae_id: str = "snmf",
                         n_tokens: int = 10) -> dict:
    """The report's features as a Neuronpedia / SAEDashboard batch dict.

    Args:
      report: from `feature_report`.
      model_id: the model's id (default: the report's model name).
      layer: the layer (default: the report's).
      sae_id: the source set name.
      n_tokens: promoted and suppressed tokens per feature (SAEDashboard: 10).

    Returns:
      {"model_id", "layer", "sae_id", "features": [...]}.
    """
    if report.get("format") != FORMAT:
        raise ValueError(f"report must have format {FORMAT!r}; got {report.get('format')!r}")
    meta = report.get("meta", {})
    out = []
    for f in report["features"]:
        pos, neg = f.get("pos", [])[:n_tokens], f.get("neg", [])[:n_tokens]
        acts = []
        for c in f["contexts"]:
            values = [0.0 if v is None else v for v in c["values"]]
            acts.append({"tokens": c["tokens"], "values": values, "maxValue": c["value"],
                         "maxValueTokenIndex": c["center"], "binMin": -1, "binMax": -1,
                         "binContains": -1})
        out.append({
            "feature_index": f["index"], "featureIndex": f["index"],
            "pos_str": [t for t, _ in pos], "pos_values": [s for _, s in pos],
            # Most suppressed first, as SAEDashboard's bottom logits (scores of −φ̂).
            "neg_str": [t for t, _ in neg], "neg_values": [-s for _, s in neg],
            # SNMF codes are positive everywhere: the share of tokens whose code
            # exceeds `active` × the largest (the report's frac_active).
            "frac_nonzero": f["frac_active"],
            "neuron_alignment_indices": [n for n, _ in f["neurons"]],
            "neuron_alignment_values": [w for _, w in f["neurons"]],
            "activations": acts,
            **({"description": f["description"]} if "description" in f else {}),
        })
    return {"model_id": model_id or meta.get("model") or "",
            "layer": str(meta.get("layer") if layer is None else layer),
            "sae_id": sae_id, "features": out}


def write_neuronpedia(report: Mapping, path: str | os.PathLike, **kwargs) -> Path:
    """Writes `neuronpedia_features(report, **kwargs)` as JSON to `path`, atomically."""
    path = Path(path)
    blob = json.dumps(neuronpedia_features(report, **kwargs), ensure_ascii=False,
                      allow_nan=False)
    atomic_write_bytes(path, blob.encode("utf-8"))
    return path
