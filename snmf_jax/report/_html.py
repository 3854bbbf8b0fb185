"""The feature browser: one self-contained HTML file.

The page is a template (`_page.html`, inline CSS and JS, no network) with the
report inside as ONE compact JSON blob (`<script type="application/json">`).
The page parses it once, renders the feature list (one short line per
feature) and builds a feature's detail panel only when it is opened, so a
report with 1,000 features × 25 contexts loads in a fraction of a second.
Compaction: short keys, context tokens as indices into one table of distinct
token strings, token scores to 2 decimals, and each context's per-token codes
as integers 0-99 relative to the feature's largest code (the exact code of the
activating token is kept).
"""

from __future__ import annotations

import html
import json
import math
import numbers
import os
import re
from importlib import resources
from pathlib import Path
from typing import Mapping

from snmf_jax import _checks
from snmf_jax._io import atomic_write_bytes
from snmf_jax.report._data import FORMAT


_PLOT_URI = re.compile(r"data:image/(?:png|svg\+xml);base64,[A-Za-z0-9+/]*={0,2}")
# One pass over the template: a value can never create a placeholder.
_PLACEHOLDER = re.compile(r"__(TITLE|DATA)__")
# In the JSON blob inside <script>: no "<" / ">" / "&" at all (so no "</script",
# "<!--" or "<script"), and no U+2028/9 (line breaks to a JavaScript parser).
_BLOB_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026",
                 "\u2028": "\\u2028", "\u2029": "\\u2029"}
_BLOB_RE = re.compile("[<>&\u2028\u2029]")


def _int(v, where: str) -> int:
    if not _checks.is_int(v):
        raise ValueError(f"report {where} must be an integer; got {v!r:.60}")
    return int(v)


def _num(v, where: str, default: float | None = None) -> float | None:
    """A finite float (None or non-finite: `default`); anything else is an error."""
    if v is None:
        return default
    if not _checks.is_real(v):
        raise ValueError(f"report {where} must be a number; got {v!r:.60}")
    v = float(v)
    return v if math.isfinite(v) else default


def _text(v) -> str:
    return v if isinstance(v, str) else str(v)


def _scalar(v):
    """A meta or score value the page shows as text: a string, number, bool or null."""
    if v is None or isinstance(v, (str, bool)):
        return v
    if isinstance(v, numbers.Real):
        return _num(v, "value")
    return json.dumps(v, default=str)[:200]


def _shades(values, top: float) -> list[int]:
    if not top or top <= 0:
        return [0] * len(values)
    return [0 if v is None or v <= 0 else min(99, int(round(99 * v / top))) for v in values]


def page_tree(tree: Mapping | None) -> dict | None:
    """The fields of a concept tree the page reads, each of its type."""
    if tree is None:
        return None
    nodes = []
    for j, n in enumerate(tree.get("nodes") or []):
        w = f"tree node #{j}"
        nodes.append({"id": _text(n["id"]), "level": _int(n["level"], f"{w} level"),
                      "index": _int(n["index"], f"{w} index"),
                      "label": None if n.get("label") is None else _text(n["label"]),
                      "top_tokens": [_text(t) for t in n.get("top_tokens") or []],
                      "children": [{"id": _text(c["id"]),
                                    "weight": _num(c.get("weight"), f"{w} child weight")}
                                   for c in n.get("children") or []]})
    return {"roots": [_text(r) for r in tree.get("roots") or []], "nodes": nodes}


def _plots(plots: Mapping | None) -> dict:
    out = {}
    for name, uri in (plots or {}).items():
        if not isinstance(uri, str) or not _PLOT_URI.fullmatch(uri):
            raise ValueError(f"report plot {name!r:.40} must be a base64 PNG or SVG data URI "
                             f"(figure_uri); got {str(uri)[:40]!r}")
        out[_text(name)] = uri
    return out


def compact(report: Mapping) -> dict:
    """The page's JSON: the report with short keys and quantised context codes.

    Every value is checked to be of the type the page expects (numbers are
    numbers, text is text), so a crafted report cannot smuggle markup in
    through a field the page formats as a number.
    """
    if report.get("format") != FORMAT:
        raise ValueError(f"report must have format {FORMAT!r}; got {report.get('format')!r}")
    feats, strings, table = [], {}, []

    def sid(t) -> int:  # index into the page's token-string table
        t = _text(t)
        if t not in strings:
            strings[t] = len(table)
            table.append(t)
        return strings[t]

    for f in report["features"]:
        i = _int(f["index"], "feature index")
        w = f"feature {i}"
        top = _num(f["max_code"], f"{w} max_code", 0.0)
        e = {"i": i, "fz": _num(f["frac_active"], f"{w} frac_active", 0.0), "mx": top,
             "nn": _int(f["n_neurons"], f"{w} n_neurons"),
             "n": [[_int(a, f"{w} neuron"), _num(b, f"{w} neuron weight", 0.0)]
                   for a, b in f["neurons"]],
             "o": [[_int(a, f"{w} overlap"), _int(b, f"{w} overlap count"),
                    _num(c, f"{w} overlap jaccard", 0.0)] for a, b, c in f["overlaps"]],
             "c": [[[sid(t) for t in c["tokens"]],
                    _shades([_num(v, f"{w} context code") for v in c["values"]], top),
                    _int(c["center"], f"{w} context center"),
                    _num(c["value"], f"{w} context value", 0.0),
                    None if c.get("label") is None else _text(c["label"])]
                   for c in f["contexts"]]}
        for key, short in (("pos", "p"), ("neg", "q")):
            if key in f:
                e[short] = [[_text(t), round(_num(s, f"{w} {key} score", 0.0), 2)]
                            for t, s in f[key]]
        if "labels" in f:
            e["l"] = [[_text(a), _num(b, f"{w} label AUC", 0.0), _num(c, f"{w} label mean")]
                      for a, b, c in f["labels"]]
        if "description" in f:
            e["d"] = _text(f["description"])
        if "steered" in f:
            e["s"] = [{_text(k): _scalar(v) for k, v in dict(s).items()} for s in f["steered"]]
        if "scores" in f:
            e["e"] = {_text(k): _scalar(v) for k, v in dict(f["scores"]).items()}
        feats.append(e)
    meta = {_text(k): _scalar(v) for k, v in dict(report.get("meta") or {}).items()}
    meta["active"] = _num(meta.get("active"), "meta active", 0.0)  # the page formats it
    label_best = report.get("label_best")
    if label_best is not None:
        label_best = {_text(name): [[_int(j, "label_best feature"), _num(a, "label_best AUC")]
                                    for j, a in fs] for name, fs in label_best.items()}
    return {"title": _text(report["title"]), "meta": meta, "features": feats,
            "strings": table, "tree": page_tree(report.get("tree")),
            "plots": _plots(report.get("plots")), "label_best": label_best}


def script_json(value) -> str:
    """`value` as JSON safe to place between <script> tags: no character of it
    can end the element, open a comment or break a JavaScript line."""
    blob = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return _BLOB_RE.sub(lambda m: _BLOB_ESCAPES[m.group()], blob)


def render_html(report: Mapping) -> str:
    """The whole page as a string."""
    template = resources.files("snmf_jax.report").joinpath("_page.html").read_text("utf-8")
    data = compact(report)
    values = {"TITLE": html.escape(data["title"]), "DATA": script_json(data)}
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


def save_html(report: Mapping, path: str | os.PathLike) -> Path:
    """Writes the browser for `report` (from `feature_report`) to `path`, atomically."""
    path = Path(path)
    atomic_write_bytes(path, render_html(report).encode("utf-8"))
    return path
