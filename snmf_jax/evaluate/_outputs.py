"""Writing comparisons: markdown + JSON tables and steering plots (atomic writes)."""

from __future__ import annotations

import io
import math
import os
from pathlib import Path
from typing import Mapping

import numpy as np

from snmf_jax._io import atomic_write_bytes, write_json
from snmf_jax.evaluate._detection import detection_table
from snmf_jax.evaluate._steering import run_records, steering_summary, summary_markdown


def _clean(x):
    """JSON-safe: NaN/Inf become None, numpy scalars plain Python."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, (np.floating, float)):
        return None if not math.isfinite(float(x)) else float(x)
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x


def plot_steering(rows, path: str | os.PathLike, *, title: str = "",
                  references: Mapping[str, float] | None = None) -> None:
    """Harmonic mean (± SE) against KL target, one line per method: a column of
    panels per label, a row per sign (+α above, −α below, where run); a dashed
    line at `references[label]` (the unsteered texts' harmonic mean)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    labels = list(dict.fromkeys(r["label"] for r in rows))
    signs = [s for s in (1, -1) if any(r["sign"] == s for r in rows)] or [1]
    fig, axes = plt.subplots(len(signs), len(labels), figsize=(4.2 * len(labels),
                                                              3.4 * len(signs)), squeeze=False)
    for si, sign in enumerate(signs):
        for ax, label in zip(axes[si], labels):
            mine = [r for r in rows if r["label"] == label and r["sign"] == sign]
            for m in dict.fromkeys(r["method"] for r in mine):
                rs = sorted((r for r in mine if r["method"] == m), key=lambda r: r["target"])
                x = [r["target"] for r in rs]
                y = np.array([r["harmonic"] for r in rs])
                se = np.array([r["harmonic_se"] for r in rs])
                ax.errorbar(x, y, yerr=np.nan_to_num(se), marker="o", capsize=2, label=m)
            if references and references.get(label) is not None:
                ax.axhline(references[label], color="grey", ls="--", lw=1, label="unsteered")
            ax.set_xscale("log")
            ticks = sorted({r["target"] for r in mine})
            if ticks:
                ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
            ax.minorticks_off()
            ax.set_xlabel("KL target (nats)")
            ax.set_ylabel("harmonic mean (concept, fluency)")
            ax.set_title(f"{label}, {'+' if sign == 1 else '−'}α", fontsize=9)
            ax.set_ylim(0, 1)
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def save_comparisons(out: str | os.PathLike, comparisons: Mapping[str, object], *,
                      command: str = "", notes: str = "", texts: bool = True) -> dict:
    """Writes results.json, results.md and steering.png for labelled comparisons.

    Args:
      out: output folder (created).
      comparisons: label (e.g. "smollm2-135m L6 paper20") -> `Comparison`.
      command: the command that produced them (recorded).
      notes: markdown put under the title.
      texts: keep every generated text in the JSON.

    Returns:
      The JSON written.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows, md = [], ["# Steering and concept detection", ""]
    if command:
        md += ["Produced by:", "", f"    {command}", ""]
    if notes:
        md += [notes, ""]
    blob = {"command": command, "comparisons": {}}
    for label, comp in comparisons.items():
        srows = steering_summary(comp.scored, label=label)
        rows += srows
        md += [f"## {label}", "", "### Concept detection (held-out)", "",
               detection_table(comp.detections), ""]
        if srows:
            md += ["### Steering (mean ± SE over concepts × samples; sign ± pools both)", "",
                   summary_markdown(srows), ""]
        for key, what in (("unsteered", "every concept"),
                          ("unsteered_unsupervised", "every feature's contexts (the "
                                                     "snmf-unsupervised judge)")):
            ref = comp.info.get(key)
            if ref:
                md += [f"Unsteered continuations ({ref['n_texts']}, each judged against {what}): "
                       f"harmonic {ref['harmonic']:.3f} ± {ref['harmonic_se']:.3f}, concept "
                       f"{ref['concept']:.3f} ± {ref['concept_se']:.3f}, fluency "
                       f"{ref['fluency']:.3f} ± {ref['fluency_se']:.3f}.", ""]
        runs = [run_records(s) for s in comp.scored]
        if not texts:
            for r in runs:
                r.pop("texts")
        blob["comparisons"][label] = {
            "info": comp.info, "detection": [d._asdict() for d in comp.detections],
            "steering": srows, "runs": runs}
    write_json(out / "results.json", _clean(blob))
    atomic_write_bytes(out / "results.md", ("\n".join(md) + "\n").encode())
    if rows:
        refs = {label: (comp.info.get("unsteered") or {}).get("harmonic")
                for label, comp in comparisons.items()}
        plot_steering(rows, out / "steering.png", references=refs)
    return blob
