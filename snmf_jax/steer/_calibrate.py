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
import math
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array
from tqdm.auto import tqdm

from snmf_jax.models._config import ModelConfig
from snmf_jax.models._patch import SitePatch
from snmf_jax.models._transformer import forward
from snmf_jax.steer._directions import Directions
from snmf_jax.steer._generate import encode_prompts, left_pad
from snmf_jax.steer._patches import check_where
from snmf_jax.steer._steer import patched_forward, patched_forward_impl

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


class Split(NamedTuple):
    """A model cut for the search: shared prefix run once, body per row, head at the end.

    The body is blocks [start, L) with an embedding table holding the
    residual stream that enters block `start` (token i = prompt position i),
    and a one-column unembedding (its logits are ignored). The head is a
    zero-block model holding the final norm and the real unembedding: it is
    run on each row's last position only, instead of on all T positions.

    Attributes:
      body: params of the body.
      body_config: its ModelConfig.
      tokens: (1, T) tokens for the body.
      head: params of the head, without "embed" (filled per call).
      head_config: its ModelConfig (vocab_size is replaced per call).
      start: first block of the body (patch layers shift by -start).
    """

    body: dict
    body_config: ModelConfig
    tokens: Array
    head: dict
    head_config: ModelConfig
    start: int


def _embed_scale(config: ModelConfig, dtype) -> Array:
    """The factor `forward` multiplies embeddings by (Gemma: sqrt(D) in the params dtype)."""
    if config.family in ("gemma2", "gemma3"):
        return jnp.asarray(math.sqrt(config.d_model), dtype)
    return jnp.asarray(1.0, dtype)


def split_model(params, config: ModelConfig, layer: int, tokens, attention_mask, *,
                share_prefix: bool = True, stream: Array | None = None) -> Split:
    """Cuts a model so a batch of rows patched at `layer` shares what it can.

    Rows that differ only by a patch at `layer` share everything before it;
    that prefix runs once here (when `share_prefix` and layer > 0). Every
    piece runs through the contract's `forward`, so the maths is the model's.

    Args:
      params: weights.
      config: the model's config.
      layer: the patched block.
      tokens: (1, T) prompt.
      attention_mask: (1, T).
      share_prefix: run blocks [0, layer) once instead of once per row.
      stream: (T, D) resid_post of block layer - 1 on the prompt, if already
        computed (saves a forward).

    Returns:
      A Split.
    """
    dtype = params["embed"].dtype
    d = config.d_model
    start = layer if share_prefix else 0
    if start > 0:
        if stream is None:
            out = patched_forward(params, tokens, None, config=config,
                                  attention_mask=attention_mask,
                                  capture=((start - 1, "resid_post"),))
            stream = out.captures[(start - 1, "resid_post")][0]
        x = stream  # (T, D) residual stream entering block `start`
        embed = x / _embed_scale(config, dtype)
        body_tokens = jnp.arange(x.shape[0], dtype=jnp.int32)[None]  # (1, T)
    else:
        embed, body_tokens = params["embed"], tokens
    extra = {}
    if config.family == "gpt2":  # positions are in the shared stream already
        extra["pos_embed"] = (jnp.zeros_like(params["pos_embed"]) if start > 0
                              else params["pos_embed"])
    body = {"embed": embed, "layers": jax.tree.map(lambda a: a[start:], params["layers"]),
            "final_norm": params["final_norm"],
            "unembed": {"kernel": jnp.zeros((d, 1), dtype)}, **extra}
    body_config = dataclasses.replace(
        config, n_layers=config.n_layers - start, vocab_size=embed.shape[0],
        layer_types=config.layer_types[start:], tie_embeddings=False)
    # A tied unembedding stays (V, D): batched_kl transposes it inside jit, where
    # XLA folds the transpose into the product (the fast orientation on CPU).
    head = {"layers": jax.tree.map(lambda a: a[:0], params["layers"]),
            "final_norm": params["final_norm"],
            "unembed": ({"kernel": params["unembed"]["kernel"]} if not config.tie_embeddings
                        else {"embedding": params["embed"]})}
    if config.family == "gpt2":
        head["pos_embed"] = jnp.zeros_like(params["pos_embed"])
    head_config = dataclasses.replace(config, n_layers=0, layer_types=(),
                                      tie_embeddings=False)
    return Split(body, body_config, body_tokens, head, head_config, start)


