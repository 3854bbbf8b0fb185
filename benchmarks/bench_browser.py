"""Size, load time and search time of the feature browser at 1,000 features × 25 contexts.

Builds a synthetic report of realistic shape (31-token windows of English-like
words, 75 promoted and 75 suppressed tokens per feature, 32 neurons, labels,
a description per feature), writes the page and opens it in headless Chromium
several times. The page times itself: `data-load-ms` is performance.now() when
the list and the first feature are on screen (navigation start = 0: it covers
reading the file, parsing the JSON blob and rendering), `data-search-ms` the
mean time of five searches that re-render the list.

    python benchmarks/bench_browser.py [--features 1000] [--contexts 25] [--runs 3]
"""

from __future__ import annotations

import argparse
import re
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from snmf_jax import report
from snmf_jax.activations import Activations
from snmf_jax.report import _chromium


def synthetic(n_feat: int, n_tokens: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    vocab = [''.join(rng.choice(list("abcdefghijklmnopqrstuvwxyz"), size=int(rng.integers(2, 9))))
             for _ in range(3000)]
    texts, doc_ids, offs, toks, labels = [], [], [], [], []
    d = 0
    while len(doc_ids) < n_tokens:
        ids = rng.integers(0, len(vocab), size=int(rng.integers(30, 90)))
        text, pos = "", []
        for t in ids:
            start = len(text) + (1 if text else 0)
            text += (" " if text else "") + vocab[t]
            pos.append((start, len(text)))
        texts.append(text)
        doc_ids += [d] * len(ids)
        offs += pos
        toks += ids.tolist()
        labels += [d % 40] * len(ids)
        d += 1
    n = len(doc_ids)
    acts = Activations(X=np.zeros((n, 1), np.float32), doc_ids=np.asarray(doc_ids, np.int32),
                       positions=np.zeros(n, np.int32), token_ids=np.asarray(toks, np.int32),
                       offsets=np.asarray(offs, np.int32), texts=tuple(texts),
                       labels=np.asarray(labels, np.int32),
                       label_names=tuple(f"concept{i}" for i in range(40)))
    codes = (rng.exponential(size=(n, n_feat)) * (rng.uniform(size=(n, n_feat)) < 0.05)
             ).astype(np.float32)
    feats = (rng.standard_normal((n_feat, 3072)) * (rng.uniform(size=(n_feat, 3072)) < 0.01)
             ).astype(np.float32)
    return acts, codes, feats, vocab, rng


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--features", type=int, default=1000)
    ap.add_argument("--contexts", type=int, default=25)
    ap.add_argument("--tokens", type=int, default=60_000, help="rows of the synthetic data")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    if _chromium.find_chromium() is None:
        raise SystemExit("no chromium binary (apt-get install chromium)")
    acts, codes, feats, vocab, rng = synthetic(args.features, args.tokens)
    t = time.perf_counter()
    rep = report.feature_report(feats, codes, acts, losses=np.geomspace(10, 1, 200),
                                k=args.contexts, descriptions={
                                    i: f"synthetic feature {i}" for i in range(args.features)})
    build = time.perf_counter() - t
    for f in rep["features"]:  # a model's 75 promoted / suppressed tokens
        f["pos"] = [[" " + vocab[int(j)], float(s)] for j, s in
                    zip(rng.integers(0, len(vocab), 75), np.linspace(9, 3, 75))]
        f["neg"] = [[" " + vocab[int(j)], float(s)] for j, s in
                    zip(rng.integers(0, len(vocab), 75), np.linspace(9, 3, 75))]
    n_ctx = sum(len(f["contexts"]) for f in rep["features"])
    with tempfile.TemporaryDirectory() as tmp:
        path = report.save_html(rep, Path(tmp) / "report.html")
        size = path.stat().st_size
        loads, searches, worst = [], [], []
        for _ in range(args.runs):
            dom = _chromium.dump_dom(path, "bench")
            body = re.search(r"<body([^>]*)>", dom).group(1)
            val = lambda k: float(re.search(rf'{k}="([\d.]+)"', body).group(1))
            loads.append(val("data-load-ms"))
            searches.append(val("data-search-ms"))
            worst.append(val("data-search-max-ms"))
    print(f"features {args.features}, contexts {n_ctx} ({n_ctx / args.features:.1f} per "
          f"feature, windows of up to 31 tokens); report built in {build:.1f} s")
    print(f"file size        {size / 1e6:.2f} MB")
    print(f"load (median)    {statistics.median(loads):.0f} ms   runs: "
          + ", ".join(f"{x:.0f}" for x in loads))
    print(f"search (mean)    {statistics.median(searches):.1f} ms per query, "
          f"worst {max(worst):.1f} ms (re-rendering the filtered list)")


if __name__ == "__main__":
    main()
