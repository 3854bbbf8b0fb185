"""Overview plots (matplotlib): loss curve, code distribution, overlap heatmap.

Each `plot_*` returns a Figure; `save_plots` writes them as PNG and SVG files
and `figure_uri` inlines one into the HTML page as a data URI.
"""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path

import numpy as np


def _plt():
    import matplotlib
    matplotlib.use("Agg", force=False)  # no display needed; keeps a user's backend in notebooks
    import matplotlib.pyplot as plt
    return plt


def plot_losses(losses):
    """Loss ‖X − CΦ‖² per iteration (log scale)."""
    plt = _plt()
    losses = np.asarray(losses, np.float64)
    fig, ax = plt.subplots(figsize=(4.2, 2.8), dpi=110)
    ax.plot(np.arange(1, len(losses) + 1), losses, color="#3461c1", lw=1.5)
    if len(losses) and np.all(losses > 0):
        ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel("‖X − CΦ‖²")
    ax.set_title("Fit loss", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_code_distribution(codes, *, active: float = 0.1):
    """Share of tokens each feature is active on, and the histogram of codes.

    A token is active for a feature when its code exceeds `active` × the
    feature's largest code. Codes below 1e-6 × the largest are left out of the
    histogram (multiplicative updates leave long tails of tiny codes).
    """
    plt = _plt()
    codes = np.asarray(codes, np.float32)
    top = np.maximum(codes.max(axis=0), 0)
    frac = (codes > active * top).mean(axis=0)
    fig, (a, b) = plt.subplots(1, 2, figsize=(6.4, 2.8), dpi=110)
    a.hist(frac, bins=min(40, max(5, len(frac) // 5)), color="#3461c1")
    a.set_xlabel(f"share of tokens active (code > {active:g} × max)")
    a.set_ylabel("features")
    pos = codes[codes > 1e-6 * max(float(top.max(initial=0)), 1e-30)]
    if pos.size:
        b.hist(np.log10(pos), bins=60, color="#e8871e")
    b.set_xlabel("log10 code")
    b.set_ylabel("tokens × features")
    fig.suptitle("Code distribution", fontsize=10)
    for ax in (a, b):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_overlap(overlap, *, max_features: int = 200):
    """Heatmap of the feature × feature neuron overlap (Jaccard)."""
    plt = _plt()
    m = np.asarray(overlap, np.float32)[:max_features, :max_features]
    fig, ax = plt.subplots(figsize=(4.2, 3.6), dpi=110)
    im = ax.imshow(m, cmap="viridis", interpolation="nearest", vmin=0)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xlabel("feature")
    ax.set_ylabel("feature")
    shown = "" if len(overlap) <= max_features else f" (first {max_features})"
    ax.set_title(f"Neuron overlap (Jaccard){shown}", fontsize=10)
    fig.tight_layout()
    return fig


def figure_uri(fig, fmt: str = "png", *, close: bool = True) -> str:
    """The figure as a base64 data URI (PNG or SVG); closes it unless close=False."""
    plt = _plt()
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt)
    if close:
        plt.close(fig)
    mime = "image/svg+xml" if fmt == "svg" else "image/png"
    return f"data:{mime};base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def save_plots(figures: dict, out_dir: str | os.PathLike,
               formats: tuple[str, ...] = ("png", "svg"), *, close: bool = True
               ) -> list[Path]:
    """Writes each {name: Figure} as out_dir/name.<fmt>; returns the paths."""
    from snmf_jax._io import atomic_write_bytes
    plt = _plt()
    out = Path(out_dir)
    paths = []
    for name, fig in figures.items():
        for fmt in formats:
            buf = io.BytesIO()
            fig.savefig(buf, format=fmt)
            path = out / f"{name}.{fmt}"
            atomic_write_bytes(path, buf.getvalue())
            paths.append(path)
        if close:
            plt.close(fig)
    return paths
