"""Everything the browser and the exports show, gathered into one JSON-able dict.

`feature_report` runs the interpretation layer (contexts, vocabulary
projection, neurons, overlaps, labels) over a fit and attaches the optional
extras (descriptions, steered samples, evaluation scores, a concept tree).
The dict keeps exact values; the page compacts it when it is written.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from snmf_jax import _checks, interpret

FORMAT = "snmf-jax/feature-report"


def _r(x: float, digits: int = 4) -> float | None:
    """A float rounded to `digits` significant digits (None for NaN)."""
    x = float(x)
    return None if not np.isfinite(x) else float(f"{x:.{digits}g}")


def _per_feature(name: str, value, n_feat: int, item=object) -> dict[int, Any]:
    """A list (one per feature) or a {feature index: item} mapping, as a dict;
    every item must be an instance of `item`."""
    if value is None:
        return {}
    if isinstance(value, (str, bytes)) or not isinstance(value, (Mapping, list, tuple)):
        raise ValueError(f"{name} must be a list (one per feature) or a {{index: item}} "
                         f"mapping; got {type(value).__name__}")
    items = dict(value) if isinstance(value, Mapping) else dict(enumerate(value))
    out = {}
    for key, entry in items.items():
        if not isinstance(entry, item):
            raise ValueError(f"{name}[{key!r}] must be a {item.__name__}; got "
                             f"{type(entry).__name__}")
        try:
            k = int(key)
        except (TypeError, ValueError):
            raise ValueError(f"{name} has key {key!r}; expected a feature index") from None
        if not 0 <= k < n_feat:
            raise ValueError(f"{name} has feature index {k}; expected 0 <= index < {n_feat}")
        out[k] = entry
    return out


def _steered(items) -> list[dict]:
    out = []
    for s in items:
        s = {"text": s} if isinstance(s, str) else dict(s)
        if "text" not in s:
            raise ValueError(f"a steered sample needs a 'text'; got keys {sorted(s)}")
        out.append(s)
    return out


def feature_report(features, codes, data, *, model=None, layer: int | None = None,
                   losses=None, k: int = 25, window: int = 15, n_tokens: int = 75,
                   max_neurons: int = 32, n_overlaps: int = 8, n_labels: int = 5,
                   descriptions=None, steered=None, scores=None,
                   tree: Mapping | None = None, title: str = "SNMF features",
                   meta: Mapping | None = None, plots: bool = True,
                   active: float = 0.1) -> dict:
    """Gathers what the browser shows about each feature.

    Args:
      features: (K, d_mlp) Φ.
      codes: (n, K) codes of the rows of `data`.
      data: the `Activations` or `ActivationStore` the codes belong to.
      model: a loaded `Model` for the vocabulary projection (None: no tokens).
      layer: the layer the features were fitted on (needed with `model`).
      losses: the fit's loss history, for the loss plot.
      k, window: contexts per feature and tokens of context on each side.
      n_tokens: promoted and suppressed tokens per feature.
      max_neurons: neurons listed per feature (the count is always given).
      n_overlaps: most-overlapping other features listed.
      n_labels: best labels listed per feature (labelled data only).
      descriptions: per feature text (list, or {index: text}).
      steered: per feature steered samples: a list of strings or of dicts
        with "text" and optional "sign", "alpha", "kl", "score".
      scores: per feature {metric name: value} (evaluation scores).
      tree: a concept tree (format "snmf-jax/concept-tree").
      title: the page title.
      meta: extra provenance shown in the header (model, layer, dataset, ...).
      plots: render the overview plots (matplotlib).
      active: a token activates a feature when its code exceeds `active` ×
        the feature's largest code; `frac_active` is the share of such
        tokens. (SNMF's multiplicative updates leave every code positive, so
        "code > 0" would count every token.)

    Returns:
      A JSON-able dict (format "snmf-jax/feature-report").
    """
    phi = _checks.matrix("features", features, shape="(K, d_mlp)").astype(np.float32)
    codes = _checks.matrix("codes", codes, nonneg=True).astype(np.float32)
    for name, v in (("n_tokens", n_tokens), ("max_neurons", max_neurons),
                    ("n_overlaps", n_overlaps), ("n_labels", n_labels)):
        _checks.integer(name, v, lo=1 if name == "max_neurons" else 0)
    if phi.ndim != 2 or codes.ndim != 2 or codes.shape[1] != phi.shape[0]:
        raise ValueError(f"codes (n, K) and features (K, d) must agree on K; got codes "
                         f"{codes.shape} and features {phi.shape}")
    n_feat = phi.shape[0]
    descriptions = _per_feature("descriptions", descriptions, n_feat, str)
    steered = _per_feature("steered", steered, n_feat)
    scores = _per_feature("scores", scores, n_feat, Mapping)
    if tree is not None:
        from snmf_jax.report._html import page_tree
        try:
            interpret.check_tree(tree, n_feat)
            page_tree(tree)  # every field the page shows, of its type, before any work
        except (ValueError, TypeError, KeyError) as e:
            raise ValueError(f"tree: {e}") from None
        tree = dict(tree)

    contexts = interpret.top_contexts(codes, data, k=k, window=window)
    neurons = interpret.feature_neurons(phi)
    count = interpret.neuron_overlap(phi)
    jac = interpret.neuron_overlap(phi, kind="jaccard")
    if not 0 <= active < 1:
        raise ValueError(f"active must be in [0, 1); got {active}")
    max_code = codes.max(axis=0) if len(codes) else np.zeros(n_feat)
    frac = (codes > active * np.maximum(max_code, 0)).mean(axis=0) if len(codes) else max_code
    proj = decode = None
    if model is not None:
        proj = interpret.vocab_projection(model, phi, layer=layer, k=n_tokens)
        decode = _decoder(model)
    if hasattr(data, "provenance_rows"):
        prov = data.provenance_rows(0, data.n_rows)
        labels, doc_ids = prov.labels, prov.doc_ids
    else:
        labels, doc_ids = getattr(data, "labels", None), getattr(data, "doc_ids", None)
    label_names = getattr(data, "label_names", None)
    assoc = None
    if labels is not None and label_names:
        # Labels name whole documents: each counts once, by its largest code.
        assoc = interpret.label_association(codes, labels, label_names, doc_ids=doc_ids)

    feats = []
    for f in range(n_feat):
        other = np.argsort(-count[f], kind="stable")
        other = [int(j) for j in other if j != f and count[f, j] > 0][:n_overlaps]
        entry = {
            "index": f, "frac_active": _r(frac[f]), "max_code": _r(max_code[f]),
            "n_neurons": int(len(neurons[f][0])),
            "neurons": [[int(i), _r(w, 3)] for i, w in zip(*neurons[f])][:max_neurons],
            "overlaps": [[j, int(count[f, j]), _r(jac[f, j], 3)] for j in other],
            "contexts": [{"row": c.row, "doc": c.doc, "label": c.label, "value": _r(c.value),
                          "center": c.center, "tokens": list(c.tokens),
                          "values": [_r(v) for v in c.values]} for c in contexts[f]],
        }
        if proj is not None:
            entry["pos"] = [[decode(int(t)), _r(s, 4)]
                            for t, s in zip(proj.pos_ids[f], proj.pos_scores[f])]
            entry["neg"] = [[decode(int(t)), _r(s, 4)]
                            for t, s in zip(proj.neg_ids[f], proj.neg_scores[f])]
        if assoc is not None:
            entry["labels"] = [[name, _r(auc, 3), _r(assoc.mean_code[f, assoc.label_names.index(name)], 3)]
                               for name, auc in assoc.best_labels(f, n_labels)]
        if f in descriptions:
            entry["description"] = str(descriptions[f])
        if f in steered:
            entry["steered"] = _steered(steered[f])
        if f in scores:
            entry["scores"] = {str(a): (_r(b) if isinstance(b, (int, float)) else b)
                               for a, b in dict(scores[f]).items()}
        feats.append(entry)

    report = {"format": FORMAT, "version": 1, "title": str(title),
              "meta": {"n_features": n_feat, "n_tokens": int(codes.shape[0]),
                       "d_mlp": int(phi.shape[1]), "layer": layer,
                       "model": getattr(model, "name", None), "contexts": k,
                       "window": window, **dict(meta or {}),
                       "active": active},  # the value used, whatever `meta` says
              "features": feats, "tree": tree, "plots": {}}
    if assoc is not None:
        report["label_best"] = {name: [[j, _r(a, 3)] for j, a in assoc.best_features(name, 5)]
                                for name in assoc.label_names}
    if plots:
        from snmf_jax.report._plots import figure_uri
        report["plots"] = {name: figure_uri(fig)
                           for name, fig in overview_figures(codes, phi, losses, active=active).items()}
    return report


def overview_figures(codes, features, losses=None, *, active: float = 0.1) -> dict:
    """{name: Figure} of the overview plots (loss curve only with `losses`)."""
    from snmf_jax.report import _plots
    figs = {}
    if losses is not None and len(losses):
        figs["loss"] = _plots.plot_losses(losses)
    figs["codes"] = _plots.plot_code_distribution(codes, active=active)
    figs["overlap"] = _plots.plot_overlap(interpret.neuron_overlap(features, kind="jaccard"))
    return figs


def _decoder(model):
    tok = model.tokenizer
    cache: dict[int, str] = {}

    def decode(t: int) -> str:
        if t not in cache:
            cache[t] = tok.decode([t])
        return cache[t]
    return decode
