"""Export in SAEDashboard's Neuronpedia batch format (`batch-<n>.json`).

SAEDashboard's `NeuronpediaRunner` writes one `batch-<n>.json` per batch of
features, and Neuronpedia's importer
(`utils/neuronpedia-utils/.../convert-saedashboard-to-neuronpedia-export.py`)
reads every `batch-*` file of a folder. Each file is the `to_dict()` of a
`sae_dashboard.neuronpedia.neuronpedia_dashboard.NeuronpediaDashboardBatch`::

    {"model_id": str, "layer": int, "sae_set": str, "sae_id_suffix": str | None,
     "features": [{feature_index, neuron_alignment_{indices,values,l1},
                   correlated_neurons_{indices,l1,pearson},
                   correlated_features_{indices,l1,pearson},
                   neg_str, neg_values, pos_str, pos_values, frac_nonzero,
                   freq_hist_data_bar_{values,heights},
                   logits_hist_data_bar_{heights,values}, n_prompts_total,
                   n_tokens_in_prompt, dataset, decoder_weights_dist,
                   activations: [{bin_min, bin_max, bin_contains, tokens, values,
                                  qualifying_token_index}], vector}]}

with exactly their keys (their constructors reject any other) and every key
the importer reads. What each field means for SNMF features is in
docs/formats/neuronpedia.md and `_dashboard_stats`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from snmf_jax import _checks
from snmf_jax._io import atomic_write_bytes
from snmf_jax.report import _dashboard_stats as stats
from snmf_jax.report._data import FORMAT


def _floats(a, digits: int = 4) -> list[float]:
    """Floats rounded to `digits` significant digits (JSON has no float32)."""
    return [float(f"{float(x):.{digits}g}") for x in np.asarray(a).ravel()]


def _activation(ctx: Mapping, max_code: float) -> dict:
    # One group, SAEDashboard's "TOP ACTIVATIONS": bin_min = bin_contains = -1
    # and bin_max the feature's largest activation.
    return {"bin_min": -1, "bin_max": _floats([max_code])[0], "bin_contains": -1,
            "tokens": [str(t) for t in ctx["tokens"]],
            "values": [0.0 if v is None else float(v) for v in ctx["values"]],
            "qualifying_token_index": int(ctx["center"])}


def neuronpedia_batches(report: Mapping, features, codes, data, *, model=None,
                        layer: int | None = None, model_id: str | None = None,
                        sae_set: str = "snmf", sae_id_suffix: str | None = None,
                        dataset: str = "", n_tokens: int = 10, n_rows: int = 3,
                        n_bins: int = 50, features_per_batch: int = 128) -> list[dict]:
    """The report's features as SAEDashboard `NeuronpediaDashboardBatch` dicts.

    Args:
      report: from `feature_report` over the same features, codes and data
        (its contexts, promoted/suppressed tokens and `active` rule are used).
      features: (K, d_mlp) Φ.
      codes: (n, K) codes of the rows of `data`.
      data: the `Activations`, `ActivationStore` or (n, d_mlp) array the
        codes were fitted on (read once, chunk by chunk, for the correlations).
      model: the loaded `Model` for the logit histograms (None: left empty,
        as are pos/neg when the report has no vocabulary projection).
      layer: the layer (default: the report's); required, Neuronpedia keys
        sources by it.
      model_id: the model's Neuronpedia id (default: the report's model name).
      sae_set: the source set (Neuronpedia's source id is "<layer>-<sae_set>").
      sae_id_suffix: appended to the source id as "__<suffix>" (None: none).
      dataset: the dataset the activations came from (shown by Neuronpedia).
      n_tokens: promoted and suppressed tokens per feature (SAEDashboard: 10).
      n_rows: rows of the neuron and correlation tables (SAEDashboard: 3).
      n_bins: bins of the two histograms (SAEDashboard: 50).
      features_per_batch: features per batch file (SAEDashboard: 128).

    Returns:
      One batch dict per `batch-<n>.json`, features in index order.
    """
    if report.get("format") != FORMAT:
        raise ValueError(f"report must have format {FORMAT!r}; got {report.get('format')!r}")
    meta = report.get("meta", {})
    layer = meta.get("layer") if layer is None else layer
    if layer is None:
        raise ValueError("layer is not recorded in the report; pass layer= (Neuronpedia "
                         "names a source '<layer>-<sae_set>')")
    layer = _checks.integer("layer", layer, lo=0)
    for name, v in (("n_tokens", n_tokens), ("n_rows", n_rows), ("n_bins", n_bins),
                    ("features_per_batch", features_per_batch)):
        _checks.integer(name, v, lo=0 if name == "n_tokens" else 1)
    if not isinstance(sae_set, str) or not sae_set:
        raise ValueError(f"sae_set must be a nonempty string; got {sae_set!r}")
    phi = _checks.matrix("features", features, shape="(K, d_mlp)").astype(np.float32)
    codes = _checks.matrix("codes", codes, nonneg=True).astype(np.float32)
    entries = report["features"]
    if codes.shape[1] != phi.shape[0] or len(entries) != phi.shape[0]:
        raise ValueError(f"report ({len(entries)} features), codes {codes.shape} and "
                         f"features {phi.shape} must agree on K")
    width = getattr(data, "d", None) or np.shape(getattr(data, "X", data))[-1]
    if width != phi.shape[1]:
        raise ValueError(f"data has {width} neurons per row but features are {phi.shape}; "
                         "pass the activations the features were fitted on")

    active = stats.active_mask(codes, float(meta.get("active", 0.1)))  # (n, K)
    max_code = codes.max(axis=0) if len(codes) else np.zeros(phi.shape[0])
    corr = stats.correlations(codes, data, n_rows=n_rows)
    align = stats.neuron_alignment(phi, n_rows)
    logit_hist = (stats.logit_histograms(model, phi, layer, n_bins) if model is not None
                  else [([], [])] * len(phi))

    out = []
    for k, entry in enumerate(entries):
        pos, neg = entry.get("pos", [])[:n_tokens], entry.get("neg", [])[:n_tokens]
        freq_values, freq_heights = stats.histogram(codes[active[:, k], k], n_bins)
        out.append({
            "feature_index": int(entry["index"]),
            "neuron_alignment_indices": [int(i) for i in align[0][k]],
            "neuron_alignment_values": _floats(align[1][k]),
            "neuron_alignment_l1": _floats(align[2][k]),
            "correlated_neurons_indices": [int(i) for i in corr.neuron_ids[k]],
            # SAEDashboard stores the cosine similarity under "_l1".
            "correlated_neurons_l1": _floats(corr.neuron_cosine[k]),
            "correlated_neurons_pearson": _floats(corr.neuron_pearson[k]),
            "correlated_features_indices": [int(i) for i in corr.feature_ids[k]],
            "correlated_features_l1": _floats(corr.feature_cosine[k]),
            "correlated_features_pearson": _floats(corr.feature_pearson[k]),
            "neg_str": [str(t) for t, _ in neg],
            # Most suppressed first, as SAEDashboard's bottom logits (scores of −φ̂).
            "neg_values": [-float(s) for _, s in neg],
            "pos_str": [str(t) for t, _ in pos],
            "pos_values": [float(s) for _, s in pos],
            "frac_nonzero": float(active[:, k].mean()) if len(codes) else 0.0,
            "freq_hist_data_bar_values": _floats(freq_values, 5),
            "freq_hist_data_bar_heights": freq_heights,
            "logits_hist_data_bar_heights": logit_hist[k][1],
            "logits_hist_data_bar_values": _floats(logit_hist[k][0], 5),
            "n_prompts_total": corr.n_docs,
            "n_tokens_in_prompt": corr.longest_doc,
            "dataset": str(dataset),
            # SAEDashboard's per-attention-head split of an hook_z decoder row
            # (Neuronpedia's "Head Attribution"): MLP features have no heads.
            "decoder_weights_dist": [],
            "activations": [_activation(c, max_code[k]) for c in entry["contexts"]],
            # The steering vector (a residual direction): not exported.
            "vector": [],
        })
    batch = {"model_id": str(model_id or meta.get("model") or ""), "layer": layer,
             "sae_set": sae_set, "sae_id_suffix": sae_id_suffix}
    return [{**batch, "features": out[s:s + features_per_batch]}
            for s in range(0, max(len(out), 1), features_per_batch)]


def check_export_folder(folder: str | os.PathLike) -> Path:
    """`folder` as a Path if it can take an export: a folder (or nothing yet)
    without `batch-*` files, since Neuronpedia's importer reads every one."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"the Neuronpedia export goes into a folder; {str(folder)!r} is a file")
    old = sorted(p.name for p in folder.glob("batch-*")) if folder.is_dir() else []
    if old:
        raise ValueError(f"{str(folder)!r} already holds {old[0]}; the importer reads every "
                         "batch-* file of a folder, so export into an empty one")
    return folder


def save_neuronpedia(report: Mapping, folder: str | os.PathLike, features, codes, data,
                      **kwargs: Any) -> list[Path]:
    """Writes `neuronpedia_batches(...)` as `folder/batch-<n>.json`, atomically.

    Args:
      report, features, codes, data, kwargs: as `neuronpedia_batches`.
      folder: created if missing; a `batch-*` file already in it is an error
        (Neuronpedia's importer reads every one of them).

    Returns:
      The written paths, batch-0.json first.
    """
    folder = check_export_folder(folder)
    batches = neuronpedia_batches(report, features, codes, data, **kwargs)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, batch in enumerate(batches):
        path = folder / f"batch-{i}.json"
        atomic_write_bytes(path, json.dumps(batch, ensure_ascii=False,
                                            allow_nan=False).encode("utf-8"))
        paths.append(path)
    return paths
