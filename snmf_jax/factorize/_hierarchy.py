"""Hierarchical SNMF: factorize the features again, level after level.

Level 0 is the SNMF of X at ranks[0] (in memory, on a mesh or streamed from
a store, through the public fit entry points). Level i is the SNMF of level
i−1's features at ranks[i]; its nonnegative codes are the links W_i from
fine to coarse features, so X ≈ C₀ W₁ … W_L Φ_L.

Upper levels are small (r_{i−1} × d), so each is fitted from several
restarts and the lowest loss kept: one SNMF of the features can put two
siblings under different parents, and a handful of restarts from k-means
and random inits fixes that on planted trees (see README, "Hierarchical
SNMF", for the measured recovery rates). The fine features are fitted at
unit norm (the norms are folded back into the links, so the product is
unchanged): otherwise a few high-norm features dominate the coarse fit.

Checkpoints hold one finished level at a time (an SNMFResult per level plus
the level-0 fit's own checkpoint); a rerun verifies the data, the settings
and each saved level's input before reusing it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from snmf_jax import _checks, _digest, _io, _resume
from snmf_jax.factorize import _checkpoint
from snmf_jax.factorize._driver import fit
from snmf_jax.factorize._options import FitConfig
from snmf_jax.factorize._hierarchy_result import HierarchicalResult
from snmf_jax.factorize._result import SNMFResult
from snmf_jax.factorize._row_sources import as_source
from snmf_jax.factorize._driver import fit_streaming

log = logging.getLogger(__name__)

_CKPT_FORMAT = "snmf_jax.hierarchy-checkpoint/1"
from snmf_jax.factorize._options import INITS as _INITS  # noqa: E402  (one table of init names)


def _is_store(x) -> bool:
    return isinstance(x, (str, os.PathLike)) or hasattr(x, "chunk_bounds")


def _store(x):
    if isinstance(x, (str, os.PathLike)):
        from snmf_jax.activations import ActivationStore  # pylint: disable=g-import-not-at-top
        return ActivationStore(x)
    return x


def _data_id(x, layer) -> dict:
    """The fit pipeline's identity of what level 0 is fitted on (store or array)."""
    if _is_store(x):
        return _checkpoint.source_identity(as_source(_store(x), layer=layer))
    return _checkpoint.array_identity(np.asarray(x))


def load_data(x, layer: int | None = None) -> np.ndarray:
    """X in memory (n, d) float32: an array as is, a store read whole."""
    if _is_store(x):
        s = _store(x)
        return (s.rows(0, s.n_rows, layer=layer) if hasattr(s, "rows")
                else np.concatenate([s.chunk(i) for i in range(s.num_chunks)]))
    return np.asarray(x)


def _per_level(value, levels: int, name: str) -> list:
    if isinstance(value, (list, tuple)):
        if len(value) != levels:
            raise ValueError(f"{name} must be one value or one per level ({levels}); "
                             f"got {len(value)} values")
        return list(value)
    return [value] * levels


def check_ranks(ranks: Sequence[int], d: int | None = None) -> list[int]:
    """Validates the ranks of a hierarchy (each level at most the one below)."""
    if isinstance(ranks, (int, np.integer)) or not isinstance(ranks, (list, tuple)):
        raise TypeError(f"ranks must be a list of ints, one per level; got {ranks!r}")
    if not ranks:
        raise ValueError("ranks must name at least one level; got []")
    out = []
    for i, r in enumerate(ranks):
        if not _checks.is_int(r) or r < 1:
            raise ValueError(f"ranks[{i}] must be an int >= 1; got {r!r}")
        if i and r > out[-1]:
            raise ValueError(f"ranks[{i}] = {r} exceeds ranks[{i - 1}] = {out[-1]}: level {i} "
                             f"factorizes the {out[-1]} features below it, so rank <= {out[-1]}")
        if d is not None and r > d:
            raise ValueError(f"ranks[{i}] = {r} exceeds d_mlp = {d}")
        out.append(int(r))
    return out


