"""The judge's labelled validation set (snmf_jax/data/judge_validation.json) and
its report. The set was written for the package and is never used to calibrate:
`calibration_overlap` proves it shares no text with what the judge fits on.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Iterable, Sequence

import numpy as np

from snmf_jax.evaluate._calibrate import roc_auc
from snmf_jax.evaluate._describe import as_description

VALIDATION_FILE = "data/judge_validation.json"


def load_validation() -> list[dict]:
    """The validation items: id, group, kind, description, text, concept (0–2), fluency (0–2).

    Raises:
      ValueError: the file is not the expected format or an item lacks a field.
    """
    raw = json.loads(resources.files("snmf_jax").joinpath(VALIDATION_FILE)
                     .read_text(encoding="utf-8"))
    if raw.get("format") != "snmf-jax/judge-validation":
        raise ValueError(f"{VALIDATION_FILE}: format {raw.get('format')!r} is not "
                         "'snmf-jax/judge-validation'")
    need = ("id", "group", "kind", "description", "text", "concept", "fluency")
    for it in raw["items"]:
        missing = [k for k in need if k not in it]
        if missing:
            raise ValueError(f"{VALIDATION_FILE}: item {it.get('id')!r} lacks {missing}")
    return raw["items"]


def _norm(t: str) -> str:
    return " ".join(t.lower().split())


def calibration_overlap(calibration: Iterable[str], items: Sequence[dict] | None = None
                        ) -> list[str]:
    """Validation texts that also occur in `calibration` (case and spacing ignored)."""
    items = load_validation() if items is None else items
    cal = {_norm(t) for t in calibration}
    return [it["text"] for it in items if _norm(it["text"]) in cal]


def _auc(s: np.ndarray, y: np.ndarray) -> float | None:
    return roc_auc(s, y) if 0 < y.sum() < len(y) else None


def validation_report(judge, items: Sequence[dict] | None = None) -> dict:
    """AUROCs and mean scores of a judge (`concept(texts, description)`,
    `fluency(texts)`) on the validation set.

    Returns:
      {"n", "concept": {"auroc" (label >= 1 vs 0), "auroc_fluent" (fluent texts
      only), "auroc_by_description_kind"}, "fluency": {"auroc" (2 vs 0),
      "auroc_loops", "auroc_salad"}, "mean_by_kind": text kind -> mean
      concept and fluency scores}.
    """
    items = load_validation() if items is None else list(items)
    con = np.zeros(len(items))
    groups: dict = {}
    for i, it in enumerate(items):
        key = it["description"] if isinstance(it["description"], str) else tuple(
            it["description"])
        groups.setdefault(key, []).append(i)
    for key, idx in groups.items():
        con[idx] = judge.concept([items[i]["text"] for i in idx], key)
    flu = np.asarray(judge.fluency([it["text"] for it in items]), np.float64)
    yc = np.array([it["concept"] for it in items])
    yf = np.array([it["fluency"] for it in items])
    kinds = np.array([it["kind"] for it in items])
    dkind = np.array([as_description(it["description"]).kind for it in items])
    fluent = yf == 2
    out = {"n": len(items), "concept": {
        "auroc": _auc(con, yc >= 1),
        "auroc_fluent": _auc(con[fluent], yc[fluent] >= 1),
        "auroc_by_description_kind": {k: _auc(con[dkind == k], yc[dkind == k] >= 1)
                                      for k in sorted(set(dkind))}}}
    loops = np.isin(kinds, ["loop_on_topic", "loop_off_topic"])
    salad = np.isin(kinds, ["salad_on_topic", "salad_off_topic"])
    out["fluency"] = {"auroc": _auc(flu[yf != 1], yf[yf != 1] == 2),
                      "auroc_loops": _auc(flu[fluent | loops], fluent[fluent | loops]),
                      "auroc_salad": _auc(flu[fluent | salad], fluent[fluent | salad])}
    out["mean_by_kind"] = {k: {"concept": float(con[kinds == k].mean()),
                               "fluency": float(flu[kinds == k].mean()),
                               "n": int((kinds == k).sum())} for k in sorted(set(kinds))}
    return out
