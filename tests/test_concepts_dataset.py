"""The package's own concept dataset: shape, invariants, hierarchy, loader."""

import json
from collections import Counter
from pathlib import Path

import pytest

import snmf_jax.activations
from snmf_jax.activations import load_concepts
from snmf_jax.activations._dataset import concept_children

FILE = Path(snmf_jax.activations.__file__).resolve().parents[1] / "data" / "concepts.json"


@pytest.fixture(scope="module")
def raw():
    return json.loads(FILE.read_text(encoding="utf-8"))


def test_shape_and_counts(raw):
    assert raw["format_version"] == 1
    concepts = raw["concepts"]
    assert len(concepts) >= 30
    for c in concepts:
        assert set(c) == {"name", "kind", "parent", "family", "sentences"}, c["name"]
        assert len(c["sentences"]) >= 12, c["name"]
        assert c["kind"] in ("topical", "lexical", "language"), c["name"]
    names = [c["name"] for c in concepts]
    assert len(set(names)) == len(names)
    kinds = Counter(c["kind"] for c in concepts)
    assert kinds["topical"] >= 8 and kinds["lexical"] >= 8 and kinds["language"] >= 3


def test_sentences_are_clean_and_unique(raw):
    sentences = [s for c in raw["concepts"] for s in c["sentences"]]
    assert len(sentences) == len(set(sentences))
    lowered = [s.lower().strip(" .!?") for s in sentences]
    assert len(lowered) == len(set(lowered))  # no near-verbatim repeats either
    for s in sentences:
        assert isinstance(s, str) and s.strip() == s and len(s.split()) >= 4, s
        assert s[0].isupper() and s[-1] in ".!?", s


def test_hierarchy_references_existing_concepts(raw):
    by_name = {c["name"]: c for c in raw["concepts"]}
    for c in raw["concepts"]:
        # walk to the root; no cycles, every parent exists
        seen, node = set(), c
        while node["parent"] is not None:
            assert node["parent"] in by_name, (c["name"], node["parent"])
            assert node["name"] not in seen
            seen.add(node["name"])
            node = by_name[node["parent"]]
        assert c["family"] == node["name"], c["name"]
    children = Counter(c["parent"] for c in raw["concepts"] if c["parent"])
    families = [p for p, k in children.items() if k >= 2]
    assert len(families) >= 4, children
    for fam in ("time", "body", "vehicles", "languages"):
        assert fam in families


def test_load_concepts_labels_and_metadata(raw):
    ds = load_concepts()
    names = [c["name"] for c in raw["concepts"]]
    assert ds.label_names == tuple(names)
    assert len(ds) == sum(len(c["sentences"]) for c in raw["concepts"])
    for c in raw["concepts"]:
        k = names.index(c["name"])
        assert [t for t, l in zip(ds.texts, ds.labels) if l == k] == c["sentences"]
    assert ds.metadata["parents"]["weekdays"] == "time"
    assert ds.metadata["families"]["cars"] == "vehicles"
    assert ds.metadata["kinds"]["french"] == "language"
    assert sorted(concept_children(ds)["time"]) == ["months", "seasons", "weekdays"]


def test_load_concepts_subsets():
    ds = load_concepts(["cooking", "months"])
    assert ds.label_names == ("cooking", "months") and len(ds) == 24
    ds = load_concepts(families=["vehicles"])
    assert set(ds.label_names) == {"vehicles", "cars", "boats", "aircraft", "trains"}
    assert concept_children(ds) == {"vehicles": ["cars", "boats", "aircraft", "trains"]}
    assert concept_children(load_concepts(["cars"])) == {}
    with pytest.raises(ValueError, match=r"unknown concept\(s\) \['cookery'\]"):
        load_concepts(["cookery"])
    with pytest.raises(ValueError, match=r"unknown family/families \['cars'\]"):
        load_concepts(families=["cars"])


def test_no_sentence_is_copied_from_the_paper_data(raw, shared_dir):
    paper = shared_dir / "data" / "paper"
    theirs = set()
    for f in paper.glob("*.json"):
        data = json.loads(f.read_text(encoding="utf-8"))
        items = data.values() if isinstance(data, dict) else [[r.get("prompt", "")] for r in data]
        for group in items:
            theirs.update(s.strip().lower() for s in group if isinstance(s, str))
    ours = {s.strip().lower() for c in raw["concepts"] for s in c["sentences"]}
    assert not ours & theirs
