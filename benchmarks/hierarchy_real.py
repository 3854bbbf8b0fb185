"""Hierarchical SNMF of SmolLM2-135M's MLP activations on two concept sets.

Exports the `mlp_hidden` activations of layers 6 and 15 (of 30; one pass) over (a) the package's
concept dataset (hierarchical families: time, body, vehicles, animals,
languages) and (b) the paper's hierarchical concepts
(../shared/data/paper/hier_concepts.json, read in place), keeps the rows of
the tokens that name a concept (see `concept_rows`), fits a 3-level
hierarchy, fine-tunes it jointly with Adam, and writes the concept trees
(text and JSON) to benchmarks/results/. Each node's text line ends with
<concept share>: the concept label most common among the 20 tokens
expressing it most, and its share, so families can be read off the tree.

    python benchmarks/hierarchy_real.py            # ~5 min on 2 CPU cores
"""

from __future__ import annotations

import argparse
import collections
import re
import time
from pathlib import Path

import numpy as np

import snmf_jax as sj
from snmf_jax import interpret
from snmf_jax.activations import load_dataset

HERE = Path(__file__).resolve().parent
PAPER = HERE.parent.parent / "shared" / "data" / "paper" / "hier_concepts.json"


def concept_rows(acts, dataset: str, doc_labels: np.ndarray) -> np.ndarray:
    """The rows of the tokens that name a concept (the rest is function words).

    "concepts": tokens (alphabetic, >= 3 letters, seen twice or more) of
    which >= 60 % of the occurrences are in one concept's sentences.
    "hier_concepts": the tokens overlapping the concept's head word (its
    label's last word, matched case-insensitively) in its own sentences.
    """
    toks = interpret.token_strings(acts)
    if dataset == "concepts":
        key = [t.strip().lower() for t in toks]
        count = collections.Counter(key)
        by = collections.defaultdict(collections.Counter)
        for k, l in zip(key, acts.labels):
            by[k][int(l)] += 1
        ok = lambda k: (re.fullmatch(r"[a-z]{3,}", k) is not None and count[k] >= 2
                        and by[k].most_common(1)[0][1] / count[k] >= 0.6)
        return np.array([i for i, k in enumerate(key) if ok(k)])
    spans = {}
    for doc, (text, lab) in enumerate(zip(acts.texts, doc_labels)):
        head = acts.label_names[lab].split()[-1].lower()
        at = text.lower().find(head)
        spans[doc] = (at, at + len(head)) if at >= 0 else (0, 0)
    return np.array([i for i, (doc, (a, b)) in enumerate(zip(acts.doc_ids, acts.offsets))
                     if a < spans[int(doc)][1] and b > spans[int(doc)][0]])


def annotate(tree: dict, h, labels, names, k: int = 20) -> dict:
    """Appends <majority concept share> to each node's label."""
    for node in tree["nodes"]:
        codes = h.collapsed_codes(node["level"])[:, node["index"]]
        top = np.argsort(-codes)[:k]
        top = top[codes[top] > 0]
        if len(top) == 0:
            continue
        lab, n = collections.Counter(labels[top].tolist()).most_common(1)[0]
        node["label"] = f"{node['label']}  <{names[lab]} {n / len(top):.0%}>"
    return tree


def family_agreement(h, labels, families) -> tuple[float, float]:
    """How often two level-0 features of one family share their level-1 parent.

    Each level-0 feature takes the concept most common among its 10
    strongest tokens, hence a family; its parent is its strongest unit link.
    Returns (share of same-family pairs with one parent, same for pairs of
    different families): the first well above the second means the upper
    level groups features by family.
    """
    c0 = h.collapsed_codes(0)
    fam = [families[collections.Counter(labels[np.argsort(-c0[:, k])[:10]].tolist())
                    .most_common(1)[0][0]] for k in range(h.ranks[0])]
    parent = h.unit_links(1).argmax(1)
    same, diff = [], []
    for a in range(h.ranks[0]):
        for b in range(a + 1, h.ranks[0]):
            (same if fam[a] == fam[b] else diff).append(parent[a] == parent[b])
    return float(np.mean(same)) if same else float("nan"), float(np.mean(diff))


