"""The feature report: its data, the page's JSON and plots (the Neuronpedia export:
tests/test_neuronpedia.py)."""

import json
import re

import numpy as np
import pytest

from snmf_jax import report

from conftest import toy_report_data
from snmf_jax.report import _html

TREE = {"format": "snmf-jax/concept-tree", "version": 1, "ranks": [6, 2], "roots": ["1:0"],
        "nodes": [{"id": "1:0", "level": 1, "index": 0, "top_tokens": ["Monday"],
                   "label": "days", "children": [{"id": "0:1", "weight": 0.9},
                                                  {"id": "0:4", "weight": 0.3}],
                   "shared_neurons": [1], "exclusive_neurons": {"0:1": [2], "0:4": []}},
                  {"id": "0:1", "level": 0, "index": 1, "children": []},
                  {"id": "0:4", "level": 0, "index": 4, "children": []}]}


def test_feature_report_gathers_every_part():
    acts, codes, feats = toy_report_data()
    rep = report.feature_report(feats, codes, acts, losses=np.geomspace(5, 1, 10), k=4,
                                window=3, descriptions={2: "planted"}, tree=TREE,
                                steered={2: ["text a", {"text": "text b", "sign": "-"}]},
                                scores={2: {"concept": 1.5}}, plots=False)
    json.dumps(rep, allow_nan=False)  # JSON-able, no NaN
    assert len(rep["features"]) == 6 and rep["tree"]["roots"] == ["1:0"]
    f = rep["features"][2]
    assert f["description"] == "planted" and f["scores"] == {"concept": 1.5}
    assert f["steered"] == [{"text": "text a"}, {"text": "text b", "sign": "-"}]
    assert [c["row"] for c in f["contexts"]] == list(np.argsort(-codes[:, 2])[:4])
    top = codes[:, 2].max()
    assert f["frac_active"] == pytest.approx((codes[:, 2] > 0.1 * top).mean(), rel=1e-3)
    assert f["n_neurons"] == int((feats[2] != 0).sum())
    assert [n for n, _ in f["neurons"]] == list(np.argsort(-np.abs(feats[2]))[:f["n_neurons"]])
    assert len(f["labels"]) == 3 and set(rep["label_best"]) == {"x", "y", "z"}
    overlap = (feats != 0).astype(int) @ (feats != 0).astype(int).T
    for j, cnt, _ in f["overlaps"]:
        assert cnt == overlap[2, j] and j != 2
    assert "pos" not in f  # no model, no vocabulary projection


def test_bad_extras_fail_early():
    acts, codes, feats = toy_report_data()
    with pytest.raises(ValueError, match="descriptions has feature index 9"):
        report.feature_report(feats, codes, acts, descriptions={9: "x"}, plots=False)
    with pytest.raises(ValueError, match="missing child"):
        bad = dict(TREE, nodes=[dict(TREE["nodes"][0], children=[{"id": "0:99", "weight": 1}])])
        report.feature_report(feats, codes, acts, tree=bad, plots=False)
    with pytest.raises(ValueError, match="must agree on K"):
        report.feature_report(feats[:3], codes, acts, plots=False)


def test_page_embeds_one_json_blob_safely():
    acts, codes, feats = toy_report_data(evil=True)
    rep = report.feature_report(feats, codes, acts, k=5, plots=False)
    page = report.render_html(rep)
    assert page.count("</script>") == 2  # the blob and the code; a token cannot close it
    blob = re.search(r'<script type="application/json" id="data">(.*?)</script>', page, re.S)
    data = json.loads(blob.group(1))
    assert data == json.loads(json.dumps(_html.compact(rep)))
    f = data["features"][0]
    c = f["c"][0]
    assert c[3] == rep["features"][0]["contexts"][0]["value"] and max(c[1]) <= 99
    assert [data["strings"][t] for t in c[0]] == rep["features"][0]["contexts"][0]["tokens"]
    assert c[1][c[2]] == round(99 * c[3] / f["mx"])  # shading relative to the largest code
    assert "http://" not in page and "https://" not in page  # nothing from the network


def test_plots_written_as_png_and_svg(tmp_path):
    acts, codes, feats = toy_report_data()
    figs = report.overview_figures(codes, feats, losses=np.geomspace(5, 1, 10))
    paths = report.save_plots(figs, tmp_path)
    assert sorted(p.name for p in paths) == sorted(
        f"{n}.{e}" for n in ("loss", "codes", "overlap") for e in ("png", "svg"))
    assert (tmp_path / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"<svg" in (tmp_path / "overlap.svg").read_bytes()[:2000]
    rep = report.feature_report(feats, codes, acts, losses=np.ones(3))
    assert set(rep["plots"]) == {"loss", "codes", "overlap"}
    assert all(u.startswith("data:image/png;base64,") for u in rep["plots"].values())
