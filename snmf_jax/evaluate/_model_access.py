"""The one place evaluate/ touches a language model: activations, log-likelihoods,
sampling, steering directions and calibration. Every call evaluate/ makes that
runs a model goes through these few functions, so the judges and the protocol
can be read (and stubbed) without them; evaluate/ imports only data helpers
from `activations` and `steer` directly (`Activations`, `from_texts`,
`sampler_settings`).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from snmf_jax.steer import sampler_settings

# The paper's sampling, defined once in steer: the official call's arguments
# (top-k 30, top-p 0.3, temperature 1), and what TransformerLens ran of them
# (top-k only: top_p 1.0, the official runs' effective sampler).
OFFICIAL_CALL = sampler_settings("top-k-and-top-p")
OFFICIAL_SAMPLING = sampler_settings("top-k")


def model_site_activations(model, data, *, layer: int, site: str, batch_size: int = 16):
    """`Activations` of `data` at one layer and site (in memory)."""
    from snmf_jax.activations import export_activations
    return export_activations(model, data, layer, site=site, batch_size=batch_size,
                              progress=False)


def lm_logprob_fn(model, *, batch_size: int = 16, max_tokens: int = 128
                  ) -> Callable[[Sequence[str]], np.ndarray]:
    """A function texts -> (n,) mean next-token log-probability per text under `model`.

    Each text is scored after the model's BOS (when it has one), truncated to
    `max_tokens`; rows are right-padded to a multiple of 16 tokens (few compiled
    shapes; a causal model never sees the padding from the real positions). The
    log-normaliser and the targets' logits are taken in one jitted step, so the
    (batch, length, vocabulary) log-softmax is never materialised: with Gemma's
    262k-token vocabulary that array alone is ~1 GB per batch.
    """
    import jax
    import jax.numpy as jnp

    tok = model.tokenizer
    pad = 0 if tok.pad_id is None else int(tok.pad_id)

    @jax.jit
    def token_logprobs(logits, tokens, mask):
        logits = logits[:, :-1].astype(jnp.float32)
        tgt = jnp.take_along_axis(logits, tokens[:, 1:, None], -1)[..., 0]
        lp = tgt - jax.nn.logsumexp(logits, -1)
        return jnp.sum(lp * mask[:, 1:], 1)

    def score(texts: Sequence[str]) -> np.ndarray:
        ids = [tok.encode(t, add_bos=True)[:max_tokens] for t in texts]
        out = np.full(len(ids), np.nan)
        for s in range(0, len(ids), batch_size):
            rows = ids[s:s + batch_size]
            t = max(16, -(-max(len(r) for r in rows) // 16) * 16)
            tokens = np.full((batch_size, t), pad, np.int32)
            mask = np.zeros((batch_size, t), np.int32)
            for j, r in enumerate(rows):
                tokens[j, :len(r)] = r
                mask[j, :len(r)] = 1
            mask[len(rows):, 0] = 1
            logits = model.forward(tokens, attention_mask=jnp.asarray(mask)).logits
            tot = np.asarray(token_logprobs(logits, jnp.asarray(tokens), jnp.asarray(mask)))
            for j, r in enumerate(rows):
                out[s + j] = tot[j] / max(len(r) - 1, 1) if len(r) > 1 else 0.0
        return out

    return score


def generate_texts(model, prompt: str, *, n: int, max_new_tokens: int = 50, seed: int = 0,
                   top_k: int = OFFICIAL_SAMPLING["top_k"],
                   top_p: float = OFFICIAL_SAMPLING["top_p"],
                   temperature: float = OFFICIAL_SAMPLING["temperature"],
                   patch=None) -> list[str]:
    """n sampled continuations of `prompt` (by default the official runs' effective
    sampler: top-k 30 at temperature 1, no nucleus filter)."""
    from snmf_jax.steer import generate
    g = generate(model, prompt, patch, max_new_tokens=max_new_tokens, temperature=temperature,
                 top_k=top_k, top_p=top_p, seed=seed, n_samples=n)
    return [t for variant in g.texts for prompt in variant for t in prompt]


def raw_directions(vectors, *, layer: int, site: str, ids=(), config=None):
    """Raw vectors (SAE decoder rows, DiffMean) as unit steering `Directions`."""
    from snmf_jax.steer import Directions
    return Directions.from_vectors(vectors, layer=layer, site=site, ids=ids, config=config)


def snmf_directions(model, features, *, layer: int, indices=None):
    """SNMF features as steering directions at the model's steering site
    (mlp_hidden; mlp_out through the MLP output map for Gemma 2/3)."""
    from snmf_jax.steer import feature_directions
    return feature_directions(model, features, layer=layer, indices=indices)


def calibrate_signs(model, dirs, *, signs, targets, prompt: str, progress: bool = False):
    """One `Calibration` per sign (alphas, kl, reachable: (F, T))."""
    from snmf_jax.steer import calibrate_signs as _cal
    return _cal(model, dirs, signs=signs, targets=targets, prompt=prompt, progress=progress)


def generate_variants(model, prompt: str, dirs, scales, *, n_samples: int,
                      max_new_tokens: int, seed: int, top_k: int, top_p: float,
                      temperature: float) -> list[list[str]]:
    """Texts [variant][sample]: variant i adds scales[i] * dirs.vectors[i] at every position.

    All variants run in ONE generate call (the patch is batched data).
    """
    from snmf_jax.steer import generate
    patch = dirs.patch(np.asarray(scales, np.float32)) if len(dirs) > 1 else \
        dirs.patch(np.asarray(scales, np.float32).reshape(-1)[0])
    g = generate(model, prompt, patch, where="all", max_new_tokens=max_new_tokens,
                 temperature=temperature, top_k=top_k, top_p=top_p, seed=seed,
                 n_samples=n_samples)
    return [list(variant[0]) for variant in g.texts]


def select_directions(dirs, rows):
    """The sub-set of `dirs` at the given row positions (repeats allowed)."""
    return dirs.select(list(rows))