def fit_level(features, rank: int, *, sparsity: float, restarts: int = 6,
              inits: Sequence[str] = ("kmeans", "random"), seed: int = 0,
              normalize: bool = True, max_iter: int = 1000, patience: int | None = 50,
              tol: float = 1e-5) -> tuple[SNMFResult, np.ndarray, list[float]]:
    """One upper level: the SNMF of the features below, best of several restarts.

    Args:
      features: (r_prev, d) the features of the level below.
      rank: r, the number of coarse features.
      sparsity: keep-fraction of the coarse features.
      restarts: fits to run; restart j uses inits[j % len(inits)] and seed + j.
      inits: init names cycled over the restarts.
      seed: base seed.
      normalize: fit the unit-norm rows and fold the norms back into the links.
      max_iter, patience, tol: as `snmf_jax.fit`.

    Returns:
      (the kept fit, on the rows as fitted; links W (r_prev, r) with
      features ≈ W · fit.features; the loss of every restart).
    """
    y = np.asarray(features)
    norms = np.linalg.norm(y, axis=1).astype(y.dtype)  # (r_prev,)
    if normalize:
        y = y / np.maximum(norms, 1e-12)[:, None]
    best, losses = None, []
    for j in range(restarts):
        res = fit(y, rank, sparsity=sparsity, init=inits[j % len(inits)], seed=seed + j,
                  max_iter=max_iter, patience=patience, tol=tol, progress=False)
        losses.append(res.loss)
        if not np.isfinite(res.loss):
            raise FloatingPointError(f"upper-level fit (rank {rank}, restart {j}) gave a "
                                     f"non-finite loss")
        if best is None or res.loss < best.loss:
            best = res
    links = np.asarray(best.codes)
    if normalize:
        links = links * norms[:, None]
    return best, links, losses


