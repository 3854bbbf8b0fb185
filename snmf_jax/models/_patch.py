"""Patches: data that edits the activations at named sites of the forward pass.

A patch is a mapping ``{(layer, site): SitePatch}``. Its keys are static (they
choose where the forward pass edits); its leaves are arrays, so new vectors,
scales or masks reuse the compiled forward pass.
"""

from __future__ import annotations

from typing import Mapping, NamedTuple

import jax.numpy as jnp
from jax import Array


class SitePatch(NamedTuple):
    """An edit of the activations h (B, T, dim) at one site.

    h <- h - m * replace * h + m * scale * vector, with m the position mask.

    Attributes:
      vector: (dim,) or (B, dim) direction.
      scale: () or (B,) multiplier of the vector (the steering alpha).
      replace: () 0.0 to add, 1.0 to replace the activations by the vector.
      positions: (B, T) 1.0 where the patch applies, or None for everywhere.
    """

    vector: Array
    scale: Array
    replace: Array
    positions: Array | None = None


Patch = Mapping[tuple[int, str], SitePatch]


def apply_site_patch(h: Array, p: SitePatch) -> Array:
    """Applies one SitePatch to activations h of shape (B, T, dim)."""
    vec = jnp.asarray(p.vector, h.dtype)
    vec = vec[None, None, :] if vec.ndim == 1 else vec[:, None, :]  # (B|1, 1, dim)
    scale = jnp.asarray(p.scale, h.dtype)
    scale = scale[:, None, None] if scale.ndim == 1 else scale  # (B|1, 1, 1)
    m = (jnp.ones(h.shape[:2], h.dtype) if p.positions is None
         else jnp.asarray(p.positions, h.dtype))[..., None]  # (B, T, 1)
    r = jnp.asarray(p.replace, h.dtype)
    return h - m * r * h + m * scale * vec
