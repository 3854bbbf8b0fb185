"""Concept trees: thresholds, labels, neuron reuse, JSON format, text rendering."""

import json

import numpy as np
import pytest

from snmf_jax.factorize import HierarchicalResult
from snmf_jax.interpret._tree import _family_neurons
from snmf_jax.interpret import (check_tree, concept_tree, format_tree, load_tree,
                                save_tree, token_strings, top_tokens)


def _hand_built():
    """Two parents over five level-0 features, with known links and supports."""
    d = 12
    f0 = np.zeros((5, d), np.float32)
    f0[0, [0, 1, 2]] = 1.0   # children of parent 0 share neurons 0, 1
    f0[1, [0, 1, 3]] = 1.0
    f0[2, [0, 1, 4]] = 1.0
    f0[3, [6, 7]] = 1.0      # child of parent 1
    f0[4, [8]] = 1.0         # weak link to parent 0 only
    f1 = np.zeros((2, d), np.float32)
    f1[0, [0, 1]] = 1.0
    f1[1, [6, 7]] = 1.0
    w = np.array([[1.0, 0], [0.9, 0], [0.5, 0], [0, 1.0], [0.05, 0]], np.float32)
    # Tokens: row i expresses level-0 feature i % 5 with strength growing in i.
    codes = np.zeros((10, 5), np.float32)
    codes[np.arange(10), np.arange(10) % 5] = np.arange(1, 11)
    tokens = [f" tok{i % 5}{'' if i < 5 else 'b'}" for i in range(10)]
    h = HierarchicalResult(codes, (f0, f1), (w,), (np.zeros(1), np.zeros(1)), None, {})
    return h, tokens


def test_children_threshold_weights_and_neurons():
    h, tokens = _hand_built()
    tree = concept_tree(h, tokens)
    check_tree(tree)
    nodes = {n["id"]: n for n in tree["nodes"]}
    assert tree["roots"] == ["1:0", "1:1"] and tree["ranks"] == [5, 2]
    # Unit links: W·‖Φ1‖/‖Φ0‖; 0:4 falls under 0.15 × the largest and is dropped.
    kids = [c["id"] for c in nodes["1:0"]["children"]]
    assert kids == ["0:0", "0:1", "0:2"]
    assert nodes["1:0"]["children"][0]["weight"] == 1.0
    assert nodes["1:0"]["shared_neurons"] == [0, 1]
    assert nodes["1:0"]["exclusive_neurons"] == {"0:0": [2], "0:1": [3], "0:2": [4]}
    assert [c["id"] for c in nodes["1:1"]["children"]] == ["0:3"]
    assert nodes["0:0"]["children"] == [] and "0:4" not in nodes
    # Labels: tokens by collapsed codes, strongest first, distinct, stripped.
    assert nodes["0:1"]["top_tokens"] == ["tok1b", "tok1"]
    # Parent 0 through C₀W: row 6 gives 7·0.9 = 6.3, row 5 gives 6·1, row 7 8·0.5, ...
    assert nodes["1:0"]["top_tokens"] == ["tok1b", "tok0b", "tok2b", "tok1", "tok2", "tok0",
                                          "tok4b", "tok4"]
    assert nodes["1:0"]["label"] == "tok1b, tok0b, tok2b, ..."


def test_max_children_and_threshold_options():
    h, tokens = _hand_built()
    tree = concept_tree(h, tokens, max_children=2)
    assert [c["id"] for c in tree["nodes"][0]["children"]] == ["0:0", "0:1"]
    tree = concept_tree(h, tokens, threshold=0.0, max_children=4)
    assert len(tree["nodes"][0]["children"]) == 4
    with pytest.raises(ValueError, match="threshold must be in"):
        concept_tree(h, tokens, threshold=2.0)
    with pytest.raises(ValueError, match="one string per row"):
        concept_tree(h, tokens[:3])


def test_json_format_and_roundtrip(tmp_path):
    h, tokens = _hand_built()
    tree = concept_tree(h, tokens)
    save_tree(tree, tmp_path / "tree.json")
    raw = json.loads((tmp_path / "tree.json").read_text())
    assert raw["format"] == "snmf-jax/concept-tree" and raw["version"] == 1
    assert set(raw["nodes"][0]) >= {"id", "level", "index", "top_tokens", "label", "children",
                                    "shared_neurons", "exclusive_neurons"}
    assert load_tree(tmp_path / "tree.json") == tree
    broken = dict(tree, nodes=tree["nodes"][:1])
    with pytest.raises(ValueError, match="missing child"):
        check_tree(broken)


def test_format_tree_text():
    h, tokens = _hand_built()
    text = format_tree(concept_tree(h, tokens))
    lines = text.splitlines()
    assert lines[0].startswith("1:0  tok")
    assert "[children share 2 neurons]" in lines[0]
    assert lines[1].startswith("├─ 0:0 (1.00)") and "[1 own neurons]" in lines[1]
    assert lines[3].startswith("└─ 0:2 (")
    assert lines[4].startswith("1:1")


def test_family_neurons_tolerance_is_relative_to_each_feature():
    f = np.array([[1.0, 0.5, 0.01, 0], [1.0, 0.0, 0.02, 0.6]])
    assert _family_neurons(f, 0.0) == ([0, 2], [[1], [3]])
    assert _family_neurons(f, 0.1) == ([0], [[1], [3]])
    assert _family_neurons(f * [[100.0], [0.01]], 0.1) == ([0], [[1], [3]])  # scale-free
    assert _family_neurons(f[:1], 0.1) == ([0, 1], [[0, 1]])  # an only child


def test_token_strings_and_top_tokens():
    class Acts:  # the fields of Activations that matter
        texts = ("Monday morning", "in May")
        doc_ids = np.array([0, 0, 1, 1])
        offsets = np.array([[0, 6], [6, 14], [0, 2], [2, 6]])
    assert token_strings(Acts()) == ["Monday", " morning", "in", " May"]
    assert top_tokens(np.array([0.0, 3.0, 2.0, -1.0]), ["a", " b", "b", "c"]) == ["b"]
