"""A steered model: a Model plus a patch that its jitted forward applies."""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax.numpy as jnp
import numpy as np

from snmf_jax import _checks

from snmf_jax.models import ForwardOutput, KVCache, Patch, check_values
from snmf_jax.steer._forward import patched_forward
from snmf_jax.steer._generate import encode_prompts, generate, left_pad
from snmf_jax.steer._patches import check_patch, check_where, repeat_rows, with_scale


def check_steered_logits(model, prompts, patch: Patch | None, *, chat: bool = False,
                         add_bos: bool = True) -> None:
    """Refuses a patch whose scale makes the model's logits non-finite.

    Runs the steered forward over the prompts once (every prompt position
    steered) and checks the next-token logits. Without this check, sampling
    from NaN logits returns the pad token, so an overflowing scale would
    show as silently empty text.

    Args:
      model: a Model.
      prompts: what `generate` takes.
      patch: the steering patch (None: nothing to check).
      chat, add_bos: as in `generate`.

    Raises:
      ValueError: naming the variants (rows of a batched patch) that overflow.
    """
    if not patch:
        return
    n_var = check_patch(patch, model.config)
    seqs = encode_prompts(model, prompts, chat=chat, add_bos=add_bos)
    tokens, mask = left_pad(seqs, 0)  # (P, T); padding is masked out
    n = n_var or 1
    tokens, mask = np.tile(tokens, (n, 1)), np.tile(mask, (n, 1))  # (N*P, T)
    if n_var is not None:
        patch = repeat_rows(patch, n_var, len(seqs))
    out = patched_forward(model.params, jnp.asarray(tokens), patch, config=model.config,
                          where="all", attention_mask=jnp.asarray(mask, jnp.int32))
    ok = np.isfinite(np.asarray(out.logits[:, -1])).all(-1).reshape(n, len(seqs))
    bad = np.flatnonzero(~ok.all(1))
    if bad.size:
        raise ValueError(f"steering makes the logits non-finite (NaN/Inf) for variant(s) "
                         f"{bad[:8].tolist()}; the scale overflows the model's activations, "
                         "use a smaller alpha")


def _as_tokens(tokens, config, cache):
    """(B, T) int32 token ids the model can serve: at least one per row, ids in
    the vocabulary and no more than the positions left (`check_values`)."""
    if _checks.concrete(tokens):
        a = np.asarray(tokens)
        if a.ndim not in (1, 2):
            raise ValueError(f"tokens must have shape (T,) or (B, T); got shape {a.shape}")
        if a.shape[-1] == 0:
            raise ValueError(f"tokens must hold at least one token per row; got shape {a.shape}")
        check_values(a, config, cache=cache)
    tokens = jnp.asarray(tokens, jnp.int32)
    if tokens.ndim == 1:
        tokens = tokens[None]  # (1, T)
    return tokens


@dataclasses.dataclass(frozen=True, eq=False)
class SteeredModel:
    """A Model whose forward and generation run a patch.

    Attributes:
      model: the underlying Model.
      patch: {(layer, site): SitePatch}; batched patches (vectors (N, dim))
        steer one variant per batch row in `forward` and one variant per
        group of rows in `generate`.
      where: "all", "prompt" or "generated" (which positions are edited).
    """

    model: Any
    patch: Patch
    where: str = "all"

    def __post_init__(self):
        check_where(self.where)
        check_patch(self.patch, self.model.config)

    @property
    def config(self):
        return self.model.config

    @property
    def params(self):
        return self.model.params

    @property
    def tokenizer(self):
        return self.model.tokenizer

    @property
    def n_variants(self) -> int | None:
        """N for a batched patch, else None."""
        return check_patch(self.patch)

    def forward(self, tokens, *, attention_mask=None, cache: KVCache | None = None,
                prompt_len=None, capture: Sequence[tuple[int, str]] = ()) -> ForwardOutput:
        """The steered jitted forward.

        Args:
          tokens: (B, T) or (T,) int token ids. With a batched patch of N
            variants, B must be N (row i gets variant i).
          attention_mask: (B, T) or None.
          cache: KVCache or None.
          prompt_len: padded prompt length, for where="prompt"/"generated"
            (default: every token of the call is prompt).
          capture: (layer, site) pairs to return.

        Returns:
          ForwardOutput(logits (B, T, V), captures, cache).
        """
        tokens = _as_tokens(tokens, self.config, cache)
        n = self.n_variants
        if n is not None and tokens.shape[0] != n:
            raise ValueError(
                f"the patch has {n} variants, so tokens must have {n} rows; got "
                f"{tokens.shape[0]} (use repeat_rows or jax.vmap to combine)")
        if attention_mask is not None:
            attention_mask = jnp.asarray(attention_mask, jnp.int32)
        capture = tuple((int(layer), str(site)) for layer, site in capture)
        return patched_forward(self.model.params, tokens, self.patch, config=self.config,
                               where=self.where, attention_mask=attention_mask, cache=cache,
                               prompt_len=prompt_len, capture=capture)

    def generate(self, prompts, **kwargs):
        """Steered generation; see `snmf_jax.steer.generate` for the options.
        A scale that makes the logits non-finite is refused first."""
        check_steered_logits(self.model, prompts, self.patch, chat=kwargs.get("chat", False),
                             add_bos=kwargs.get("add_bos", True))
        return generate(self.model, prompts, self.patch, where=self.where, **kwargs)

    def with_scale(self, scale) -> "SteeredModel":
        """The same directions with every scale set to `scale` (() or (N,))."""
        return dataclasses.replace(self, patch=with_scale(self.patch, scale))

    def __repr__(self) -> str:
        sites = ", ".join(f"{layer}:{site}" for layer, site in self.patch)
        return (f"SteeredModel({self.model!r}, sites=[{sites}], where={self.where!r}, "
                f"variants={self.n_variants})")


def steer(model, patch: Patch | None = None, *, where: str = "all") -> SteeredModel:
    """A steered model running `patch` inside the jitted forward.

    Args:
      model: a Model.
      patch: {(layer, site): SitePatch} (see `make_patch`,
        `Directions.patch`); None or {} steers nothing.
      where: "all" (every token), "prompt" (prompt tokens only) or
        "generated" (decoded tokens only).

    Returns:
      A SteeredModel with `.forward(tokens, ...)` and `.generate(prompts, ...)`.
    """
    check_patch(patch or {}, model.config)  # a non-mapping fails here, naming `patch`
    return SteeredModel(model, dict(patch or {}), where)