def fit_hierarchical(x, ranks: Sequence[int], *, sparsity: float | Sequence[float] = 0.01,
                     init: str = "random", seed: int = 0, level0_restarts: int = 1,
                     restarts: int = 6,
                     upper_inits: Sequence[str] = ("kmeans", "random"),
                     normalize: bool = True, max_iter: int = 1000,
                     patience: int | None = 50, tol: float = 1e-5, mesh=None,
                     layer: int | None = None, level0: SNMFResult | None = None,
                     checkpoint_dir: str | os.PathLike | None = None,
                     finetune_steps: int = 0, finetune_lr: float = 1e-2,
                     progress: bool = True, metadata: dict | None = None
                     ) -> HierarchicalResult:
    """Hierarchical SNMF: X ≈ C₀ W₁ … W_L Φ_L, fitted level by level.

    Args:
      x: (n_tokens, d_mlp) activations (numpy or jax; validated like `fit`),
        or an activation store (directory or `ActivationStore`), streamed
        for level 0 with `fit_streaming`.
      ranks: [r_0, r_1, ..., r_L], non-increasing: features per level.
      sparsity: keep-fraction, one for all levels or one per level.
      init: init of level 0 ("random", "svd", "kmeans").
      seed: seed of level 0; level i's restarts use seed + 1000·i + j.
      level0_restarts: fits of level 0 (seeds seed + j), the lowest loss kept;
        1 by default since level 0 is the expensive fit.
      restarts: fits per upper level, the lowest loss kept.
      upper_inits: inits cycled over an upper level's restarts.
      normalize: fit upper levels on unit-norm features (norms go into the links).
      max_iter, patience, tol: as `fit`, for every level.
      mesh: a Mesh to shard level 0's tokens over.
      layer: the layer of a multi-layer store.
      level0: an existing SNMFResult (with codes) to use as level 0;
        ranks[0] must equal its rank.
      checkpoint_dir: finished levels are saved here (and the level-0 fit
        checkpoints inside it); rerunning the same call resumes.
      finetune_steps: Adam steps of the joint fine-tune (0: none); see
        `snmf_jax.factorize.finetune_hierarchy`.
      finetune_lr: its learning rate (relative to each factor's scale).
      progress: progress bar of level 0.
      metadata: JSON-able provenance stored with the result.

    Returns:
      A HierarchicalResult.
    """
    _checks.json_able("metadata", metadata)
    streaming = _is_store(x)
    d = int(_store(x).d) if streaming else (np.shape(x)[1] if np.ndim(x) == 2 else None)
    ranks = check_ranks(ranks, d)
    levels = len(ranks)
    sparsities = _per_level(sparsity, levels, "sparsity")
    for i, p in enumerate(sparsities):  # upper levels are checked here, before level 0 runs
        if not _checks.is_real(p) or not 0 < p <= 1:
            raise ValueError(f"sparsity (keep-fraction) of level {i} must be in (0, 1]; got {p!r}")
    sparsities = [float(p) for p in sparsities]
    for name, v in (("restarts", restarts), ("level0_restarts", level0_restarts)):
        if not _checks.is_int(v) or v < 1:
            raise ValueError(f"{name} must be an int >= 1; got {v!r}")
    bad = [i for i in upper_inits if i not in _INITS]
    if bad or not upper_inits:
        raise ValueError(f"upper_inits must be a non-empty list from {_INITS}; got {upper_inits!r}")
    if not _checks.is_int(finetune_steps) or finetune_steps < 0:
        raise ValueError(f"finetune_steps must be an int >= 0; got {finetune_steps!r}")
    _checks.real("finetune_lr", finetune_lr, lo=0, lo_open=True)
    # The per-level fit options, checked by the one FitConfig validator before level 0.
    FitConfig(rank=ranks[0], sparsity=sparsities[0], init=init, seed=seed,
               max_iter=max_iter, patience=patience, tol=tol)
    if level0 is not None:
        if level0.codes is None:
            raise ValueError("level0 must hold its codes (SNMFResult.codes is None)")
        if level0.rank != ranks[0]:
            raise ValueError(f"ranks[0] must equal level0's rank {level0.rank}; got {ranks[0]}")
    settings = {"ranks": ranks, "sparsity": sparsities, "init": init, "seed": int(seed),
                "level0_restarts": int(level0_restarts),
                "restarts": int(restarts), "upper_inits": list(upper_inits),
                "normalize": bool(normalize), "max_iter": int(max_iter), "patience": patience,
                "tol": float(tol), "finetune_steps": int(finetune_steps),
                "finetune_lr": float(finetune_lr),
                "level0": "given" if level0 is not None else ("streaming" if streaming else "fit")}

    root = None
    if checkpoint_dir is not None:
        root = Path(checkpoint_dir)
        data_id = ({"kind": "level0", "codes": _digest.array_sha256(level0.codes),
                    "features": _digest.array_sha256(level0.features)}
                   if level0 is not None else _data_id(x, layer))
        _check_manifest(root, data_id, settings)

    # Level 0.
    lv0 = level0
    if lv0 is None:
        lv0 = _restore_level(root, 0, None)
    if lv0 is None:
        for j in range(level0_restarts):
            ckpt = None if root is None else root / f"level-0-fit-{j}"
            kw = dict(sparsity=sparsities[0], init=init, seed=seed + j, max_iter=max_iter,
                      patience=patience, tol=tol, checkpoint_dir=ckpt, progress=progress)
            res = (fit_streaming(_store(x), ranks[0], layer=layer, **kw) if streaming
                   else fit(x, ranks[0], mesh=mesh, **kw))
            if not np.isfinite(res.loss):
                raise FloatingPointError("the level-0 fit gave a non-finite loss")
            if lv0 is None or res.loss < lv0.loss:
                lv0 = res
        _save_level(root, 0, lv0, None)
    features, links, losses = [np.asarray(lv0.features)], [], [np.asarray(lv0.losses)]
    restart_losses = []

    # Upper levels, each from the features of the level below.
    for i in range(1, levels):
        below = features[-1]
        input_id = _digest.array_sha256(below)
        saved = _restore_level(root, i, input_id)
        if saved is not None:
            res, w = saved, np.asarray(saved.codes)  # saved with the folded links as codes
            restart_losses.append(res.metadata["restart_losses"])
        else:
            res, w, rl = fit_level(below, ranks[i], sparsity=sparsities[i], restarts=restarts,
                                   inits=upper_inits, seed=seed + 1000 * i,
                                   normalize=normalize, max_iter=max_iter,
                                   patience=patience, tol=tol)
            restart_losses.append(rl)
            _save_level(root, i, res, input_id, links=w, restart_losses=rl)
        features.append(np.asarray(res.features))
        links.append(w.astype(below.dtype))
        losses.append(np.asarray(res.losses))

    result = HierarchicalResult(
        codes=None if lv0.codes is None else np.asarray(lv0.codes), features=tuple(features),
        links=tuple(links), losses=tuple(losses), finetune_losses=None, settings=settings,
        metadata={**dict(metadata or {}), "restart_losses": restart_losses})
    if finetune_steps:
        from snmf_jax.factorize._finetune import finetune_hierarchy  # pylint: disable=g-import-not-at-top
        done = None if root is None else root / "finetuned"
        greedy_id = _digest.array_sha256(result.link_product(levels - 1))
        if done is not None and (done / "hierarchy.safetensors").is_file():
            tuned = HierarchicalResult.load(done)
            ft = tuned.metadata.get("finetune", {})
            if (tuned.metadata.get("greedy") == greedy_id and ft.get("steps") == finetune_steps
                    and ft.get("learning_rate") == float(finetune_lr)):
                return tuned  # the same fine-tune of the same greedy levels, finished before
        tuned = finetune_hierarchy(load_data(x, layer), result, steps=finetune_steps,
                                   learning_rate=finetune_lr)
        tuned = dataclasses.replace(tuned, metadata={**tuned.metadata, "greedy": greedy_id})
        if done is not None:
            tuned.save(done)
        return tuned
    return result


