"""Online SNMF on >= 1M SmolLM2-135M layer-10 MLP activations.

    python benchmarks/online_snmf.py [--store /work/data/smollm2_L10_1m] [--rank 100] \
        [--sparsity 0.01] [--passes 3] [--batch-size 4096] [--sizes 100000 300000 1000000] \
        [--batch-rows 100000] [--out benchmarks/results/online_snmf.json]

Data: the offline corpus of `sae_corpus.documents()` (WordNet glosses + Debian's
fortunes), its first 1.2M tokens (documents truncated at 128 tokens, BOS
dropped: ~1.10M rows), exported once to a float16 store (`--store`; the export
step below runs only when the store is missing, with the exact call that made
it). The last 2 chunks (~22k rows, the last documents) are held out; every fit
trains on a prefix of the other chunks (hard-linked views of the store).

Steps, each in its own child process so each reports its own wall time and
peak resident memory (ru_maxrss):
  online N   `fit_online` on the first N rows (rounded up to whole chunks),
             held-out loss and FVE (codes by `encode`) every quarter pass;
  batch      `sj.fit` (in memory) on the first --batch-rows rows, --max-iter iterations;
  sae k      TopK SAE of width --rank (`snmf_jax.baselines`), trained on all the
             training rows for the same number of passes, held-out FVE by
             `sae_metrics` (the same definition: 1 − SSE / Σ‖x − mean‖²).
The JSON is rewritten after every step; --plot redraws the figure and the
Markdown table from it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
EVAL_ITERS = 100  # held-out codes: 100 multiplicative updates (30 -> 300 moved FVE by 0.002)
sys.path.insert(0, str(HERE))


def export(store: Path) -> None:
    """The export that made the store (as /work/data/export_1m.py ran it)."""
    import snmf_jax as sj
    from sae_corpus import documents
    from snmf_jax.activations import from_texts
    model = sj.load_model("smollm2-135m", progress=False)
    tok = model.tokenizer
    docs, n = [], 0
    for d in documents():
        docs.append(d)
        n += len(tok.encode(d))
        if n >= 1_200_000:
            break
    print(f"{len(docs)} documents, {n} tokens", flush=True)
    t0 = time.time()
    sj.export_activations(model, from_texts(docs), [10], site="mlp_hidden", max_length=128,
                          out=str(store), dtype="float16", progress=True)
    print("done", time.time() - t0, flush=True)


def view(store: Path, chunks: range, out: Path) -> Path:
    """A store of some of `store`'s chunks: hard links and a manifest listing them."""
    from snmf_jax._io import read_json, write_json
    m = read_json(store / "manifest.json")
    entries = [m["chunks"][i] for i in chunks]
    out.mkdir(parents=True, exist_ok=True)
    for e in entries:
        if not (out / e["file"]).exists():
            os.link(store / e["file"], out / e["file"])
    if (store / "documents.json").exists() and not (out / "documents.json").exists():
        os.link(store / "documents.json", out / "documents.json")
    n = sum(e["rows"] for e in entries)
    write_json(out / "manifest.json", {**m, "chunks": entries, "n_rows": n, "complete": True,
                                       "view_of": str(store), "view_chunks":
                                       [chunks.start, chunks.stop]})
    return out


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def step_online(a) -> dict:
    import snmf_jax as sj
    train, held = sj.ActivationStore(a.train), sj.ActivationStore(a.held)
    bpp = -(-train.n_rows // a.batch_size)
    t0 = time.perf_counter()
    r = sj.fit_online(train, rank=a.rank, sparsity=a.sparsity, batch_size=a.batch_size,
                      passes=a.passes, held_out=held, held_out_every=max(1, bpp // 4),
                      eval_iters=EVAL_ITERS, progress=False)
    sec = time.perf_counter() - t0
    if a.save:
        r.save(a.save)
    info = r.metadata["online"]
    # The held-out scores ran inside the fit; time one (compiled) to take them out.
    from snmf_jax.factorize import encode_loss
    t1 = time.perf_counter()
    encode_loss(held, r.features, batch_size=a.batch_size, iters=EVAL_ITERS)
    evals = len(info["held_out"]) * (time.perf_counter() - t1)
    return {"rows": train.n_rows, "seconds": sec - evals, "seconds_with_evals": sec,
            "peak_rss_mib": _peak_mib(), "seconds_per_pass": (sec - evals) / a.passes,
            "batches": info["batches"], "pass_mean_loss": info["pass_mean_loss"],
            "held_out": info["held_out"], "dead_features": info["dead_features"],
            "nonzeros_per_feature": int((r.features != 0).sum(1).max())}


def step_batch(a) -> dict:
    import numpy as np
    import snmf_jax as sj
    from snmf_jax.factorize import encode_loss
    train, held = sj.ActivationStore(a.train), sj.ActivationStore(a.held)
    x = np.concatenate([train.chunk(i) for i in range(train.num_chunks)])  # float32
    t0 = time.perf_counter()
    r = sj.fit(x, a.rank, sparsity=a.sparsity, max_iter=a.max_iter, progress=False)
    sec = time.perf_counter() - t0
    del x
    h = encode_loss(held, r.features, batch_size=a.batch_size, iters=EVAL_ITERS)
    return {"rows": train.n_rows, "seconds": sec, "peak_rss_mib": _peak_mib(),
            "iterations": r.n_iter, "converged": r.converged,
            "seconds_per_iteration": sec / max(r.n_iter, 1), "losses": r.losses.tolist(),
            "train_mean_loss": r.loss / train.n_rows,
            "held_out": {"mean_loss": h.mean_loss, "fve": h.fve, "n_rows": h.n_rows}}


def step_sae(a) -> dict:
    import snmf_jax as sj
    from snmf_jax.baselines import SAEConfig, TrainConfig, sae_metrics, train_sae
    train, held = sj.ActivationStore(a.train), sj.ActivationStore(a.held)
    cfg = SAEConfig(d_in=train.d, d_sae=a.rank, architecture="topk", k=min(a.k, a.rank),
                    hook_name="L10.mlp_hidden", model_name="smollm2-135m")
    tc = TrainConfig(total_tokens=a.passes * train.n_rows, batch_size=a.batch_size,
                     dead_window=100, log_every=50)
    sae, info = train_sae(train, cfg, tc)
    m = sae_metrics(sae, held)
    return {"rows": train.n_rows, "k": cfg.k, "seconds": info.seconds,
            "peak_rss_mib": _peak_mib(), "tokens_seen": info.n_tokens,
            "held_out": m._asdict(), "history": info.history}


def _child(args: list[str]) -> dict:
    out = Path(os.environ.get("TMPDIR", "/tmp")) / f"online_snmf_{os.getpid()}.json"
    cmd = [sys.executable, __file__, "--child-out", str(out)] + args
    print("+", " ".join(shlex.quote(c) for c in cmd[1:]), flush=True)
    subprocess.run(cmd, check=True)
    res = json.loads(out.read_text())
    out.unlink()
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--store", default="/work/data/smollm2_L10_1m")
    ap.add_argument("--views", default=None, help="folder of the store views (default STORE-views)")
    ap.add_argument("--rank", type=int, default=100)
    ap.add_argument("--sparsity", type=float, default=0.01)
    ap.add_argument("--passes", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=4096)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 300_000, 1_000_000])
    ap.add_argument("--batch-rows", type=int, default=100_000)
    ap.add_argument("--max-iter", type=int, default=100)
    ap.add_argument("--sae-k", type=int, nargs="*", default=[32, 100])
    ap.add_argument("--heldout-chunks", type=int, default=2)
    ap.add_argument("--out", default=str(HERE / "results" / "online_snmf.json"))
    ap.add_argument("--plot", action="store_true", help="only redraw from --out")
    ap.add_argument("--allow-incomplete", action="store_true",
                    help="use the complete chunks of a store still being exported (trials)")
    # Child-process arguments.
    ap.add_argument("--child-out", default=None)
    ap.add_argument("--step", choices=["online", "batch", "sae"], default=None)
    ap.add_argument("--train", default=None)
    ap.add_argument("--held", default=None)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--save", default=None)
    a = ap.parse_args()

    if a.child_out:
        res = {"online": step_online, "batch": step_batch, "sae": step_sae}[a.step](a)
        Path(a.child_out).write_text(json.dumps(res))
        return
    out = Path(a.out)
    if a.plot:
        report(json.loads(out.read_text()), out)
        return
    store = Path(a.store)
    if not (store / "manifest.json").exists():
        export(store)
    from snmf_jax._io import read_json
    m = read_json(store / "manifest.json")
    if not m["complete"] and not a.allow_incomplete:
        raise SystemExit(f"{store} is incomplete ({len(m['chunks'])} chunks); rerun the export")
    n_chunks = len(m["chunks"])
    rows = [c["rows"] for c in m["chunks"]]
    views = Path(a.views or f"{store}-views")
    n_train = n_chunks - a.heldout_chunks
    held = view(store, range(n_train, n_chunks), views / "heldout")
    common = ["--rank", str(a.rank), "--sparsity", str(a.sparsity), "--passes", str(a.passes),
              "--batch-size", str(a.batch_size), "--held", str(held)]
    res = {"command": " ".join(["python benchmarks/online_snmf.py"]
                               + [shlex.quote(x) for x in sys.argv[1:]]),
           "store": str(store), "model": m["model"], "site": m["site"], "layer": m["layers"],
           "d": m["d"], "store_rows": sum(rows), "held_out_rows": sum(rows[n_train:]),
           "rank": a.rank, "sparsity": a.sparsity, "passes": a.passes,
           "batch_size": a.batch_size, "cpu": os.cpu_count(), "online": [], "batch": [],
           "sae": []}

    def chunks_for(n):
        c, total = 0, 0
        while total < n and c < n_train:
            total += rows[c]
            c += 1
        return c

    def save():
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(res, indent=1) + "\n")
        report(res, out)

    sizes = sorted(a.sizes, reverse=True)  # the largest first: the headline result
    for i, n in enumerate(sizes):
        c = chunks_for(n)
        train = view(store, range(0, c), views / f"train-{c}")
        extra = ["--save", str(views / "online_features")] if i == 0 else []
        res["online"].append({"target_rows": n, **_child(
            ["--step", "online", "--train", str(train)] + common + extra)})
        save()
        if i == 0:
            for k in a.sae_k[:1]:
                res["sae"].append(_child(["--step", "sae", "--train", str(train), "--k", str(k)]
                                         + common))
                save()
            c = chunks_for(a.batch_rows)
            train_b = view(store, range(0, c), views / f"train-{c}")
            res["batch"].append(_child(["--step", "batch", "--train", str(train_b),
                                        "--max-iter", str(a.max_iter)] + common))
            save()
    train = view(store, range(0, chunks_for(max(a.sizes))), views / "train-all")
    for k in a.sae_k[1:]:
        res["sae"].append(_child(["--step", "sae", "--train", str(train), "--k", str(k)]
                                 + common))
        save()
    print(json.dumps({k: v for k, v in res.items() if k not in ("online", "sae")}, indent=1))


