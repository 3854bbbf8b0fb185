"""Report: the self-contained HTML feature browser, plots, Neuronpedia export.

    rep = report.feature_report(result.features, result.codes, acts, model=model,
                                layer=6, losses=result.losses)
    report.write_html(rep, "report.html")            # open by double-click
    report.write_neuronpedia(rep, "np/", result.features, result.codes, acts,
                             model=model)  # SAEDashboard's batch-<n>.json for Neuronpedia
"""

from snmf_jax.report._chromium import dump_dom, find_chromium, screenshot
from snmf_jax.report._data import feature_report, overview_figures
from snmf_jax.report._html import compact, render_html, write_html
from snmf_jax.report._neuronpedia import (check_export_folder, neuronpedia_batches,
                                          write_neuronpedia)
from snmf_jax.report._plots import (figure_uri, plot_code_distribution, plot_losses,
                                    plot_overlap, save_plots)

__all__ = [
    "dump_dom", "find_chromium", "screenshot",
    "feature_report", "overview_figures",
    "compact", "render_html", "write_html",
    "check_export_folder", "neuronpedia_batches", "write_neuronpedia",
    "figure_uri", "plot_code_distribution", "plot_losses", "plot_overlap", "save_plots",
]
