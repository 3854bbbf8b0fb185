"""Hostile inputs to interpretation, concept trees and the report.

Codes, features, labels and trees handed to the interpret functions (and the
JSON files the report reads) fail with one line naming what is wrong.
"""

import json
import math

import numpy as np
import pytest

from snmf_jax import interpret, report
from snmf_jax.activations import from_texts
from snmf_jax.factorize import fit_hierarchical


def _codes(n=30, k=4, seed=0):
    return np.random.default_rng(seed).random((n, k)).astype(np.float32)


def _feats(k=4, d=10, seed=0):
    return np.random.default_rng(seed).standard_normal((k, d)).astype(np.float32)


def _one_line(e):
    assert "\n" not in str(e), str(e)
    return str(e)


def _nan(a, where=(1, 1), value=np.nan):
    a = a.copy()
    a[where] = value
    return a


BAD_CODES = [
    (np.ones((30,), np.float32), "codes"),
    (_nan(_codes()), "codes"),
    (_nan(_codes(), value=np.inf), "codes"),
    (-_codes(), "codes"),
    (np.array([["a"] * 4] * 30), "codes"),
]


@pytest.mark.parametrize("codes, match", BAD_CODES)
def test_top_rows_bad_codes(codes, match):
    with pytest.raises(ValueError, match=match) as e:
        interpret.top_rows(codes, 3)
    _one_line(e.value)


@pytest.mark.parametrize("k", [0, -1, 2.5, None, math.nan])
def test_top_rows_bad_k(k):
    with pytest.raises(ValueError, match="k") as e:
        interpret.top_rows(_codes(), k)
    _one_line(e.value)


@pytest.mark.parametrize("codes, match", BAD_CODES)
def test_summarize_features_bad_codes(codes, match):
    with pytest.raises(ValueError, match=match):
        interpret.summarize_features(codes)


def test_summarize_features_labels_out_of_range():
    labels = np.zeros(30, np.int64)
    labels[3] = 7
    with pytest.raises(ValueError, match="labels"):
        interpret.summarize_features(_codes(), labels=labels, label_names=["a", "b"])
    with pytest.raises(ValueError, match="labels"):
        interpret.summarize_features(_codes(), labels=np.zeros(29, np.int64),
                                     label_names=["a"])


@pytest.mark.parametrize("codes, match", BAD_CODES[:3])
def test_label_association_bad_codes(codes, match):
    with pytest.raises(ValueError, match=match):
        interpret.label_association(codes, np.zeros(30, np.int64), ["a"])


def test_label_association_bad_labels():
    with pytest.raises(ValueError, match="label"):
        interpret.label_association(_codes(), np.full(30, 3), ["a", "b"])
    with pytest.raises(ValueError, match="labels"):
        interpret.label_association(_codes(), np.full(30, 0.5), ["a", "b"])


@pytest.fixture(scope="module")
def acts():
    texts = ["one two three", "four five six seven"]
    return from_texts(texts)


def _six_tokens(n):
    """Activations of one 6-character document, a token per character."""
    from snmf_jax.activations import Activations
    return Activations(X=np.zeros((n, 3), np.float32), doc_ids=np.zeros(n, np.int32),
                       positions=np.arange(n, dtype=np.int32),
                       token_ids=np.arange(n, dtype=np.int32),
                       offsets=np.stack([np.arange(n), np.arange(n) + 1], 1).astype(np.int32),
                       texts=("abcdef",), labels=None, label_names=None, layer=0, site="s",
                       model_name="m")


@pytest.mark.parametrize("kw, match", [
    (dict(k=0), "k"), (dict(k=2.5), "k"), (dict(window=-1), "window"),
    (dict(dedup_window=-2), "dedup_window"), (dict(features=[0, 9]), "features"),
    (dict(features=[-1]), "features"),
])
def test_top_contexts_bad_arguments(kw, match):
    n = 6
    data = _six_tokens(n)
    with pytest.raises(ValueError, match=match) as e:
        interpret.top_contexts(_codes(n), data, **kw)
    _one_line(e.value)


