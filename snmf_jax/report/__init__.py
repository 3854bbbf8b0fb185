"""Report: the self-contained HTML feature browser, plots, Neuronpedia export.

    rep = report.feature_report(result.features, result.codes, acts, model=model,
                                layer=6, losses=result.losses)
    report.save_html(rep, "report.html")            # open by double-click
    report.save_neuronpedia(rep, "np/", result.features, result.codes, acts,
                             model=model)  # SAEDashboard's batch-<n>.json for Neuronpedia
"""

# pylint: disable=g-importing-member
# The Chromium helpers (report/_chromium.py) are test and benchmark tooling: private.

# The report: features, their contexts, plots, as one JSON-able mapping.
from snmf_jax.report._data import feature_report, overview_figures
from snmf_jax.report._plots import save_plots

# The self-contained HTML browser.
from snmf_jax.report._html import render_html, save_html

# The Neuronpedia (SAEDashboard) export.
from snmf_jax.report._neuronpedia import check_export_folder, save_neuronpedia

__all__ = [
    # The report
    "feature_report", "overview_figures", "save_plots",
    # HTML
    "render_html", "save_html",
    # Neuronpedia
    "save_neuronpedia", "check_export_folder",
]
