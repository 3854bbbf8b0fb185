"""The two model pieces interpretation needs, in one place.

`_mlp_map` is the MLP output map of a layer (down projection, then Gemma's
post-feedforward norm) and `_to_logits` the head (final norm, LM head, final
soft-cap). Both are written here from the forward pass's own pieces
(`models._transformer`) until the models expose `Model.mlp_output_map` and
`Model.unembed`; every caller in `interpret` and `report` goes through these
two functions so that the switch is one edit.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from snmf_jax.models._transformer import _norm


def _mlp_map(model, hidden, layer: int) -> np.ndarray:
    """Images of mlp_hidden vectors in the residual stream.

    ``hidden @ W_down`` and, for Gemma 2/3, the post-feedforward RMS norm, as
    in the forward pass. The down projection's bias (GPT-2) is an offset, not
    part of a direction's image, and is left out.

    Args:
      model: a loaded `Model` (params, config).
      hidden: (F, d_mlp) vectors at the MLP hidden site.
      layer: block index.

    Returns:
      (F, d_model) float32.
    """
    config, params = model.config, model.params
    w = jnp.asarray(params["layers"]["down"]["kernel"][layer], jnp.float32)  # (d_mlp, D)
    out = jnp.asarray(hidden, jnp.float32) @ w  # (F, D)
    if config.family in ("gemma2", "gemma3"):
        p = jax.tree_util.tree_map(lambda a: jnp.asarray(a[layer], jnp.float32),
                                   params["layers"]["post_mlp_norm"])
        out = _norm(out, p, config)
    return np.asarray(out, np.float32)


def _to_logits(model, resid) -> np.ndarray:
    """Logits read from residual-stream vectors: final norm, LM head, soft-cap.

    Args:
      model: a loaded `Model`.
      resid: (F, d_model) residual-stream vectors.

    Returns:
      (F, vocab) float32.
    """
    config, params = model.config, model.params
    p = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), params["final_norm"])
    x = _norm(jnp.asarray(resid, jnp.float32), p, config)  # (F, D)
    if config.tie_embeddings:
        logits = x @ jnp.asarray(params["embed"], jnp.float32).T  # (F, V)
    else:
        logits = x @ jnp.asarray(params["unembed"]["kernel"], jnp.float32)
    if config.final_logit_softcap is not None:
        cap = config.final_logit_softcap
        logits = jnp.tanh(logits / cap) * cap
    return np.asarray(logits, np.float32)
