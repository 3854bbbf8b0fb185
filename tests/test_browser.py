"""The feature browser in headless Chromium: list, search, detail panel, tree, screenshot.

Skipped when no chromium binary is installed (CI installs Debian's).
"""

import re

import numpy as np
import pytest

from snmf_jax import report
from snmf_jax.report import _chromium

pytestmark = pytest.mark.skipif(_chromium.find_chromium() is None,
                                reason="chromium is not installed (apt-get install chromium)")

K = 30
TREE = {"format": "snmf-jax/concept-tree", "version": 1, "ranks": [K, 3, 1], "roots": ["2:0"],
        "nodes": [{"id": "2:0", "level": 2, "index": 0, "label": "time words",
                   "children": [{"id": "1:2", "weight": 0.8}]},
                  {"id": "1:2", "level": 1, "index": 2, "label": "weekdays",
                   "children": [{"id": "0:7", "weight": 0.9}, {"id": "0:8", "weight": 0.5}]},
                  {"id": "0:7", "level": 0, "index": 7, "children": []},
                  {"id": "0:8", "level": 0, "index": 8, "children": []}]}


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    from snmf_jax.activations import Activations
    rng = np.random.default_rng(0)
    words = ["the", "cat", "sat", "Monday", "red", "blue", "and"]
    texts, doc_ids, offs, toks = [], [], [], []
    for d in range(40):
        w = list(rng.choice(words, size=12))
        text, pos = "", []
        for x in w:
            start = len(text) + (1 if text else 0)
            text += (" " if text else "") + x
            pos.append((start, len(text)))
        texts.append(text)
        doc_ids += [d] * 12
        offs += pos
        toks += [words.index(x) for x in w]
    n = len(doc_ids)
    acts = Activations(X=np.zeros((n, 2), np.float32), doc_ids=np.asarray(doc_ids, np.int32),
                       positions=np.zeros(n, np.int32), token_ids=np.asarray(toks, np.int32),
                       offsets=np.asarray(offs, np.int32), texts=tuple(texts))
    codes = np.maximum(rng.standard_normal((n, K)), 0).astype(np.float32)
    feats = (rng.standard_normal((K, 64)) * (rng.uniform(size=(K, 64)) < 0.1)).astype(np.float32)
    desc = {i: f"feature about zebra{i % 3}" for i in range(0, K, 2)}  # zebra0: i = 0, 6, 12, ...
    rep = report.feature_report(feats, codes, acts, losses=np.geomspace(3, 1, 20), k=25,
                                descriptions=desc, tree=TREE,
                                steered={7: [{"text": "a steered sample", "sign": "+"}]})
    path = tmp_path_factory.mktemp("browser") / "report.html"
    report.save_html(rep, path)
    return path


def _entries(dom):
    return [int(i) for i in re.findall(r'<div class="feat[^"]*" data-feature="(\d+)"', dom)]


def test_list_shows_every_feature(page):
    dom = _chromium.dump_dom(page)
    assert 'data-ready="1"' in dom
    assert sorted(_entries(dom)) == list(range(K))
    assert re.search(r'<input type="search"', dom)


def test_search_filters_the_list(page):
    dom = _chromium.dump_dom(page, "q=zebra0")
    assert sorted(_entries(dom)) == [i for i in range(0, K, 2) if i % 3 == 0]
    dom = _chromium.dump_dom(page, "q=zebra0%20nothing-like-this")  # every term must match
    assert _entries(dom) == [] and '<div class="feat empty-list">no feature matches' in dom
    dom = _chromium.dump_dom(page, "q=%23" + "7")  # "#7": the index
    assert 7 in _entries(dom) and len(_entries(dom)) < K


def test_detail_panel_contexts_and_hierarchy(page, tmp_path):
    dom = _chromium.dump_dom(page, "f=7")
    assert "Feature #7" in dom
    # The first 10 contexts are rendered, the rest on demand.
    assert len(re.findall(r'<div class="ctx"><span class="v">\d', dom)) == 10
    assert "Place in the hierarchy" in dom and "weekdays" in dom and "time words" in dom
    assert "a steered sample" in dom
    assert re.search(r'siblings: <a class="fl" data-goto="8"', dom)
    dom = _chromium.dump_dom(page, "q=zebra")  # a search without a feature: the overview
    assert "Concept tree" in dom and len(re.findall(r'<img alt="\w+" src="data:image/png', dom)) == 3
    png = _chromium.screenshot(page, tmp_path / "feature7.png", "f=7")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