def report(res: dict, out: Path) -> None:
    """The Markdown table and the figure beside the JSON."""
    lines = [f"# Online SNMF on {res['model']} L{res['layer'][0]} {res['site']}", "",
             f"`{res['command']}`", "",
             f"Store: {res['store_rows']:,} rows (d = {res['d']}), the last "
             f"{res['held_out_rows']:,} held out. K = {res['rank']}, sparsity "
             f"{res['sparsity']}, batch {res['batch_size']}, {res['passes']} passes. "
             f"Held-out FVE = 1 − SSE / Σ‖x − mean‖² (SNMF codes by `encode`).", "",
             "| method | train rows | held-out FVE | held-out loss/row | wall s | peak RSS MiB |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in res["online"]:
        h = r["held_out"][-1]
        lines.append(f"| online SNMF, {res['passes']} passes | {r['rows']:,} | {h['fve']:.4f} | "
                     f"{h['mean_loss']:.4g} | {r['seconds']:.0f} | {r['peak_rss_mib']:.0f} |")
    for r in res["batch"]:
        h = r["held_out"]
        lines.append(f"| batch SNMF (`sj.fit`, {r['iterations']} it) | {r['rows']:,} | "
                     f"{h['fve']:.4f} | {h['mean_loss']:.4g} | {r['seconds']:.0f} | "
                     f"{r['peak_rss_mib']:.0f} |")
    for r in res["sae"]:
        h = r["held_out"]
        lines.append(f"| TopK SAE width {res['rank']}, k = {r['k']} | {r['rows']:,} | "
                     f"{h['fve']:.4f} | – | {r['seconds']:.0f} | {r['peak_rss_mib']:.0f} |")
    if res["online"]:
        lines += ["", "Online held-out FVE against passes (largest run):", "",
                  "| passes | " + " | ".join(f"{h['passes']:.2f}" for h in
                                           res["online"][0]["held_out"]) + " |",
                  "|---|" + "---:|" * len(res["online"][0]["held_out"]),
                  "| FVE | " + " | ".join(f"{h['fve']:.4f}" for h in
                                        res["online"][0]["held_out"]) + " |"]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for r in res["online"]:
        ax1.plot([h["passes"] for h in r["held_out"]], [h["fve"] for h in r["held_out"]],
                 marker="o", label=f"online SNMF, {r['rows'] / 1e3:.0f}k rows")
    for r in res["batch"]:
        ax1.axhline(r["held_out"]["fve"], ls="--", color="k",
                    label=f"batch SNMF, {r['rows'] / 1e3:.0f}k rows")
    for r, c in zip(res["sae"], ("tab:red", "tab:purple")):
        ax1.axhline(r["held_out"]["fve"], ls=":", color=c,
                    label=f"TopK SAE w={res['rank']} k={r['k']}")
    ax1.set_xlabel("passes over the training rows")
    ax1.set_ylabel("held-out FVE")
    ax1.legend(fontsize=7)
    xs = [r["rows"] for r in res["online"]]
    ax2.plot(xs, [r["seconds"] for r in res["online"]], marker="o", label="online: wall s")
    ax2.plot([r["rows"] for r in res["batch"]], [r["seconds"] for r in res["batch"]],
             marker="s", ls="", color="k", label="batch: wall s")
    ax2b = ax2.twinx()
    ax2b.plot(xs, [r["peak_rss_mib"] for r in res["online"]], marker="^", color="tab:green",
              label="online: peak RSS MiB")
    ax2b.plot([r["rows"] for r in res["batch"]], [r["peak_rss_mib"] for r in res["batch"]],
              marker="^", ls="", color="tab:olive", label="batch: peak RSS MiB")
    ax2.set_xlabel("training rows")
    ax2.set_ylabel("wall seconds")
    ax2b.set_ylabel("peak RSS MiB")
    ax2.legend(loc="upper center", fontsize=7)
    ax2b.legend(loc="center right", fontsize=7)
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=110)


if __name__ == "__main__":
    main()
