"""Per-feature protocol files: the full run (every text, to re-judge), the trimmed
JSON record, markdown tables and the concept / fluency vs KL plot."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from snmf_jax._io import atomic_write_bytes, write_json
from snmf_jax.evaluate._banks import FeatureDescription
from snmf_jax.evaluate._outputs import _clean
from snmf_jax.evaluate._per_feature import MethodRun, PerFeatureConfig, PerFeatureRun
from snmf_jax.evaluate._per_feature_stats import METRICS, feature_means
from snmf_jax.evaluate._steering import SteeringConfig, SteeringRun

_NAMES = {"harmonic_in": "harmonic (input desc.)", "harmonic_out": "harmonic (output desc.)",
          "concept_in": "concept (input desc.)", "concept_out": "concept (output desc.)",
          "fluency": "fluency"}


def run_to_json(run: PerFeatureRun) -> dict:
    """Everything generated (texts included), enough to re-judge later."""
    cfg = dataclasses.asdict(run.config)
    return _clean({"config": cfg, "layer": run.layer, "unsteered": list(run.unsteered),
                   "methods": [{"method": m.method, "skipped": {str(k): v for k, v in
                                                                m.skipped.items()},
                                "descriptions": [dataclasses.asdict(d) for d in m.descriptions],
                                "site": m.run.site, "alphas": m.run.alphas.tolist(),
                                "kl": m.run.kl.tolist(), "reachable": m.run.reachable.tolist(),
                                "texts": m.run.texts} for m in run.methods]})


def run_from_json(blob: dict) -> PerFeatureRun:
    """The inverse of `run_to_json`."""
    c = dict(blob["config"])
    st = dict(c.pop("steering"))
    steer = SteeringConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in st.items()})
    config = PerFeatureConfig(**c, steering=steer)
    methods = []
    for m in blob["methods"]:
        descs = tuple(FeatureDescription(**{k: tuple(v) if isinstance(v, list) else v
                                            for k, v in d.items()}) for d in m["descriptions"])
        kl = np.array([[[np.nan if v is None else v for v in t] for t in f] for f in m["kl"]])
        r = SteeringRun(m["method"], tuple(f"{m['method']} {d.index}" for d in descs), steer,
                        np.asarray(m["alphas"]), kl, np.asarray(m["reachable"], bool),
                        m["texts"], blob["layer"], m["site"])
        methods.append(MethodRun(m["method"], descs, r, {int(k): v for k, v in
                                                          m["skipped"].items()}))
    return PerFeatureRun(tuple(methods), tuple(blob["unsteered"]), config, blob["layer"])


def _r(x, nd: int = 4):
    if isinstance(x, float):
        return round(x, nd)
    if isinstance(x, list):
        return [_r(v, nd) for v in x]
    if isinstance(x, dict):
        return {k: _r(v, nd) for k, v in x.items()}
    return x


def record(run: PerFeatureRun, scores, summary: dict, *, info: dict,
           example_targets=(0.5, 2.0), max_chars: int = 160) -> dict:
    """The committed record: "protocol": "per-feature", settings, intervals, per-feature
    means (F, S, T) per metric, descriptions (contexts cut to `max_chars`) and the
    first sample of each (sign, feature) at `example_targets`."""
    steer = run.config.steering
    targets = list(steer.targets)
    keep = [targets.index(t) for t in example_targets if t in targets]
    methods = []
    for mr, ms in zip(run.methods, scores):
        r = mr.run
        per_feature = {metric: np.stack([np.stack([feature_means(ms, metric, si, ti)
                                                   for ti in range(len(targets))], 1)
                                         for si in range(len(steer.signs))], 1).tolist()
                       for metric in METRICS}  # (F, S, T)
        methods.append({
            "method": mr.method, "site": r.site, "features": ms.features.tolist(),
            "skipped": {str(k): v for k, v in mr.skipped.items()},
            "descriptions": [{"index": d.index, "contexts": [c[:max_chars] for c in
                                                             d.input_description],
                              "promoted": list(d.promoted), "suppressed": list(d.suppressed)}
                             for d in mr.descriptions],
            "alphas": r.alphas.tolist(), "kl": r.kl.tolist(),
            "unreachable": int((~r.reachable).sum()), "searches": int(r.reachable.size),
            "per_feature_means": per_feature,
            "example_texts": {"targets": [targets[i] for i in keep],
                              "texts": [[[f[i][0] for i in keep] for f in s] for s in r.texts]}})
    blob = {"protocol": "per-feature", "layer": run.layer, "targets": targets,
            "signs": list(steer.signs), "n_samples": steer.n_samples,
            "n_features": run.config.n_features, "max_new_tokens": steer.max_new_tokens,
            "sampling": {"sampler": steer.sampler, **steer.sampling},
            "minus_alpha": steer.minus_alpha, "prompt": steer.prompt,
            "config": dataclasses.asdict(run.config),
            "methods": [m["method"] for m in methods], "bootstrap": summary,
            "unsteered_examples": list(run.unsteered[:4]), "per_method": methods, **info}
    return _r(_clean(blob))


def _cell(d: dict) -> str:
    return f"{d['mean']:.3f} [{d['lo']:.3f}, {d['hi']:.3f}]"


def summary_markdown(summary: dict, *, title: str, targets, note: str = "") -> str:
    """Tables: per method and KL target (both signs pooled) with 95 % bootstrap
    intervals over features; the unsteered level; SNMF − DiffMean paired."""
    sign_name = {1: "+", -1: "−", 0: "±"}
    lines = [f"## {title}", ""] + ([note, ""] if note else [])
    lines += ["Mean [95 % bootstrap interval over features], scores on 0–2, both signs "
              "pooled unless marked.", "",
              "| method | KL target | " + " | ".join(_NAMES[m] for m in METRICS) + " |",
              "|---|---|" + "---|" * len(METRICS)]
    rows = {(r["method"], r["sign"], r["target"], r["metric"]): r for r in summary["rows"]}
    methods = list(dict.fromkeys(r["method"] for r in summary["rows"]))
    un = {(u["method"], u["metric"]): u for u in summary["unsteered"]}
    for m in methods:
        lines.append(f"| {m} | unsteered | " + " | ".join(_cell(un[(m, x)]) for x in METRICS)
                     + " |")
        for t in list(targets) + ["all"]:
            lines.append(f"| {m} | {t if t == 'all' else format(t, 'g')} | " + " | ".join(
                _cell(rows[(m, 0, t, x)]) if (m, 0, t, x) in rows else
                _cell(rows[(m, 1, t, x)]) for x in METRICS) + " |")
    if summary["paired"]:
        p0 = summary["paired"][0]
        lines += ["", f"Paired {p0['a']} − {p0['b']} (same features; interval over features):",
                  "", "| sign | KL target | " + " | ".join(_NAMES[m] for m in METRICS) + " |",
                  "|---|---|" + "---|" * len(METRICS)]
        pr = {(p["sign"], p["target"], p["metric"]): p for p in summary["paired"]}
        for s in sorted({p["sign"] for p in summary["paired"]}, key=lambda s: (s == 0, -s)):
            for t in list(targets) + ["all"]:
                lines.append(f"| {sign_name[s]} | {t if t == 'all' else format(t, 'g')} | " +
                             " | ".join(_cell(pr[(s, t, x)]) for x in METRICS) + " |")
    return "\n".join(lines) + "\n"


def plot_per_feature(summary: dict, targets, path: str | os.PathLike, *, title: str = ""
                     ) -> None:
    """Concept (input and output descriptions) and fluency against the KL target per
    method, both signs pooled, with bootstrap bands; dashed: each method's
    unsteered level."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    panels = ("concept_in", "concept_out", "fluency", "harmonic_in")
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6))
    rows = {(r["method"], r["sign"], r["target"], r["metric"]): r for r in summary["rows"]}
    un = {(u["method"], u["metric"]): u for u in summary["unsteered"]}
    methods = list(dict.fromkeys(r["method"] for r in summary["rows"]))
    sign = 0 if any(k[1] == 0 for k in rows) else next(iter(rows))[1]
    for ax, metric in zip(axes, panels):
        for j, m in enumerate(methods):
            pts = [rows[(m, sign, t, metric)] for t in targets]
            color = f"C{j}"
            ax.plot(targets, [p["mean"] for p in pts], "o-", color=color, label=m, ms=3)
            ax.fill_between(targets, [p["lo"] for p in pts], [p["hi"] for p in pts],
                            color=color, alpha=0.15)
            ax.axhline(un[(m, metric)]["mean"], color=color, ls="--", lw=1)
        ax.set_xscale("log")
        ax.set_xlabel("KL target (nats)")
        ax.set_title(_NAMES[metric])
        ax.set_ylim(0, 2)
    axes[0].legend(fontsize=8, title="dashed: unsteered", title_fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    import io
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(Path(path), buf.getvalue())


def save_per_feature(out: str | os.PathLike, name: str, run: PerFeatureRun, scores,
                      summary: dict, *, info: dict, title: str) -> dict:
    """Writes <out>/<name>.json (trimmed record), <name>.md and <name>.png."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    blob = record(run, scores, summary, info=info)
    write_json(out / f"{name}.json", blob)
    targets = list(run.config.steering.targets)
    md = summary_markdown(summary, title=title, targets=targets,
                          note=f"Command: `{info.get('command', '')}`")
    atomic_write_bytes(out / f"{name}.md", md.encode())
    plot_per_feature(summary, targets, out / f"{name}.png", title=title)
    return blob