@pytest.mark.parametrize("features, match", [
    (np.ones(10), "features"), (_nan(_feats()), "features"),
    (_nan(_feats(), value=np.inf), "features"),
])
def test_neuron_functions_bad_features(features, match):
    for fn in (interpret.neuron_overlap, interpret.feature_neurons, interpret.shared_neurons):
        with pytest.raises(ValueError, match=match):
            fn(features)


@pytest.mark.parametrize("kw, match", [
    (dict(tol=-0.1), "tol"), (dict(tol=math.nan), "tol"), (dict(kind="x"), "kind"),
])
def test_neuron_overlap_bad_settings(kw, match):
    with pytest.raises(ValueError, match=match) as e:
        interpret.neuron_overlap(_feats(), **kw)
    _one_line(e.value)


def test_feature_neurons_bad_max_neurons():
    for bad in (0, -1, 2.5):
        with pytest.raises(ValueError, match="max_neurons"):
            interpret.feature_neurons(_feats(), max_neurons=bad)


def test_group_composition_bad_group():
    for group in ([0], [0, 0], [0, 9], [-1, 2]):
        with pytest.raises(ValueError, match="group"):
            interpret.group_composition(_feats(), group)


# -- concept trees --------------------------------------------------------------

@pytest.fixture(scope="module")
def hier():
    x = np.random.default_rng(0).standard_normal((40, 12)).astype(np.float32)
    return fit_hierarchical(x, [4, 2], sparsity=0.5, progress=False, max_iter=3, restarts=1)


@pytest.mark.parametrize("kw, match", [
    (dict(threshold=math.nan), "threshold"), (dict(threshold=-1.0), "threshold"),
    (dict(max_children=0), "max_children"), (dict(n_tokens=-1), "n_tokens"),
    (dict(neuron_tol=math.nan), "neuron_tol"), (dict(tokens=["a"] * 3), "tokens"),
])
def test_concept_tree_bad_arguments(hier, kw, match):
    with pytest.raises(ValueError, match=match) as e:
        interpret.concept_tree(hier, **kw)
    _one_line(e.value)


@pytest.mark.parametrize("text", ["{broken", "[]", "null", '{"format": "x"}'])
def test_load_tree_bad_file_names_it(tmp_path, text):
    f = tmp_path / "tree.json"
    f.write_text(text)
    with pytest.raises(ValueError) as e:
        interpret.load_tree(f)
    assert "tree.json" in _one_line(e.value)


@pytest.mark.parametrize("edit", [
    lambda t: t.pop("nodes"), lambda t: t.pop("roots"),
    lambda t: t["nodes"][0].pop("id"), lambda t: t["nodes"][0].update(children="x"),
    lambda t: t["nodes"].append(7), lambda t: t.update(nodes={}),
])
def test_check_tree_damaged_trees(hier, edit):
    tree = json.loads(json.dumps(interpret.concept_tree(hier)))
    edit(tree)
    with pytest.raises(ValueError) as e:
        interpret.check_tree(tree)
    _one_line(e.value)


# -- report -----------------------------------------------------------------------

@pytest.mark.parametrize("kw, match", [
    (dict(k=0), "k"), (dict(window=-1), "window"), (dict(n_tokens=-1), "n_tokens"),
    (dict(max_neurons=0), "max_neurons"),
    (dict(descriptions=[1, 2]), "descriptions"), (dict(descriptions="abc"), "descriptions"),
    (dict(scores="x"), "scores"), (dict(scores=[1.0]), "scores"),
])
def test_feature_report_bad_arguments(kw, match):
    n = 6
    data = _six_tokens(n)
    with pytest.raises(ValueError, match=match) as e:
        report.feature_report(_feats(d=3), _codes(n), data, **kw)
    _one_line(e.value)


def test_feature_report_nonfinite_inputs():
    n = 6
    data = _six_tokens(n)
    with pytest.raises(ValueError, match="features"):
        report.feature_report(_nan(_feats(d=3)), _codes(n), data)
    with pytest.raises(ValueError, match="codes"):
        report.feature_report(_feats(d=3), _nan(_codes(n)), data)
