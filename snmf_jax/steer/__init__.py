"""Steering: patches as data, a patched jitted forward, KL-calibrated α, generation.

    from snmf_jax import steer

    dirs = steer.feature_directions(model, result.features, layer=15, indices=[3, 12])
    pos, neg = steer.calibrate_both(model, dirs, targets=(0.1,))
    out = steer.generate(model, "I think that", pos.patch(dirs, 0.1), max_new_tokens=20)
    steered = steer(model, dirs.select(0).patch(2.0))   # the module is callable: steer.steer
    steered.forward(tokens).logits

The package module itself is callable (`snmf_jax.steer(model, patch)` is
`snmf_jax.steer.steer(model, patch)`), so `sj.steer(...)` and
`sj.steer.calibrate(...)` both work without a function shadowing the package.
"""

import sys as _sys
import types as _types

from snmf_jax.models._patch import Patch, SitePatch
from snmf_jax.steer._calibrate import (DEFAULT_PROMPT, DEFAULT_TARGETS, Calibration,
                                       batched_kl, calibrate, calibrate_both, calibrate_signs)
from snmf_jax.steer._directions import (Directions, feature_directions, has_post_mlp_norm,
                                        hidden_preimage)
from snmf_jax.steer._generate import (Generation, filter_logits, generate, generate_tokens,
                                      left_pad, sample_logits, top_k_filter, top_p_filter)
from snmf_jax.steer._patches import (POSITION_MODES, broadcast_patch, check_patch, combine,
                                     make_patch, position_mask, repeat_rows, scale_patch,
                                     site_patch, stack_patches, vmap_axes, with_positions,
                                     with_scale)
from snmf_jax.steer._steer import (SteeredModel, next_token_logprobs, patched_forward,
                                   patched_forward_impl, steer)

__all__ = [
    "Patch", "SitePatch", "POSITION_MODES",
    "site_patch", "make_patch", "combine", "check_patch", "with_scale", "scale_patch",
    "stack_patches", "broadcast_patch", "repeat_rows", "vmap_axes", "position_mask",
    "with_positions",
    "Directions", "feature_directions", "hidden_preimage", "has_post_mlp_norm",
    "SteeredModel", "steer", "patched_forward", "patched_forward_impl", "next_token_logprobs",
    "Calibration", "calibrate", "calibrate_both", "calibrate_signs", "batched_kl",
    "DEFAULT_TARGETS", "DEFAULT_PROMPT",
    "Generation", "generate", "generate_tokens", "top_k_filter", "top_p_filter",
    "filter_logits", "sample_logits", "left_pad",
]


class _CallableModule(_types.ModuleType):
    """This package, callable as `steer(model, patch, where=...)`."""

    def __call__(self, model, patch=None, *, where: str = "all") -> SteeredModel:
        return steer(model, patch, where=where)


_sys.modules[__name__].__class__ = _CallableModule
