"""Concept trees from a hierarchical SNMF: links, labels and neuron reuse.

A parent (a level-i feature) links to the children (level i−1 features)
whose unit link is at least `threshold` × the parent's largest unit link,
at most `max_children` of them, strongest first. Every node is labelled by
the tokens that express it most through the collapsed codes C₀W₁…W_i. For
a node with children, the neurons every child uses (shared core) and those
used by one child alone (exclusive) show how the family reuses neurons.

The tree is a plain dict in the "snmf-jax/concept-tree" format (see
CONTRACTS.md), which the feature browser draws; `format_tree` renders it
as an indented text tree.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np

from snmf_jax import _checks, _io
from snmf_jax._text import printable
from snmf_jax.interpret._neurons import group_composition

TREE_FORMAT = "snmf-jax/concept-tree"
TREE_VERSION = 1


def token_strings(source) -> list[str]:
    """The text of every row's token, for labelling features.

    Args:
      source: a list of strings (returned as is), an `Activations` (token
        spans of its texts) or an `ActivationStore` (same, read from disk).

    Returns:
      One string per row.
    """
    if isinstance(source, (list, tuple)):
        return [str(t) for t in source]
    texts = source.texts
    if hasattr(source, "offsets"):  # Activations
        doc_ids, offsets = source.doc_ids, source.offsets
    else:  # ActivationStore
        prov = source.provenance_rows(0, source.n_rows)
        doc_ids, offsets = prov.doc_ids, prov.offsets
    return [texts[int(d)][int(a):int(b)] for d, (a, b) in zip(doc_ids, offsets)]


def top_tokens(codes: np.ndarray, tokens: Sequence[str], k: int = 8) -> list[str]:
    """The k distinct tokens (stripped) with the largest positive codes, largest first."""
    order = np.argsort(-codes, kind="stable")
    out: list[str] = []
    for i in order:
        if codes[i] <= 0 or len(out) >= k:
            break
        t = tokens[i].strip()
        if t and t not in out:
            out.append(t)
    return out


def _family_neurons(child_features: np.ndarray, neuron_tol: float
                    ) -> tuple[list[int], list[list[int]]]:
    """Neurons all children share and those exclusive to each (`group_composition`).

    A neuron belongs to a child when |φ_j| > neuron_tol · max|φ|: the tolerance
    is relative to each feature's largest weight, so trees do not depend on
    feature scale.
    """
    a = np.abs(np.asarray(child_features, np.float64))  # (m, d)
    top = a.max(axis=1, keepdims=True)
    unit = np.divide(a, top, out=np.zeros_like(a), where=top > 0)
    if len(unit) == 1:  # an only child shares, and owns, its whole support
        own = np.flatnonzero(unit[0] > neuron_tol).tolist()
        return own, [own]
    comp = group_composition(unit, range(len(unit)), tol=neuron_tol)
    return comp.shared.tolist(), [comp.exclusive[j].tolist() for j in range(len(unit))]


def concept_tree(h, tokens: Sequence[str] | None = None, *, threshold: float = 0.15,
                 max_children: int = 4, n_tokens: int = 8, neuron_tol: float = 0.0
                 ) -> dict[str, Any]:
    """Builds the concept tree of a hierarchy as a JSON-able dict.

    Args:
      h: a HierarchicalResult (greedy or fine-tuned: the tree is drawn from
        what it holds).
      tokens: one string per row of X, to label nodes (see `token_strings`);
        None leaves labels empty.
      threshold: a child is kept when its unit link is ≥ threshold × the
        parent's largest.
      max_children: children per node at most (strongest kept).
      n_tokens: top tokens listed per node.
      neuron_tol: a neuron belongs to a child when |φ_j| > neuron_tol ·
        max|φ| (0: the winner-take-all support).

    Returns:
      {"format", "version", "ranks", "roots", "nodes"} in the
      "snmf-jax/concept-tree" format; roots are the top level's features,
      and nodes every feature reachable from them.
    """
    _checks.real("threshold", threshold, lo=0, hi=1)
    _checks.integer("max_children", max_children, lo=1)
    _checks.integer("n_tokens", n_tokens, lo=0)
    _checks.real("neuron_tol", neuron_tol, lo=0)
    top_level = h.num_levels - 1
    if tokens is not None and h.codes is not None and len(tokens) != h.codes.shape[0]:
        raise ValueError(f"tokens must have one string per row of X ({h.codes.shape[0]}); "
                         f"got {len(tokens)}")
    children: dict[str, list[tuple[str, float]]] = {}
    for level in range(top_level, 0, -1):
        unit = h.unit_links(level)  # (r_{level-1}, r_level)
        for p in range(h.ranks[level]):
            col = unit[:, p]
            top = float(col.max())
            if top <= 0:
                children[f"{level}:{p}"] = []
                continue
            keep = np.flatnonzero(col >= threshold * top)
            keep = keep[np.argsort(-col[keep], kind="stable")][:max_children]
            children[f"{level}:{p}"] = [(f"{level - 1}:{c}", float(col[c] / top)) for c in keep]

    roots = [f"{top_level}:{p}" for p in range(h.ranks[top_level])]
    seen, order, stack = set(), [], list(reversed(roots))
    while stack:  # depth first, so nodes are listed as the text tree reads
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        order.append(node)
        stack.extend(c for c, _ in reversed(children.get(node, [])))

    collapsed = {}
    nodes = []
    for node in order:
        level, index = map(int, node.split(":"))
        entry: dict[str, Any] = {"id": node, "level": level, "index": index,
                                 "top_tokens": [], "label": "", "children": []}
        if tokens is not None and h.codes is not None:
            if level not in collapsed:
                collapsed[level] = h.collapsed_codes(level)
            top = top_tokens(collapsed[level][:, index], tokens, n_tokens)
            entry["top_tokens"] = top
            entry["label"] = ", ".join(top[:3]) + (", ..." if len(top) > 3 else "")
        kids = children.get(node, [])
        if kids:
            entry["children"] = [{"id": c, "weight": round(w, 4)} for c, w in kids]
            feats = np.stack([h.features[level - 1][int(c.split(":")[1])] for c, _ in kids])
            shared, excl = _family_neurons(feats, neuron_tol)
            entry["shared_neurons"] = shared
            entry["exclusive_neurons"] = {c: e for (c, _), e in zip(kids, excl)}
        nodes.append(entry)
    return {"format": TREE_FORMAT, "version": TREE_VERSION, "ranks": list(h.ranks),
            "roots": roots, "nodes": nodes}


def format_tree(tree: dict[str, Any], *, max_depth: int | None = None,
                show_neurons: bool = True) -> str:
    """An indented text rendering of a concept tree.

    Each line: id, link weight (relative to the parent's strongest), label;
    a parent also shows how many neurons its children share and, per child,
    how many are its own. A node met again under a second parent is printed
    once more without its subtree ("(see above)").
    """
    check_tree(tree)
    by_id = {n["id"]: n for n in tree["nodes"]}
    lines: list[str] = []
    printed: set[str] = set()

    def walk(node_id: str, prefix: str, last: bool, weight: float | None,
             excl: list[int] | None, depth: int, root: bool) -> None:
        n = by_id[node_id]
        head = "" if root else prefix + ("└─ " if last else "├─ ")
        text = printable(node_id)  # ids and labels come from a file: no controls
        if weight is not None:
            text += f" ({weight:.2f})"
        text += f"  {printable(n.get('label') or '-')}"
        if show_neurons and excl is not None:
            text += f"  [{len(excl)} own neurons]"
        if show_neurons and n["children"]:
            text += f"  [children share {len(n.get('shared_neurons', []))} neurons]"
        again = node_id in printed and n["children"]
        lines.append(head + text + ("  (see above)" if again else ""))
        if again or (max_depth is not None and depth >= max_depth):
            return
        printed.add(node_id)
        kids = n["children"]
        ex = n.get("exclusive_neurons", {})
        child_prefix = "" if root else prefix + ("   " if last else "│  ")
        for j, c in enumerate(kids):
            walk(c["id"], child_prefix, j == len(kids) - 1, c["weight"], ex.get(c["id"]),
                 depth + 1, False)

    for r in tree["roots"]:
        walk(r, "", True, None, None, 0, True)
    return "\n".join(lines)


def check_tree(tree: Any, n_features: int | None = None) -> None:
    """Raises ValueError naming the first problem if `tree` is not a valid concept tree.

    Args:
      tree: a dict in the "snmf-jax/concept-tree" format.
      n_features: when given, level-0 indices must be rows of a (n_features, d)
        feature matrix (the features a report lists).
    """
    if not isinstance(tree, dict) or tree.get("format") != TREE_FORMAT:
        raise ValueError(f"not a concept tree: format must be {TREE_FORMAT!r}")
    if tree.get("version") != TREE_VERSION:
        raise ValueError(f"concept tree version must be {TREE_VERSION}; got {tree.get('version')!r}")
    nodes, roots = tree.get("nodes"), tree.get("roots")
    if not isinstance(nodes, list) or not isinstance(roots, list):
        raise ValueError("concept tree: nodes and roots must be lists; got "
                         f"{type(nodes).__name__} and {type(roots).__name__}")
    for n in nodes:
        if not (isinstance(n, dict) and {"id", "level", "index", "children"} <= set(n)
                and isinstance(n["children"], list)
                and all(isinstance(c, dict) and "id" in c for c in n["children"])):
            raise ValueError(f"concept tree: each node must be an object with id, level, "
                             f"index and a list of children {{id, ...}}; got {n!r:.80}")
    ids = {n["id"] for n in nodes}
    for n in nodes:
        if n["id"] != f"{n['level']}:{n['index']}":
            raise ValueError(f"node id {n['id']!r} does not match level:index")
        for c in n["children"]:
            if c["id"] not in ids:
                raise ValueError(f"node {n['id']} names a missing child {c['id']!r}")
        if n_features is not None and n["level"] == 0 and not 0 <= int(n["index"]) < n_features:
            raise ValueError(f"level-0 node {n['id']!r} has index {n['index']}; the report has "
                             f"{n_features} features")
    missing = [r for r in roots if r not in ids]
    if missing:
        raise ValueError(f"roots {missing} are not among the nodes")


def save_tree(tree: dict[str, Any], path: str | os.PathLike) -> None:
    """Writes a concept tree as JSON, atomically."""
    check_tree(tree)
    _io.write_json(path, tree)


def load_tree(path: str | os.PathLike) -> dict[str, Any]:
    """Reads and checks a concept tree written by `save_tree`."""
    tree = _io.read_json(path)
    try:
        check_tree(tree)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    return tree
