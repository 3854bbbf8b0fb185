"""Hierarchical SNMF of SmolLM2-135M's MLP activations on two concept sets.

Exports one middle layer's `mlp_hidden` activations over (a) the package's
concept dataset (hierarchical families: time, body, vehicles, animals,
languages) and (b) the paper's hierarchical concepts
(../shared/data/paper/hier_concepts.json, read in place, a few sentences
per concept to keep the CPU cost modest), fits a 3-level hierarchy, fine-
tunes it jointly with Adam, and writes the concept trees (text and JSON)
to benchmarks/results/. Each node's text line ends with <concept share>:
the concept label most common among the 20 tokens expressing it most, and
its share, so families can be read off the tree.

    python benchmarks/hierarchy_real.py            # ~10 min on 2 CPU cores
"""

from __future__ import annotations

import argparse
import collections
import json
import time
from pathlib import Path

import numpy as np

import snmf_jax as sj
from snmf_jax import interpret
from snmf_jax.activations import read_dataset, TextDataset

HERE = Path(__file__).resolve().parent
PAPER = HERE.parent.parent / "shared" / "data" / "paper" / "hier_concepts.json"


def paper_subset(per_label: int) -> TextDataset:
    """The paper's hierarchical concepts, the first `per_label` sentences of each."""
    full = read_dataset(str(PAPER))
    texts, labels, count = [], [], collections.Counter()
    for t, l in zip(full.texts, full.labels):
        if count[l] < per_label:
            texts.append(t)
            labels.append(l)
            count[l] += 1
    return TextDataset(tuple(texts), tuple(labels), full.label_names,
                       metadata={"source": str(PAPER), "per_label": per_label})


def annotate(tree: dict, h, acts, k: int = 20) -> dict:
    """Appends <majority concept share> to each node's label."""
    names = acts.label_names
    for node in tree["nodes"]:
        codes = h.collapsed_codes(node["level"])[:, node["index"]]
        top = np.argsort(-codes)[:k]
        top = top[codes[top] > 0]
        if len(top) == 0:
            continue
        lab, n = collections.Counter(acts.labels[top].tolist()).most_common(1)[0]
        node["label"] = f"{node['label']}  <{names[lab]} {n / len(top):.0%}>"
    return tree


def run(name: str, data, model, args) -> str:
    t0 = time.time()
    acts = sj.export_activations(model, data, layers=args.layer, progress=False)
    n, d = acts.X.shape
    t1 = time.time()
    h = sj.fit_hierarchical(acts.X, args.ranks, sparsity=args.sparsity, seed=0,
                            progress=False, finetune_steps=args.finetune_steps,
                            metadata={"model": "smollm2-135m", "layer": args.layer,
                                      "dataset": name})
    t2 = time.time()
    tokens = interpret.token_strings(acts)
    tree = annotate(interpret.concept_tree(h, tokens), h, acts)
    ft = h.metadata["finetune"]
    head = [f"# {name}: SmolLM2-135M layer {args.layer} mlp_hidden, {n} tokens x {d} neurons",
            f"# ranks {list(h.ranks)}, sparsity {args.sparsity}, restarts "
            f"{h.settings['restarts']} ({'+'.join(h.settings['upper_inits'])})",
            f"# product loss / ||X||^2: greedy {ft['product_loss_before']:.4f} -> fine-tuned "
            f"{ft['product_loss_after']:.4f} ({args.finetune_steps} Adam steps)",
            f"# level losses / ||X||^2 greedy {np.round(ft['level_losses_before'], 4).tolist()}"
            f" fine-tuned {np.round(ft['level_losses_after'], 4).tolist()}",
            f"# export {t1 - t0:.0f} s, fit + fine-tune {t2 - t1:.0f} s",
            f"# tree: threshold 0.15 x parent's largest link, <= 4 children; trees from the "
            f"fine-tuned levels", ""]
    text = "\n".join(head) + interpret.format_tree(tree) + "\n"
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / f"hierarchy_smollm2_{name}.txt").write_text(text, encoding="utf-8")
    interpret.save_tree(tree, out / f"hierarchy_smollm2_{name}.json")
    return text


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layer", type=int, default=15)
    p.add_argument("--ranks", type=int, nargs="+", default=[60, 20, 6])
    p.add_argument("--sparsity", type=float, default=0.01)
    p.add_argument("--finetune-steps", type=int, default=300)
    p.add_argument("--per-label", type=int, default=2)
    p.add_argument("--only", choices=["concepts", "paper"], default=None)
    args = p.parse_args()
    model = sj.load_model("smollm2-135m")
    if args.only in (None, "concepts"):
        print(run("concepts", sj.load_concepts(), model, args), flush=True)
    if args.only in (None, "paper"):
        print(run("hier_concepts", paper_subset(args.per_label), model, args), flush=True)


if __name__ == "__main__":
    main()
