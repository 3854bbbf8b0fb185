"""`snmf-jax demo`: the whole job on a real model, end to end.

Loads SmolLM2-135M-Instruct (offline, from its package), exports one
layer's MLP activations over the bundled concept dataset, factorizes them,
ranks the features by how clearly their top contexts belong to one concept,
steers the model with the clearest ones at a calibrated KL, scores the
steered text with the offline MiniLM judge, and writes runs/demo/: the
features (SNMFResult), the HTML feature browser (index.html), the plots and
the steered samples. A rerun reuses every finished step whose recorded
settings and data still match.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time
from pathlib import Path

from snmf_jax._text import printable
from snmf_jax.cli import _options as _cli_options
from snmf_jax.factorize import FitConfig
from snmf_jax.steer import DEFAULT_PROMPT


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    """Settings of `snmf-jax demo` (the flags are generated from these fields).

    The fit defaults (layer, rank, sparsity, init, restarts) were chosen by
    measurement on the bundled concept set: benchmarks/demo_defaults.py.
    """

    model: str = dataclasses.field(default="smollm2-135m",
                                   metadata={"help": "preset, GGUF file or HF folder"})
    layer: int | None = dataclasses.field(
        default=None, metadata={"help": "layer (None: 1/5 of the depth; 6 for SmolLM2)"})
    rank: int = dataclasses.field(default=100, metadata={"help": "features K"})
    sparsity: float = dataclasses.field(default=0.01,
                                        metadata={"help": "keep-fraction of neurons"})
    init: str = dataclasses.field(default="kmeans", metadata={
        "help": "initial codes", "choices": _cli_options.field_choices(FitConfig, "init")})
    restarts: int = dataclasses.field(default=1,
                                      metadata={"help": "fits (seeds); the lowest loss wins"})
    max_iter: int = dataclasses.field(default=300, metadata={"help": "iterations per fit"})
    seed: int = dataclasses.field(default=0, metadata={"help": "seed of the first fit"})
    kl: float = dataclasses.field(default=1.0,
                                  metadata={"help": "KL target (nats) of the steering"})
    steer: int = dataclasses.field(default=10,
                                   metadata={"help": "clearest features to steer and show"})
    prompt: tuple[str, ...] = dataclasses.field(
        default=(DEFAULT_PROMPT, "My favourite thing is"),
        metadata={"help": "prompt to continue; the first is the calibration prompt"})
    max_new_tokens: int = dataclasses.field(default=24,
                                            metadata={"help": "tokens per steered sample"})
    judge: bool = dataclasses.field(default=True, metadata={
        "help": "skip the offline MiniLM judge", "flag": "--no-judge"})
    out: str = dataclasses.field(default="runs/demo", metadata={"help": "output folder"})
    overwrite: bool = dataclasses.field(default=False, metadata={
        "help": "write into an --out folder that a demo did not create, replacing its "
                "features/, index.html, plots/ and steered.json (default: refuse)"})
    progress: bool = dataclasses.field(default=True, metadata={
        "help": "hide the progress bars", "flag": "--no-progress"})


MARKER = "demo.json"  # written first: the folder is a demo's, reruns may reuse it
MAX_NEW_TOKENS = 1 << 16  # before the model loads; its context length right after


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "demo", help="export -> fit -> interpret -> steer -> judge on a real model",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _cli_options.add_dataclass_arguments(p, DemoConfig)
    p.set_defaults(func=run)
    return p


def _cell(s: str, width: int) -> str:
    s = printable(" ".join(s.split()))  # dataset and generated text
    return s if len(s) <= width else s[: width - 1] + "…"


def _check_args(args) -> None:
    """Fails before any work on settings the fit or the steering would refuse later."""
    checks = (
        ("--rank", args.rank, args.rank >= 1, "an integer >= 1"),
        ("--sparsity", args.sparsity, 0.0 < args.sparsity <= 1.0, "a fraction in (0, 1]"),
        ("--max-iter", args.max_iter, args.max_iter >= 1, "an integer >= 1"),
        ("--restarts", args.restarts, args.restarts >= 1, "an integer >= 1"),
        ("--kl", args.kl, 0.0 < args.kl < math.inf, "a finite KL target > 0"),
        ("--steer", args.steer, 0 <= args.steer <= args.rank, "in [0, --rank]"),
        ("--layer", args.layer, args.layer is None or args.layer >= 0, "a layer index >= 0"),
        ("--max-new-tokens", args.max_new_tokens, 1 <= args.max_new_tokens <= MAX_NEW_TOKENS,
         f"an integer in [1, {MAX_NEW_TOKENS}]"),
        ("--seed", args.seed, -2 ** 63 <= args.seed + args.restarts - 1 < 2 ** 63,
         "a 64-bit seed (with --restarts, seed + restarts - 1 < 2**63)"),
        ("--prompt", args.prompt, all(str(p).strip() for p in args.prompt) and args.prompt,
         "non-empty prompts"),
    )
    for flag, value, ok, expected in checks:
        if not ok:
            raise ValueError(f"{flag} must be {expected}; got {value!r}")
    from snmf_jax import _outputs
    _outputs.check_outputs([_outputs.Output("--out", args.out, ())],
                           inputs={"--model": args.model if Path(args.model).exists() else None})
    out = Path(args.out)
    if out.is_dir() and any(out.iterdir()) and not args.overwrite and not _is_demo(out):
        raise FileExistsError(f"--out {args.out!r} holds files a demo did not write; pass "
                              "--overwrite to write into it anyway, or choose another folder")


def _is_demo(out: Path) -> bool:
    """The folder was created by `snmf-jax demo` (its marker file says so)."""
    try:
        import json  # pylint: disable=g-import-not-at-top
        return json.loads((out / MARKER).read_text("utf-8")).get("format") == "snmf-jax/demo"
    except (OSError, ValueError, AttributeError):
        return False


def run(args: argparse.Namespace) -> int:
    opts = _cli_options.from_args(DemoConfig, args)
    _check_args(opts)
    from snmf_jax.factorize import FitConfig
    # Every fit option checked before the model loads.
    fit_opts = FitConfig(rank=opts.rank, sparsity=opts.sparsity, init=opts.init,
                          seed=opts.seed, max_iter=opts.max_iter)
    return demo(opts, fit_opts)


def demo(opts: DemoConfig, fit_opts) -> int:
    from snmf_jax.cli import _demo_steps as steps
    from snmf_jax import activations, interpret, models, report

    t0 = time.perf_counter()
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    from snmf_jax import _io
    _io.write_json(out / MARKER, {"format": "snmf-jax/demo"})
    print(f"[1/6] loading {opts.model} ...", flush=True)
    model = models.load_model(opts.model, progress=opts.progress)
    cfg = model.config
    layer = cfg.n_layers // 5 if opts.layer is None else opts.layer
    if layer >= cfg.n_layers:
        raise ValueError(f"--layer must be in [0, {cfg.n_layers - 1}] for {opts.model}; "
                         f"got {layer}")
    longest = max(len(model.tokenizer.encode(p)) for p in opts.prompt) + 1
    if longest + opts.max_new_tokens > cfg.max_position:
        raise ValueError(f"--max-new-tokens must be at most {cfg.max_position - longest} for "
                         f"{opts.model} (context {cfg.max_position} tokens, longest prompt "
                         f"{longest}); got {opts.max_new_tokens}")
    data = activations.load_concepts()
    print(f"      {cfg.family}, {cfg.n_layers} layers, d_mlp={cfg.d_mlp}; "
          f"{len(data.texts)} sentences over {len(data.label_names)} concepts", flush=True)

    print(f"[2/6] exporting layer {layer} mlp_hidden activations ...", flush=True)
    store = steps.export_step(model, data, layer, out, progress=opts.progress)

    print(f"[3/6] SNMF: K={fit_opts.rank}, keep {fit_opts.sparsity:.0%} of neurons, "
          f"init {fit_opts.init}, {opts.restarts} restart(s) ...", flush=True)
    result = steps.fit_step(store, layer, fit_opts, opts.restarts, out,
                            {"model": model.name, "layer": layer, "site": "mlp_hidden",
                             "dataset": "concepts", "store": store.identity(layer)},
                            progress=opts.progress)

    print("[4/6] interpreting: concept purity of top contexts, vocabulary projection ...",
          flush=True)
    clear = steps.clarity(result.codes, store)
    picks = [int(k) for k in clear.order[: opts.steer]]
    proj = interpret.vocab_projection(model, result.features, layer=layer, k=8)
    decode = lambda t: model.tokenizer.decode([t])  # noqa: E731
    print(f"      {int((clear.purity >= 0.5).sum())} of {result.rank} features have a "
          f"top-10 concept purity >= 50%", flush=True)

    print(f"[5/6] steering the {len(picks)} clearest features at KL {opts.kl} and judging "
          "the samples ...", flush=True)
    rec = {"samples": {}, "scores": {}, "unsteered": []}
    if picks:
        rec = steps.steer_step(
            model, result, layer, picks, [clear.label[k] for k in picks], kl=opts.kl,
            prompts=list(opts.prompt), max_new_tokens=opts.max_new_tokens, out=out,
            judge_examples=steps.judge_examples(store) if opts.judge else None,
            progress=opts.progress)

    print("[6/6] writing the feature browser and plots ...", flush=True)
    descriptions = {k: f"{clear.label[k]} · top-10 purity {clear.purity[k]:.0%} · sentence "
                       f"AUC {clear.auc[k]:.2f}" for k in range(result.rank)}
    rep = report.feature_report(
        result.features, result.codes, store, model=model, layer=layer, losses=result.losses,
        descriptions=descriptions, steered=_browser_samples(rec),
        scores={int(k): v for k, v in rec["scores"].items()},
        title=f"SNMF features · {model.name} layer {layer}",
        meta={"model": model.name, "layer": layer, "site": "mlp_hidden",
              "dataset": "concepts", "rank": result.rank})
    page = report.save_html(rep, out / "index.html")
    report.save_plots(report.overview_figures(result.codes, result.features, result.losses),
                      out / "plots")

    _summary(clear, picks, proj, decode, rec)
    # The page opens on the feature whose steering the judge liked best.
    scored = [k for k in picks if str(k) in rec["scores"]]
    first = (max(scored, key=lambda k: rec["scores"][str(k)]["harmonic"]) if scored
             else picks[0] if picks else None)
    wrote = ["features/ (SNMFResult)", "index.html (feature browser)", "plots/"]
    if picks:  # no feature to steer: steered.json was not written
        wrote.append(steps.STEER_FILE)
    print(f"\nwrote {out}/: {', '.join(wrote)}\nopen {page.resolve().as_uri()}"
          + (f"#f={first}&sort=label" if first is not None else ""))
    print(f"done in {time.perf_counter() - t0:.0f} s")
    return 0


def _browser_samples(rec) -> dict:
    """Steered samples as the browser shows them: prompt + continuation, α rounded."""
    return {int(k): [{"text": s["prompt"] + s["text"], "sign": s["sign"], "kl": s["kl"],
                      "alpha": round(s["alpha"], 2)} for s in v]
            for k, v in rec["samples"].items()}


def _summary(clear, picks, proj, decode, rec) -> None:
    print(f"\nThe {len(picks)} clearest features (concept of their top-10 contexts):")
    prompts = [s["prompt"] for s in next(iter(rec["samples"].values()), [])]
    for prompt, text in zip(prompts, rec.get("unsteered", [])):
        print(f"  unsteered: {_cell(prompt + text, 90)}")
    for k in picks:
        sc = rec["scores"].get(str(k))
        judged = (f"; judge: concept {sc['concept']:.2f} (unsteered "
                  f"{sc['concept_unsteered']:.2f}), fluency {sc['fluency']:.2f}") if sc else ""
        print(f"\n  feature {k}: {printable(clear.label[k])} ({clear.purity[k]:.0%}, sentence AUC "
              f"{clear.auc[k]:.2f}){judged}")
        print(f"    top tokens: {_cell(' '.join(map(repr, clear.top_tokens[k])), 90)}")
        print(f"    promotes:   {_cell(' '.join(map(repr, proj.tokens(decode, k, '+', 8))), 90)}")
        samples = rec["samples"].get(str(k)) or []
        if samples:  # the sample the judge found most on-concept (else the first)
            s = max(samples, key=lambda s: s.get("score", 0.0))
            print(f"    steered (+α={s['alpha']:.3g}): {_cell(s['prompt'] + s['text'], 80)}")