def run(name: str, data, model, args) -> list[str]:
    t0 = time.time()
    per_layer = sj.export_activations(model, data, layers=list(args.layers), progress=False)
    t1 = time.time()
    return [fit_tree(name, data, acts, layer, args, t1 - t0)
            for layer, acts in per_layer.items()]


def fit_tree(name: str, data, acts, layer: int, args, export_s: float) -> str:
    rows = concept_rows(acts, name, np.asarray(data.labels))
    x = acts.X[rows]
    labels = np.asarray(acts.labels)[rows]
    tokens = [interpret.token_strings(acts)[i] for i in rows]
    n, d = x.shape
    t1 = time.time()
    h = sj.fit_hierarchical(x, args.ranks, sparsity=args.sparsity, init=args.init, seed=0,
                            progress=False, finetune_steps=args.finetune_steps,
                            metadata={"model": args.model, "layer": layer,
                                      "dataset": name})
    t2 = time.time()
    tree = annotate(interpret.concept_tree(h, tokens), h, labels, acts.label_names)
    ft = h.metadata["finetune"]
    command = "python benchmarks/hierarchy_real.py" + (
        "" if args.model == "smollm2-135m" else
        f" --model {args.model} --layers {' '.join(map(str, args.layers))}"
        + (f" --only {args.only}" if args.only else ""))
    head = [f"# command: {command}",
            f"# {name}: {args.model} layer {layer} mlp_hidden, {n} concept tokens "
            f"(of {acts.X.shape[0]}) x {d} neurons",
            f"# ranks {list(h.ranks)}, sparsity {args.sparsity}, level-0 init {args.init}, "
            f"upper restarts {h.settings['restarts']} ({'+'.join(h.settings['upper_inits'])})",
            f"# product loss / ||X||^2: greedy {ft['product_loss_before']:.4f} -> fine-tuned "
            f"{ft['product_loss_after']:.4f} ({args.finetune_steps} Adam steps)",
            f"# level losses / ||X||^2 greedy {np.round(ft['level_losses_before'], 4).tolist()}"
            f" fine-tuned {np.round(ft['level_losses_after'], 4).tolist()}",
            f"# export (all layers) {export_s:.0f} s, fit + fine-tune {t2 - t1:.0f} s"]
    families = getattr(data, "metadata", {}).get("families")
    if families:
        fam_of = [families[c] for c in acts.label_names]
        same, diff = family_agreement(h, labels, fam_of)
        head.append(f"# level-0 feature pairs sharing a level-1 parent: same family {same:.2f},"
                    f" different families {diff:.2f}")
    head += ["# tree (from the fine-tuned levels): child kept if link >= 0.15 x parent's "
             "largest, <= 4 children; <concept share> = majority concept of the node's 20 "
             "strongest tokens; [own neurons] exclusive to a child, [share] common to all "
             "children", ""]
    text = "\n".join(head) + "\n" + interpret.format_tree(tree) + "\n"
    tag = args.model.split("-")[0]  # smollm2 / gemma3
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / f"hierarchy_{tag}_L{layer}_{name}.txt").write_text(text, encoding="utf-8")
    interpret.save_tree(tree, out / f"hierarchy_{tag}_L{layer}_{name}.json")
    return text


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m", help="smollm2-135m or gemma3-270m")
    p.add_argument("--layers", type=int, nargs="+", default=[6, 15])
    p.add_argument("--ranks", type=int, nargs="+", default=[40, 12, 4])
    p.add_argument("--sparsity", type=float, default=0.05)
    p.add_argument("--init", default="kmeans")
    p.add_argument("--finetune-steps", type=int, default=1000)
    p.add_argument("--only", choices=["concepts", "paper"], default=None)
    args = p.parse_args()
    model = sj.load_model(args.model)
    if args.only in (None, "concepts"):
        print("\n".join(run("concepts", sj.load_concepts(), model, args)), flush=True)
    if args.only in (None, "paper"):
        print("\n".join(run("hier_concepts", load_dataset(str(PAPER)), model, args)), flush=True)


if __name__ == "__main__":
    main()
