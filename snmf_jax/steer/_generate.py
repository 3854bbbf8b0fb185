"""Steered text generation: prefill + KV-cached decode in one jitted loop.

The whole generation (prefill, then a `lax.while_loop` of one-token decode
steps over a fixed-size cache) is one compiled program per (batch, padded
prompt length, max_new_tokens, static options); patches, temperature, top-k,
top-p and seeds are traced. Prompts are left-padded to a multiple of
`pad_multiple` tokens so nearby prompt lengths share a program.

Sampling (temperature, top-k, top-p) is in `_sampling`.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array, lax

from snmf_jax import _checks
from snmf_jax.models import init_cache
from snmf_jax.steer._patches import check_patch, check_where, repeat_rows
from snmf_jax.steer._forward import patched_forward
from snmf_jax.steer._sampling import check_sampling, sample_logits


# ----------------------------------------------------------------- decoding

@functools.partial(jax.jit, static_argnames=(
    "config", "where", "max_new_tokens", "greedy", "use_top_k", "use_top_p", "use_cache",
    "max_k"))
def generate_tokens(params, tokens, attention_mask, patch, key, temperature, top_k, top_p,
                    stop_ids, pad_id, *, config, where: str, max_new_tokens: int,
                    greedy: bool, use_top_k: bool, use_top_p: bool,
                    use_cache: bool = True, max_k: int | None = None) -> Array:
    """Decodes `max_new_tokens` tokens for a left-padded batch (jitted).

    Args:
      params: weights.
      tokens: (B, Tp) int32, left-padded prompts.
      attention_mask: (B, Tp) int32, 1 for real tokens.
      patch: Patch with unbatched leaves or B rows (or None / {}).
      key: PRNG key; step s samples with fold_in(key, s).
      temperature, top_k, top_p: () traced sampling settings.
      stop_ids: (E,) int32 ids that end a row (-1 entries match nothing).
      pad_id: () int32 written after a row stopped.
      config: ModelConfig (static).
      where: position mode (static).
      max_new_tokens: decode steps (static).
      greedy: argmax instead of sampling (static).
      use_top_k, use_top_p: apply the filters (static, skips their cost).
      use_cache: decode with a KV cache; False re-runs the full forward on the
        whole (fixed-size) sequence at every step (reference path).
      max_k: static bound on top_k: sample among `lax.top_k(logits, max_k)`
        (see `sample_logits`); None filters the whole vocabulary.

    Returns:
      (B, max_new_tokens) int32 generated ids, pad_id after a stop token.
    """
    b, tp = tokens.shape
    n_new = max_new_tokens

    def choose(logits, step):
        if greedy:
            return jnp.argmax(logits, axis=-1).astype(jnp.int32)
        return sample_logits(jax.random.fold_in(key, step), logits, temperature=temperature,
                             top_k=top_k, top_p=top_p, use_top_k=use_top_k,
                             use_top_p=use_top_p, max_k=max_k)

    def finish(tok, done):
        tok = jnp.where(done, pad_id, tok)
        return tok, done | jnp.any(tok[:, None] == stop_ids[None, :], axis=-1)

    def run(toks, mask, cache):
        return patched_forward(params, toks, patch, config=config, where=where,
                                    attention_mask=mask, cache=cache, prompt_len=tp)

    def cond(state):
        step, done = state[0], state[-1]
        return (step < n_new) & ~jnp.all(done)

    buf = jnp.full((b, n_new), pad_id, jnp.int32)
    no_stop = jnp.zeros((b,), bool)
    if use_cache:
        cache = init_cache(config, b, tp + n_new, dtype=params["embed"].dtype)
        out = run(tokens, attention_mask, cache)
        tok, done = finish(choose(out.logits[:, -1], 0), no_stop)

        def body(state):
            step, cache, tok, buf, done = state
            out = run(tok[:, None], None, cache)  # (B, 1) next token; cache masks history
            tok, done = finish(choose(out.logits[:, -1], step), done)
            return step + 1, out.cache, tok, buf.at[:, step].set(tok), done

        state = (jnp.ones((), jnp.int32), out.cache, tok, buf.at[:, 0].set(tok), done)
        return lax.while_loop(cond, body, state)[3]

    seq = jnp.concatenate([tokens, buf], axis=1)  # (B, Tp + n_new)
    mask = jnp.concatenate([attention_mask, jnp.zeros((b, n_new), jnp.int32)], axis=1)

    def body_nc(state):
        step, seq, mask, done = state
        out = run(seq, mask, None)
        logits = lax.dynamic_index_in_dim(out.logits, tp + step - 1, axis=1, keepdims=False)
        tok, done = finish(choose(logits, step), done)
        seq = lax.dynamic_update_slice(seq, tok[:, None], (0, tp + step))
        mask = lax.dynamic_update_slice(mask, jnp.ones((b, 1), jnp.int32), (0, tp + step))
        return step + 1, seq, mask, done

    state = lax.while_loop(cond, body_nc, (jnp.zeros((), jnp.int32), seq, mask, no_stop))
    return state[1][:, tp:]


# ----------------------------------------------------------------- user API

@dataclasses.dataclass(frozen=True, eq=False)
class Generation:
    """Generated continuations, indexed [variant, prompt, sample].

    Attributes:
      tokens: (N, P, S, max_new_tokens) int32 generated ids (pad after a stop).
      lengths: (N, P, S) tokens generated, the stop token included.
      texts: nested tuples (N, P, S) of decoded continuations (stop token and
        special tokens dropped); empty when the model has no tokenizer.
      prompts: the P prompts as token id tuples (after any chat template).
    """

    tokens: np.ndarray
    lengths: np.ndarray
    texts: tuple
    prompts: tuple

    @property
    def text(self) -> str:
        """The first continuation (variant 0, prompt 0, sample 0)."""
        return self.texts[0][0][0]


def left_pad(seqs: Sequence[Sequence[int]], pad_id: int, multiple: int = 1):
    """Left-pads token lists to a common length (rounded up to `multiple`).

    Returns:
      tokens (B, T) int32 and attention_mask (B, T) int32.
    """
    _checks.integer("multiple", multiple, lo=1)
    if any(len(s) == 0 for s in seqs):
        raise ValueError("every prompt must have at least one token")
    t = max(len(s) for s in seqs)
    t = -(-t // multiple) * multiple
    tokens = np.full((len(seqs), t), pad_id, np.int32)
    mask = np.zeros((len(seqs), t), np.int32)
    for i, s in enumerate(seqs):
        tokens[i, t - len(s):] = s
        mask[i, t - len(s):] = 1
    return tokens, mask


def encode_prompts(model, prompts, *, chat: bool = False, add_bos: bool = True):
    """Token id lists for str / list-of-str / list-of-id-lists prompts."""
    if isinstance(prompts, str):
        prompts = [prompts]
    if not isinstance(prompts, Sequence) or not prompts:
        raise ValueError("prompts must be a string, a non-empty list of strings or a "
                         f"non-empty list of token id lists; got {prompts!r:.60}")
    prompts = list(prompts)
    if all(isinstance(p, str) for p in prompts):
        tok = model.tokenizer
        if tok is None:
            raise ValueError("text prompts need a model with a tokenizer; pass token ids instead")
        if chat:
            if not getattr(tok, "chat_template", None):
                raise ValueError(f"chat=True but the tokenizer of {model.name or 'the model'!r} "
                                 "has no chat template")
            texts = [tok.apply_chat_template([{"role": "user", "content": p}],
                                             add_generation_prompt=True) for p in prompts]
            # The template writes any BOS itself.
            return [list(tok.encode(t, add_bos=False)) for t in texts]
        return [list(tok.encode(p, add_bos=add_bos)) for p in prompts]
    if chat:
        raise ValueError("chat=True needs text prompts, not token ids")
    if any(isinstance(p, str) or not isinstance(p, Sequence) for p in prompts):
        raise ValueError("prompts must be all strings or all token id lists; got a mix")
    v = model.config.vocab_size
    return [[int(i) for i in _checks.token_ids(f"prompts[{j}]", p, v)]
            for j, p in enumerate(prompts)]


def _special_ids(model, stop_ids):
    tok, cfg = model.tokenizer, model.config
    if stop_ids is None:
        stop_ids = tuple(getattr(tok, "eos_ids", ()) or ()) or tuple(cfg.eos_token_ids)
    stop_ids = tuple(int(i) for i in _checks.token_ids("stop_ids", list(stop_ids),
                                                        cfg.vocab_size))
    pad = getattr(tok, "pad_id", None)
    if pad is None:
        pad = cfg.pad_token_id
    if pad is None:
        pad = stop_ids[0] if stop_ids else 0
    return stop_ids, int(pad)


def _candidate_bound(top_k: int, vocab_size: int) -> int | None:
    """The static candidate count for top-k sampling: top_k rounded up to a power
    of two (>= 32, so nearby k share a program), or None (filter the whole
    vocabulary) when top-k is off or that bound is not much below V."""
    if top_k <= 0:
        return None
    bound = max(32, 1 << (int(top_k) - 1).bit_length())
    return bound if bound <= min(4096, vocab_size // 4) else None


def _pad_ids(ids: tuple[int, ...], multiple: int = 4) -> tuple[int, ...]:
    """Pads stop ids with -1 (matches nothing) so their count rarely changes the program."""
    n = max(multiple, -(-len(ids) // multiple) * multiple)
    return ids + (-1,) * (n - len(ids))


def generate(model, prompts, patch=None, *, where: str = "all", max_new_tokens: int = 32,
             temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0, seed: int = 0,
             n_samples: int = 1, stop_ids: Sequence[int] | None = None, chat: bool = False,
             add_bos: bool = True, use_cache: bool = True, pad_multiple: int = 8) -> Generation:
    """Generates continuations with a patch active at every step.

    Rows are variants x prompts x samples: a batched patch (N variants, e.g.
    `Directions.patch(alphas)`) steers N groups of rows, all in one batch.

    Args:
      model: a Model.
      prompts: a string, a list of strings, or a list of token id lists.
      patch: a Patch (unbatched or with N variants), or None for no steering.
      where: "all", "prompt" or "generated" positions are edited.
      max_new_tokens: tokens to generate per row.
      temperature: 0 for greedy decoding; > 0 samples.
      top_k: keep the k most likely tokens (0: off).
      top_p: nucleus mass in (0, 1] (1: off).
      seed: PRNG seed of the sampler.
      n_samples: samples per prompt and variant.
      stop_ids: ids that end a row (default: the tokenizer's / config's EOS).
      chat: wrap each text prompt as a user turn with the tokenizer's chat template.
      add_bos: prepend BOS to text prompts (when not using a chat template).
      use_cache: KV-cached decoding (False: full forward per step; slow, for checks).
      pad_multiple: prompts are left-padded to a multiple of this length.

    Returns:
      Generation with tokens (N, P, S, max_new_tokens), lengths and texts
      (N = 1 for an unbatched patch).
    """
    check_where(where)
    _checks.integer("max_new_tokens", max_new_tokens, lo=1)
    _checks.integer("n_samples", n_samples, lo=1)
    _checks.integer("seed", seed)
    _checks.integer("pad_multiple", pad_multiple, lo=1)
    check_sampling(temperature, top_k, top_p)
    n_var = check_patch(patch or {}, model.config) if patch else None
    patch = dict(patch or {})
    seqs = encode_prompts(model, prompts, chat=chat, add_bos=add_bos)
    n_prompts = len(seqs)
    stops, pad = _special_ids(model, stop_ids)
    tokens, mask = left_pad(seqs, pad, pad_multiple)
    if tokens.shape[1] + max_new_tokens > model.config.max_position:
        raise ValueError(f"prompt ({tokens.shape[1]} padded tokens) + max_new_tokens "
                         f"({max_new_tokens}) exceeds max_position {model.config.max_position}")
    n = n_var or 1
    reps = n_prompts * n_samples
    # Rows: variant-major, then prompt, then sample.
    tokens = np.tile(np.repeat(tokens, n_samples, axis=0), (n, 1))  # (N*P*S, Tp)
    mask = np.tile(np.repeat(mask, n_samples, axis=0), (n, 1))  # (N*P*S, Tp)
    if n_var is not None:
        patch = repeat_rows(patch, n_var, reps)
    out = generate_tokens(
        model.params, jnp.asarray(tokens), jnp.asarray(mask), patch or None,
        jax.random.PRNGKey(seed), jnp.float32(temperature), jnp.int32(top_k),
        jnp.float32(top_p), jnp.asarray(_pad_ids(stops), jnp.int32), jnp.int32(pad),
        config=model.config, where=where, max_new_tokens=int(max_new_tokens),
        greedy=temperature == 0, use_top_k=top_k > 0, use_top_p=top_p < 1,
        use_cache=use_cache, max_k=_candidate_bound(top_k, model.config.vocab_size))
    out = np.asarray(out).reshape(n, n_prompts, n_samples, max_new_tokens)
    is_stop = np.isin(out, np.asarray(stops, np.int32)) if stops else np.zeros(out.shape, bool)
    lengths = np.where(is_stop.any(-1), is_stop.argmax(-1) + 1, max_new_tokens)
    texts = ()
    if model.tokenizer is not None:
        def text(ids, length):
            ids = [int(i) for i in ids[:length] if int(i) not in stops]
            return model.tokenizer.decode(ids, skip_special=True)
        texts = tuple(tuple(tuple(text(out[a, b, c], lengths[a, b, c])
                                  for c in range(n_samples)) for b in range(n_prompts))
                      for a in range(n))
    return Generation(tokens=out, lengths=lengths, texts=texts,
                      prompts=tuple(tuple(s) for s in seqs))