def _check_manifest(root: Path, data_id: str, settings: dict) -> None:
    """Creates the checkpoint manifest, or verifies an existing one matches."""
    path = root / "manifest.json"
    want = {"format": _CKPT_FORMAT, "data": data_id, "settings": settings}
    if not path.exists():
        _io.write_json(path, want)
        return
    have = _io.read_json(path)
    if have.get("format") != _CKPT_FORMAT:
        raise ValueError(f"{path} is not a hierarchical SNMF checkpoint")
    remedy = "delete it or choose another checkpoint_dir"
    _resume.refuse_resume(f"checkpoint {root}", have.get("data") or {}, data_id, kind="data",
                          remedy=remedy)
    # Fine-tune settings do not change the greedy levels a checkpoint holds.
    keep = lambda s: {k: v for k, v in s.items() if not k.startswith("finetune")}
    saved, now = keep(have.get("settings", {})), keep(json.loads(json.dumps(settings)))
    _resume.refuse_resume(f"checkpoint {root}", saved, now, kind="settings", remedy=remedy)


def _save_level(root: Path | None, level: int, res: SNMFResult, input_id: str | None,
                links: np.ndarray | None = None, restart_losses: list | None = None) -> None:
    if root is None:
        return
    meta: dict[str, Any] = {**res.metadata, "input": input_id}
    if restart_losses is not None:
        meta["restart_losses"] = [float(v) for v in restart_losses]
    codes = res.codes if links is None else links  # upper levels keep the folded links
    SNMFResult(features=res.features, codes=codes, losses=res.losses, best_iter=res.best_iter,
               converged=res.converged, settings=res.settings,
               metadata=meta).save(root / f"level-{level}")


def _restore_level(root: Path | None, level: int, input_id: str | None):
    if root is None or not (root / f"level-{level}" / "snmf.safetensors").is_file():
        return None
    res = SNMFResult.load(root / f"level-{level}")
    if res.metadata.get("input") != input_id:
        raise ValueError(f"checkpoint {root / f'level-{level}'} was fitted from other input "
                         f"than the level below now gives; delete it to refit")
    log.info("hierarchy: reusing level %d from %s", level, root)
    return res
