"""Calibrating steering strength to KL targets, for many directions at once.

For a prompt, α is chosen so that KL(p_base || p_steered) of the next-token
distribution after the prompt hits each target. Every (direction, target)
pair is one row of a single batch: each search step runs ONE batched forward
whose rows carry their own vector and α (the patch's per-row leaves), then
updates every row's bracket on the host.

Per row: evaluate α; grow it geometrically while KL < target (shrink while
KL >= target at the start) until the target is bracketed or α reaches
`alpha_max` / `alpha_min`; then bisect the bracket in log space. Rows whose
KL never reaches the target up to `alpha_max` are reported as unreachable
(with the best KL reached) instead of being dropped. +α and −α are separate
searches (KL is not symmetric in α).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from snmf_jax import _checks, _progress
from snmf_jax.models import SitePatch, embed, run_blocks, unembed
from snmf_jax.steer._directions import Directions
from snmf_jax.steer._generate import encode_prompts, left_pad
from snmf_jax.steer._patches import check_where, position_mask

DEFAULT_TARGETS = (0.025, 0.05, 0.1, 0.15, 0.25, 0.35, 0.5)
DEFAULT_PROMPT = "I think that"


@dataclasses.dataclass(frozen=True, eq=False)
class Calibration:
    """Calibrated steering strengths for F directions and T KL targets.

    Attributes:
      alphas: (F, T) α magnitudes (>= 0); the steering scale is sign * α.
      kl: (F, T) KL(p_base || p_steered) achieved at `alphas`.
      reachable: (F, T) False where KL stayed below the target up to
        alpha_max (then `alphas`/`kl` hold the largest KL reached).
      targets: the T KL targets.
      sign: +1 or -1.
      ids: (F,) direction ids (feature indices).
      layer, site: where the directions are applied.
      where: position mode used.
      prompt: the calibration prompt.
      n_steps: search steps run (one batched forward each).
    """

    alphas: np.ndarray
    kl: np.ndarray
    reachable: np.ndarray
    targets: tuple[float, ...]
    sign: int
    ids: tuple[int, ...]
    layer: int
    site: str
    where: str
    prompt: str
    n_steps: int

    def target_index(self, target: float) -> int:
        """Column of the target closest to `target`."""
        return int(np.argmin(np.abs(np.asarray(self.targets) - target)))

    def scales(self, target: float) -> np.ndarray:
        """(F,) signed scales for the target (closest calibrated target)."""
        return (self.sign * self.alphas[:, self.target_index(target)]).astype(np.float32)

    def patch(self, directions: Directions, target: float):
        """The batched patch steering every direction at its calibrated α for `target`."""
        if len(directions) != len(self.alphas):
            raise ValueError(f"directions has {len(directions)} rows; the calibration has "
                             f"{len(self.alphas)}")
        return directions.patch(self.scales(target))

    def __repr__(self) -> str:
        n_bad = int((~self.reachable).sum())
        return (f"Calibration(F={self.alphas.shape[0]}, targets={self.targets}, "
                f"sign={self.sign:+d}, unreachable={n_bad}, steps={self.n_steps})")


@functools.partial(jax.jit, static_argnames=("config", "layer", "site", "where", "replace"))
def batched_kl(params, tokens, attention_mask, base_logp, vectors, scales, stream=None, *,
               config, layer: int, site: str, where: str = "all", replace: bool = False):
    """KL(p_base || p_steered) of the next token for R patched copies of a prompt.

    Rows differ only by the patch at `layer`, so with `stream` (the residual
    stream entering `layer`, computed once) only blocks [layer, L) run per
    row, and the unembedding runs on each row's last position only. The
    pieces are the model's own (`run_blocks`, `unembed`).

    Args:
      params: the model's weights.
      tokens: (1, T) int32 prompt (left-padded).
      attention_mask: (1, T) int32.
      base_logp: (V,) unsteered next-token log-probabilities.
      vectors: (R, dim) one direction per row (signed).
      scales: (R,) α per row.
      stream: (T, D) residual stream entering block `layer` on the prompt,
        or None to run every block per row.
      config: the model's ModelConfig (static).
      layer, site: where the rows are patched (static).
      where: position mode (static).
      replace: replace instead of add (static).

    Returns:
      (R,) float32 KL per row.
    """
    r, t = vectors.shape[0], tokens.shape[1]
    mask = jnp.broadcast_to(attention_mask, (r, t))  # (R, T)
    pos = position_mask(where, t, prompt_len=t, attention_mask=mask)
    patch = {(layer, site): SitePatch(vectors, scales, jnp.float32(replace),
                                      jnp.broadcast_to(pos, (r, t)))}  # positions (R, T)
    if stream is None:
        start = 0
        x = embed(params, jnp.broadcast_to(tokens, (r, t)), config=config,
                  attention_mask=mask)  # (R, T, D)
    else:
        start = layer
        x = jnp.broadcast_to(stream[None], (r, *stream.shape))  # (R, T, D)
    x, _, _ = run_blocks(params, x, config=config, start=start, attention_mask=mask,
                         patch=patch)
    logits = unembed(params, x[:, -1], config=config)  # (R, V)
    logp = jax.nn.log_softmax(logits, axis=-1)  # (R, V)
    p = jnp.exp(base_logp)
    return jnp.sum(p * (base_logp - logp), axis=-1)


@functools.partial(jax.jit, static_argnames=("config", "layer", "site"))
def _base(params, tokens, attention_mask, *, config, layer, site):
    """Unsteered next-token log-probs (V,), mean site norm (), stream entering `layer` (T, D)."""
    x = embed(params, tokens, config=config, attention_mask=attention_mask)  # (1, T, D)
    stream, _, _ = run_blocks(params, x, config=config, stop=layer,
                              attention_mask=attention_mask)  # (1, T, D)
    x, caps, _ = run_blocks(params, stream, config=config, start=layer,
                            attention_mask=attention_mask, capture=((layer, site),))
    h = caps[(layer, site)][0]  # (T, dim)
    m = attention_mask[0].astype(jnp.float32)
    ref = jnp.sum(jnp.linalg.norm(h.astype(jnp.float32), axis=-1) * m) / jnp.sum(m)
    logits = unembed(params, x[0, -1], config=config)  # (V,)
    return jax.nn.log_softmax(logits), ref, stream[0]


class SearchState:
    """Host-side bracket of every row (numpy arrays of shape (R,)).

    Attributes:
      alpha: next α to evaluate.
      lo: largest α seen with KL < target (0: none yet).
      hi: smallest α seen with KL >= target (inf: none yet).
      best_alpha, best_kl: the evaluation closest to the target (log ratio).
      exhausted: KL < target at alpha_max (unreachable).
    """

    def __init__(self, targets: np.ndarray, alpha0: float, *, alpha_min: float,
                 alpha_max: float, growth: float):
        r = targets.shape[0]
        self.targets = targets
        self.alpha_min, self.alpha_max, self.growth = alpha_min, alpha_max, growth
        self.alpha = np.full(r, alpha0, np.float64)
        self.lo = np.zeros(r)
        self.hi = np.full(r, np.inf)
        self.best_alpha = np.zeros(r)
        self.best_kl = np.zeros(r)
        self.best_err = np.full(r, np.inf)
        self.exhausted = np.zeros(r, bool)

    def update(self, kl: np.ndarray) -> None:
        """Records KL at the current α and picks each row's next α."""
        # A NaN KL means the steered logits overflowed: α is too large, so it
        # counts as above every target (the bracket shrinks; it is never taken
        # for "unreachable", nor returned as the best α).
        kl = np.nan_to_num(np.asarray(kl, np.float64), nan=np.inf)
        a, tgt = self.alpha, self.targets
        err = np.abs(np.log(np.maximum(kl, 1e-30) / tgt))
        better = err < self.best_err
        self.best_alpha = np.where(better, a, self.best_alpha)
        self.best_kl = np.where(better, kl, self.best_kl)
        self.best_err = np.where(better, err, self.best_err)
        above = kl >= tgt
        self.hi = np.where(above, np.minimum(self.hi, a), self.hi)
        self.lo = np.where(above, self.lo, np.maximum(self.lo, a))
        self.exhausted |= ~above & (a >= self.alpha_max)
        grow = np.minimum(a * self.growth, self.alpha_max)  # no upper bracket yet
        shrink = np.maximum(a / self.growth, self.alpha_min)  # no lower bracket yet
        bisect = np.sqrt(np.maximum(self.lo, 1e-300) * self.hi)  # log-space midpoint
        self.alpha = np.where(np.isinf(self.hi), grow, np.where(self.lo == 0, shrink, bisect))

    @property
    def reachable(self) -> np.ndarray:
        return np.isfinite(self.hi)

    def done(self, rtol: float) -> np.ndarray:
        """Rows that need no more steps."""
        converged = self.best_err <= np.log1p(rtol)
        collapsed = (self.lo > 0) & (self.hi <= self.lo * (1 + 1e-6))
        floored = (self.lo == 0) & (self.hi <= self.alpha_min)  # KL > target at alpha_min
        return converged | collapsed | floored | self.exhausted


