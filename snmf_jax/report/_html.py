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
import os
from importlib import resources
from pathlib import Path
from typing import Mapping

from snmf_jax._io import atomic_write_bytes
from snmf_jax.report._data import FORMAT


def _shades(values, top: float) -> list[int]:
    if not top or top <= 0:
        return [0] * len(values)
    return [0 if v is None or v <= 0 else min(99, int(round(99 * v / top))) for v in values]


def compact(report: Mapping) -> dict:
    """The page's JSON: the report with short keys and quantised context codes."""
    if report.get("format") != FORMAT:
        raise ValueError(f"report must have format {FORMAT!r}; got {report.get('format')!r}")
    feats, strings, table = [], {}, []

    def sid(t: str) -> int:  # index into the page's token-string table
        if t not in strings:
            strings[t] = len(table)
            table.append(t)
        return strings[t]

    for f in report["features"]:
        top = f["max_code"] or 0.0
        e = {"i": f["index"], "fz": f["frac_active"] or 0.0, "mx": top, "nn": f["n_neurons"],
             "n": f["neurons"], "o": f["overlaps"],
             "c": [[[sid(t) for t in c["tokens"]], _shades(c["values"], top), c["center"],
                    c["value"], c["label"]]
                   for c in f["contexts"]]}
        for key, short in (("pos", "p"), ("neg", "q")):
            if key in f:
                e[short] = [[t, round(s, 2)] for t, s in f[key]]
        for key, short in (("labels", "l"), ("description", "d"), ("steered", "s"),
                           ("scores", "e")):
            if key in f:
                e[short] = f[key]
        feats.append(e)
    return {"title": report["title"], "meta": report["meta"], "features": feats, "strings": table,
            "tree": report.get("tree"), "plots": report.get("plots") or {},
            "label_best": report.get("label_best")}


def render_html(report: Mapping) -> str:
    """The whole page as a string."""
    template = resources.files("snmf_jax.report").joinpath("_page.html").read_text("utf-8")
    blob = json.dumps(compact(report), ensure_ascii=False, separators=(",", ":"),
                      allow_nan=False)
    # Inside <script>, only "</" (and "<!--") can end the element early.
    blob = blob.replace("</", "<\\/").replace("<!--", "<\\!--")
    return (template.replace("__TITLE__", html.escape(str(report["title"])))
            .replace("__DATA__", blob))


def write_html(report: Mapping, path: str | os.PathLike) -> Path:
    """Writes the browser for `report` (from `feature_report`) to `path`, atomically."""
    path = Path(path)
    atomic_write_bytes(path, render_html(report).encode("utf-8"))
    return path
