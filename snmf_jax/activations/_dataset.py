"""The package's own labelled concept dataset (snmf_jax/data/concepts.json).

35 concepts x 12 sentences, written for snmf-jax: topical concepts (cooking,
astronomy, programming, ...), lexical ones (numbers, colours, emotions,
weekdays, ...), four languages written about in English, and hierarchical
families (time -> weekdays / months / seasons, body -> face / limbs / organs,
vehicles -> cars / boats / aircraft / trains, animals -> birds / insects /
fish, languages -> french / japanese / spanish / german).

File format::

    {"name": ..., "format_version": 1, "description": ..., "license": ...,
     "concepts": [{"name": str, "kind": "topical" | "lexical" | "language",
                   "parent": str | null, "family": str,
                   "sentences": [str, ...]}, ...]}

`parent` is the concept one level up (null at a root; always another concept
of the file) and `family` the root of the concept's tree, so hierarchical
SNMF can be scored against a known tree.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from snmf_jax.activations._text import TextDataset

_FILE = "concepts.json"


def _raw() -> dict:
    path = Path(__file__).resolve().parents[1] / "data" / _FILE
    return json.loads(path.read_text(encoding="utf-8"))


def load_concepts(concepts: Iterable[str] | None = None, *,
                  families: Iterable[str] | None = None) -> TextDataset:
    """Loads the package's concept dataset as a labelled `TextDataset`.

    Args:
      concepts: keep only these concept names (default: all).
      families: keep only concepts of these families (roots), e.g.
        ``["time", "vehicles"]``.

    Returns:
      A `TextDataset` with one document per sentence, labelled by concept
      (label_names in file order). Its metadata holds "parents" (concept ->
      parent or None), "families" (concept -> root), "kinds" (concept ->
      kind) and "source".
    """
    raw = _raw()
    entries = raw["concepts"]
    names = [c["name"] for c in entries]
    if concepts is not None:
        want = list(concepts)
        unknown = [c for c in want if c not in names]
        if unknown:
            raise ValueError(
                f"unknown concept(s) {unknown}; available: {names}")
        entries = [c for c in entries if c["name"] in set(want)]
    if families is not None:
        fams = list(families)
        known = sorted({c["family"] for c in raw["concepts"]})
        unknown = [f for f in fams if f not in known]
        if unknown:
            raise ValueError(f"unknown family/families {unknown}; available: {known}")
        entries = [c for c in entries if c["family"] in set(fams)]
    if not entries:
        raise ValueError("the selection of concepts is empty")
    texts, labels = [], []
    for k, c in enumerate(entries):
        texts.extend(c["sentences"])
        labels.extend([k] * len(c["sentences"]))
    return TextDataset(
        tuple(texts), tuple(labels), tuple(c["name"] for c in entries),
        metadata={
            "source": f"snmf_jax/data/{_FILE}",
            "format": "snmf-jax-concepts",
            "parents": {c["name"]: c["parent"] for c in entries},
            "families": {c["name"]: c["family"] for c in entries},
            "kinds": {c["name"]: c["kind"] for c in entries},
        })


def concept_children(dataset: TextDataset) -> dict[str, list[str]]:
    """Parent concept -> its child concepts, from a dataset's "parents" metadata.

    Only parents present in the dataset appear (a child whose parent was
    filtered out becomes a root).
    """
    parents = dataset.metadata.get("parents")
    if parents is None:
        raise ValueError("the dataset has no concept hierarchy (metadata['parents'])")
    children: dict[str, list[str]] = {}
    for child, parent in parents.items():
        if parent is not None and parent in parents:
            children.setdefault(parent, []).append(child)
    return children