@functools.partial(jax.jit, static_argnames=(
    "config", "layer", "site", "where", "replace", "head_config"))
def batched_kl(params, tokens, attention_mask, base_logp, vectors, scales, head=None, *,
               config, layer: int, site: str, where: str = "all", replace: bool = False,
               head_config: ModelConfig | None = None):
    """KL(p_base || p_steered) of the next token for R patched copies of a prompt.

    Args:
      params: weights (of a full model, or a Split's body).
      tokens: (1, T) int32 prompt (left-padded).
      attention_mask: (1, T) int32.
      base_logp: (V,) unsteered next-token log-probabilities.
      vectors: (R, dim) one direction per row (signed).
      scales: (R,) α per row.
      head: a Split's head params, or None to read the model's own logits.
      config: ModelConfig of `params` (static).
      layer, site: where the rows are patched (static).
      where: position mode (static).
      replace: replace instead of add (static).
      head_config: the Split's head config (static; with `head`).

    Returns:
      (R,) float32 KL per row.
    """
    r, t = vectors.shape[0], tokens.shape[1]
    toks = jnp.broadcast_to(tokens, (r, t))  # (R, T)
    mask = jnp.broadcast_to(attention_mask, (r, t))  # (R, T)
    patch = {(layer, site): SitePatch(vectors, scales, jnp.float32(replace), None)}
    last = (config.n_layers - 1, "resid_post")
    out = patched_forward_impl(params, toks, patch, config=config, where=where,
                               attention_mask=mask, capture=(last,) if head is not None else ())
    if head is None:
        logits = out.logits[:, -1]  # (R, V)
    else:
        x = out.captures[last][:, -1]  # (R, D) last position of each row
        dtype = head["final_norm"]["scale"].dtype
        unembed = head["unembed"]
        if "embedding" in unembed:
            unembed = {"kernel": unembed["embedding"].T}  # (D, V), fused into the dot
        hp = dict(head, embed=x / _embed_scale(head_config, dtype), unembed=unembed)
        hc = dataclasses.replace(head_config, vocab_size=r)
        logits = forward(hp, jnp.arange(r, dtype=jnp.int32)[:, None], config=hc).logits[:, 0]
    logp = jax.nn.log_softmax(logits, axis=-1)  # (R, V)
    p = jnp.exp(base_logp)
    return jnp.sum(p * (base_logp - logp), axis=-1)


@functools.partial(jax.jit, static_argnames=("config", "layer", "site"))
def _base(params, tokens, attention_mask, *, config, layer, site):
    """Unsteered next-token log-probs (V,), mean site norm (), stream entering `layer`."""
    capture = ((layer, site),) + (((layer - 1, "resid_post"),) if layer > 0 else ())
    out = patched_forward_impl(params, tokens, None, config=config,
                               attention_mask=attention_mask, capture=capture)
    h = out.captures[(layer, site)][0]  # (T, dim)
    m = attention_mask[0].astype(jnp.float32)
    ref = jnp.sum(jnp.linalg.norm(h.astype(jnp.float32), axis=-1) * m) / jnp.sum(m)
    stream = out.captures[(layer - 1, "resid_post")][0] if layer > 0 else None
    return jax.nn.log_softmax(out.logits[0, -1]), ref, stream


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
        kl = np.nan_to_num(np.asarray(kl, np.float64), nan=0.0)
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
        rows (see `split_model`) instead of once per row.
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
    if growth <= 1:
        raise ValueError(f"growth must be > 1; got {growth}")
    if max_steps < 1:
        raise ValueError(f"max_steps must be >= 1; got {max_steps}")
    if max_rows < 1:
        raise ValueError(f"max_rows must be >= 1; got {max_rows}")
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
    cut = split_model(model.params, config, layer, tokens, mask, share_prefix=share_prefix,
                      stream=stream)
    kl_fn = functools.partial(batched_kl, cut.body, cut.tokens, mask, base_logp, head=cut.head,
                              config=cut.body_config, head_config=cut.head_config,
                              layer=layer - cut.start, site=site, where=where,
                              replace=mode == "replace")
    steps = 0
    with tqdm(total=max_steps, desc="calibrate", disable=not progress, leave=False) as bar:
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
