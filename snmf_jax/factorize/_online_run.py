"""The host loop of `fit_online`: batches, progress, held-out scores, checkpoints."""

from __future__ import annotations

import hashlib
import itertools
import logging
from pathlib import Path

import jax
import numpy as np

from snmf_jax import _progress
from snmf_jax.factorize import (_distributed, _encode, _online_batches, _online_step,
                                _threads)
from snmf_jax.factorize._result import SNMFResult

log = logging.getLogger("snmf_jax")


def _beta(t: int, forget: float) -> float:
    """β_t = (1 − 1/t)^ρ of batch t (1-based); 0 for the first batch."""
    return 0.0 if t <= 1 else (1.0 - 1.0 / t) ** forget


def _sample(gen, rows: int) -> tuple[list[np.ndarray], np.ndarray]:
    """Pulls batches until they hold `rows` rows; returns them and their rows (capped)."""
    taken, count = [], 0
    for batch in gen:
        taken.append(batch)
        count += len(batch)
        if count >= rows:
            break
    if not taken:
        raise ValueError("source has no rows")
    return taken, np.concatenate(taken)[:rows]


def run(plan, opts, *, held_out, held_out_every, features_init, codes, checkpoint_dir,
        devices, progress: bool, callback, metadata: dict) -> SNMFResult:
    """See `fit_online` (arguments already validated)."""
    config = opts.solver_config
    k = opts.rank
    step_fn = _online_step.compiled_step(config, int(opts.code_iters), devices.mesh)
    iterable = isinstance(plan, _online_batches.IterableBatches)
    settings = opts.settings(plan.d if plan.d is not None else -1)
    settings.pop("d")  # an iterable's d is known at its first block; the features carry it
    ckpt = None
    state = None
    if checkpoint_dir is not None:
        plan.track = iterable
        if jax.process_count() > 1:  # each process its own file (the folder may be shared)
            checkpoint_dir = (Path(checkpoint_dir) /
                              f"process-{jax.process_index():05d}-of-{jax.process_count():05d}")
        ckpt = _online_step.OnlineCheckpointer(checkpoint_dir, settings, plan.identity())
        state = ckpt.restore()
        at = _distributed.allgather_ints([-1 if state is None else
                                          int(state["position"]["batches"])])[:, 0]
        if len(set(at.tolist())) > 1:
            raise ValueError(f"the processes' checkpoints under {checkpoint_dir} are at "
                             f"batches {at.tolist()} (a crash between their writes); "
                             "delete them to restart, or restore the older ones")
    if state is not None:
        phi, a, b, w = state["features"], state["a"], state["b"], state["w"]
        losses, batch_rows = state["losses"], state["batch_rows"]
        pos, held_hist = state["position"], state["held_out"]
        if plan.d is not None and phi.shape != (k, plan.d):
            raise ValueError(f"checkpoint {ckpt.path} holds features of shape {phi.shape}; "
                             f"this fit needs ({k}, {plan.d})")
        if iterable and plan.n_rows is None and pos.get("rows_per_pass"):
            plan.n_rows = int(pos["rows_per_pass"])
            plan.batches_per_pass = -(-plan.n_rows // opts.batch_size)
        log.info("resuming online SNMF from %s at batch %d", ckpt.path, pos["batches"])
    else:
        phi = a = b = None
        w, losses, batch_rows, held_hist = 0.0, [], [], []
        pos = {"batches": 0, "pass": 0, "in_pass": 0}
    t, e, j = int(pos["batches"]), int(pos["pass"]), int(pos["in_pass"])

    def evaluate():
        if held_out is None:
            return
        r = _encode.encode_loss(held_out, np.asarray(phi), batch_size=opts.batch_size,
                                iters=opts.eval_iters, mu_eps=opts.mu_eps)
        rows = int(sum(batch_rows))
        held_hist.append({"batches": t, "rows_seen": rows, "mean_loss": r.mean_loss,
                          "fve": r.fve, "n_rows": r.n_rows})
        log.info("online SNMF batch %d: held-out loss %.6g, FVE %.4f", t, r.mean_loss, r.fve)

    def save(digest):
        if ckpt is None:
            return
        ckpt.save({"features": np.asarray(phi), "a": np.asarray(a), "b": np.asarray(b),
                   "w": w, "losses": losses, "batch_rows": batch_rows,
                   "position": {"batches": t, "pass": e, "in_pass": j,
                                "rows_per_pass": plan.n_rows,
                                **({"digest": digest.hexdigest()} if digest else {})},
                   "held_out": held_hist})

    total = plan.n_rows * opts.passes if plan.n_rows is not None else None
    bar = _progress.bar(total, initial=int(sum(batch_rows)), desc="snmf online", unit="row",
                        unit_scale=True, progress=progress)
    with _threads.limit_blas_threads(), bar:
        while e < opts.passes:
            gen = plan.batches(e, skip=j)
            digest = hashlib.sha256() if (iterable and ckpt is not None) else None
            if phi is None:  # a fresh fit: features from the first batches
                taken, sample = _sample(gen, opts.sample_rows)
                d = sample.shape[1]
                if k > d:
                    raise ValueError(f"rank must be in [1, d] = [1, {d}]; got {k}")
                phi = (features_init if features_init is not None else
                       _online_step.initial_features(sample, k, opts.init, opts.seed))
                if phi.shape[1] != d:
                    raise ValueError(f"features_init has width {phi.shape[1]}; the rows "
                                     f"have d = {d}")
                a, b = np.zeros((k, k), np.float32), np.zeros((k, d), np.float32)
                phi, a, b = devices.rep(phi), devices.rep(a), devices.rep(b)
                gen = itertools.chain(taken, gen)
            elif not hasattr(phi, "sharding"):
                phi, a, b = devices.rep(phi), devices.rep(a), devices.rep(b)
            pass_loss = pass_sq = 0.0
            for n_in, batch in enumerate(gen):
                if iterable and ckpt is not None and n_in == 0 and j > 0:
                    if plan.skipped_digest != pos.get("digest"):
                        raise ValueError(
                            f"checkpoint {ckpt.path}: the source's first {j} batches of "
                            f"pass {e} differ from those the checkpoint was written after; "
                            "resume with the same stream of rows")
                    digest = plan.digest
                m = len(batch)
                if digest is not None:
                    digest.update(np.ascontiguousarray(batch).tobytes())
                t += 1
                j += 1
                beta = _beta(t, float(opts.forget))
                w_new = beta * w + m
                alpha, gamma = np.float32(beta * w / w_new), np.float32(1.0 / w_new)
                phi, a, b, loss, sq = step_fn(devices.put(batch), phi, a, b,
                                              devices.rep(alpha), devices.rep(gamma))
                w = w_new
                loss, sq = float(loss), float(sq)
                if not (np.isfinite(loss) and np.isfinite(sq)):
                    raise FloatingPointError(
                        f"online SNMF batch {t} has a non-finite loss ({loss}); rescale X "
                        "(e.g. divide by its largest absolute value) and retry")
                losses.append(loss / m)
                batch_rows.append(m)
                pass_loss, pass_sq = pass_loss + loss, pass_sq + sq
                bar.update(m)
                bar.set_postfix(loss=f"{pass_loss / max(pass_sq, 1e-30):.4g}", refresh=False)
                if callback is not None:
                    callback(t, loss / m)
                if held_out_every is not None and t % held_out_every == 0:
                    evaluate()
                if t % opts.checkpoint_every == 0:
                    save(digest)
            if j == 0 and iterable and pos.get("digest") is not None and plan.skipped_digest \
                    is None:
                raise ValueError(f"checkpoint {ckpt.path}: the source ended before the "
                                 "checkpoint's position; resume with the same stream of rows")
            if iterable and plan.n_rows is None and j:
                plan.n_rows = int(sum(batch_rows[-j:]))  # this pass's batches
                plan.batches_per_pass = j
            e, j = e + 1, 0
            if held_out_every is None:
                evaluate()
            save(None)
    return _result(plan, opts, phi, losses, batch_rows, held_hist, settings, codes, devices,
                   metadata, t)


def _result(plan, opts, phi, losses, batch_rows, held_hist, settings, codes, devices,
            metadata, t) -> SNMFResult:
    features = np.asarray(jax.device_get(phi), np.float32)
    rows = np.asarray(batch_rows, np.int64)
    per_batch = np.asarray(losses, np.float64)
    per_pass = []
    if plan.batches_per_pass:
        for s in range(0, len(rows), plan.batches_per_pass):
            r = rows[s:s + plan.batches_per_pass]
            per_pass.append(float(np.sum(per_batch[s:s + len(r)] * r) / max(r.sum(), 1)))
    for h in held_hist:
        h["passes"] = h["rows_seen"] / plan.n_rows if plan.n_rows else None
    meta = {**metadata, "online": {
        "batches": int(t), "rows_seen": int(rows.sum()), "pass_mean_loss": per_pass,
        "held_out": held_hist,
        "dead_features": int(np.sum(~np.any(features != 0, axis=1)))}}
    code_arr = None
    if codes is not False:
        src = plan.x if isinstance(plan, _online_batches.ArrayBatches) else plan.src
        kw = dict(batch_size=opts.batch_size, iters=opts.eval_iters, mu_eps=opts.mu_eps)
        if codes is True:
            code_arr = _encode.encode(src, features, **kw)
        else:
            store = _encode.encode(src, features, out=codes, **kw)
            meta["codes_store"] = str(Path(store.path))
    n_dev = 1 if devices.mesh is None else int(devices.mesh.size)
    return SNMFResult(features=features, codes=code_arr, losses=per_batch, best_iter=int(t),
                      converged=False,
                      settings={**settings, "d": int(features.shape[1]),
                                "passes": int(opts.passes), "eval_iters": int(opts.eval_iters),
                                "n_tokens": plan.n_rows, "dtype": "float32",
                                "devices": n_dev},
                      metadata=meta)