def _check_targets(targets) -> np.ndarray:
    t = np.asarray(targets, np.float64).reshape(-1)
    if t.size == 0 or not np.all(np.isfinite(t)) or np.any(t <= 0):
        raise ValueError(f"targets must be positive finite KL values; got {list(targets)}")
    return t


def calibrate_signs(model, directions: Directions, *, signs: Sequence[int] = (1, -1),
                    targets: Sequence[float] = DEFAULT_TARGETS,
                    prompt: str | Sequence[int] = DEFAULT_PROMPT, where: str = "all",
                    mode: str = "add", chat: bool = False, alpha_init: float | None = None,
                    alpha_min: float | None = None, alpha_max: float | None = None,
                    growth: float = 2.0, max_steps: int = 40, rtol: float = 0.02,
                    max_rows: int = 1024, share_prefix: bool = True,
                    progress: bool = True) -> tuple[Calibration, ...]:
    """Finds α per (sign, direction, target) with KL(p_base || p_steered) = target.

    All S x F x T searches run together: each step is one batched forward
    (split into equal chunks only when the rows exceed `max_rows`).

    Args:
      model: a Model.
      directions: F Directions (unit vectors at one site).
      signs: searches to run, +1 (along the directions) and/or -1 (against);
        each sign is its own search (KL is not symmetric in α).
      targets: T positive KL targets (nats).
      prompt: calibration prompt (text or token ids); KL is measured on the
        next-token distribution after it.
      where: "all" or "prompt" ("generated" leaves that distribution unchanged).
      mode: "add" (steering) or "replace".
      chat: wrap a text prompt in the tokenizer's chat template.
      alpha_init: first α of every row; default 0.25 x the mean norm of the
        site's activations on the prompt (the natural scale of the site).
      alpha_min, alpha_max: search range; default 1e-4 x and 100 x that norm.
      growth: bracketing factor (> 1).
      max_steps: search steps (batched forwards) at most.
      rtol: a row is done when |KL / target - 1| <= rtol; the search stops
        when every row is done (0: always run max_steps).
      max_rows: rows per forward call; more rows are split into equal chunks
        (bounds memory: each row holds a (vocab,) logits row and its
        activations).
      share_prefix: run the blocks before the patched layer once for all
        rows (see `batched_kl`) instead of once per row.
      progress: show a tqdm bar.

    Returns:
      One Calibration per sign, each with alphas, kl, reachable of shape (F, T).
    """
    check_where(where)
    if where == "generated":
        raise ValueError("where='generated' does not change the next-token distribution after "
                         "the prompt; calibrate with where='all' or 'prompt'")
    signs = tuple(int(s) for s in signs)
    if not signs or any(s not in (1, -1) for s in signs):
        raise ValueError(f"signs must be a non-empty sequence of +1 / -1; got {signs!r}")
    if mode not in ("add", "replace"):
        raise ValueError(f"mode must be 'add' or 'replace'; got {mode!r}")
    growth = _checks.real("growth", growth, lo=1, lo_open=True)
    rtol = _checks.real("rtol", rtol, lo=0)
    alpha_init, alpha_min, alpha_max = (
        None if v is None else _checks.real(name, v, lo=0, lo_open=True)
        for name, v in (("alpha_init", alpha_init), ("alpha_min", alpha_min),
                        ("alpha_max", alpha_max)))
    max_steps = _checks.integer("max_steps", max_steps, lo=1)
    max_rows = _checks.integer("max_rows", max_rows, lo=1)
    if not isinstance(directions, Directions):
        raise TypeError(f"directions must be a Directions; got {type(directions).__name__}")
    config = model.config
    layer, site = directions.layer, directions.site
    if not 0 <= layer < config.n_layers or directions.vectors.shape[1] != config.site_dim(site):
        raise ValueError(f"directions (layer {layer}, site {site!r}, width "
                         f"{directions.vectors.shape[1]}) do not fit the model "
                         f"({config.n_layers} layers, {site} width {config.site_dim(site)})")
    tgt = _check_targets(targets)
    n_s, n_f, n_t = len(signs), len(directions), tgt.size

    seq = (encode_prompts(model, prompt, chat=chat)[0] if isinstance(prompt, str)
           else [int(i) for i in prompt])
    tokens, mask = (jnp.asarray(a) for a in left_pad([seq], 0))
    base_logp, ref, stream = _base(model.params, tokens, mask, config=config, layer=layer,
                                   site=site)
    ref = max(float(ref), 1e-6)
    a0 = 0.25 * ref if alpha_init is None else float(alpha_init)
    a_min = 1e-4 * ref if alpha_min is None else float(alpha_min)
    a_max = 100.0 * ref if alpha_max is None else float(alpha_max)
    if not 0 < a_min <= a0 <= a_max:
        raise ValueError(f"need 0 < alpha_min <= alpha_init <= alpha_max; got alpha_min={a_min}, "
                         f"alpha_init={a0}, alpha_max={a_max}")

    # Rows: (sign, feature, target), target fastest; each row's vector carries its sign.
    unit = directions.vectors.astype(np.float32)
    vec = np.concatenate([np.repeat(s * unit, n_t, axis=0) for s in signs])  # (S*F*T, dim)
    rows = vec.shape[0]
    state = SearchState(np.tile(tgt, n_s * n_f), a0, alpha_min=a_min, alpha_max=a_max,
                        growth=growth)
    n_chunks = -(-rows // max_rows)
    chunk = -(-rows // n_chunks)
    pad = n_chunks * chunk - rows  # equal chunks: one compiled shape
    vec = jnp.asarray(np.concatenate([vec, np.zeros((pad, vec.shape[1]), np.float32)]))
    kl_fn = functools.partial(batched_kl, model.params, tokens, mask, base_logp,
                              stream=stream if share_prefix else None, config=config,
                              layer=layer, site=site, where=where, replace=mode == "replace")
    steps = 0
    with _progress.bar(max_steps, desc="calibrate", progress=progress, leave=False) as bar:
        for steps in range(1, max_steps + 1):
            alphas = jnp.asarray(np.concatenate([state.alpha, np.zeros(pad)]), jnp.float32)
            kls = [kl_fn(vec[i * chunk:(i + 1) * chunk], alphas[i * chunk:(i + 1) * chunk])
                   for i in range(n_chunks)]
            state.update(np.concatenate([np.asarray(k) for k in kls])[:rows])
            done = state.done(rtol)
            bar.update(1)
            bar.set_postfix(done=f"{int(done.sum())}/{rows}")
            if rtol > 0 and done.all():
                break

    shape = (n_s, n_f, n_t)
    alphas = state.best_alpha.reshape(shape).astype(np.float32)
    kl = state.best_kl.reshape(shape).astype(np.float32)
    reachable = state.reachable.reshape(shape)
    ids = directions.ids or tuple(range(n_f))
    label = prompt if isinstance(prompt, str) else str(list(prompt))
    return tuple(
        Calibration(alphas=alphas[i], kl=kl[i], reachable=reachable[i],
                    targets=tuple(float(t) for t in tgt), sign=s, ids=ids, layer=layer,
                    site=site, where=where, prompt=label, n_steps=steps)
        for i, s in enumerate(signs))


def calibrate(model, directions: Directions, *, sign: int = 1, **kwargs) -> Calibration:
    """Finds α per (direction, target) for one sign; see `calibrate_signs`.

    Args:
      model: a Model.
      directions: F Directions.
      sign: +1 or -1.
      **kwargs: targets, prompt, where, mode, chat, alpha_init, alpha_min,
        alpha_max, growth, max_steps, rtol, max_rows, share_prefix, progress.

    Returns:
      Calibration with alphas, kl, reachable of shape (F, T).
    """
    if sign not in (1, -1):
        raise ValueError(f"sign must be +1 or -1; got {sign!r}")
    return calibrate_signs(model, directions, signs=(sign,), **kwargs)[0]


def calibrate_both(model, directions: Directions, **kwargs) -> tuple[Calibration, Calibration]:
    """(+α, −α) calibrations from one batched search; see `calibrate_signs`."""
    return calibrate_signs(model, directions, signs=(1, -1), **kwargs)
