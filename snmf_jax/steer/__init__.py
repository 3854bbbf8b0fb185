"""Steering: patches as data, a patched jitted forward, KL-calibrated α, generation.

    from snmf_jax import steer

    dirs = steer.feature_directions(model, result.features, layer=15, indices=[3, 12])
    pos, neg = steer.calibrate_both(model, dirs, targets=(0.1,))
    out = steer.generate(model, "I think that", pos.patch(dirs, 0.1), max_new_tokens=20)
    steered = steer.steer(model, dirs.select(0).patch(2.0))
    steered.forward(tokens).logits

One spelling: `snmf_jax.steer` is the package, `snmf_jax.steer.steer(model,
patch)` the function that builds a `SteeredModel`. A patch's strength is
changed with `with_scale` (or `SteeredModel.with_scale`); the jitted patched
forward is `patched_forward`.
"""

from snmf_jax.models._patch import Patch, SitePatch
from snmf_jax.steer._calibrate import (DEFAULT_PROMPT, DEFAULT_TARGETS, Calibration,
                                       batched_kl, calibrate, calibrate_both, calibrate_signs)
from snmf_jax.steer._directions import (Directions, feature_directions, has_post_mlp_norm,
                                        hidden_preimage)
from snmf_jax.steer._forward import patched_forward
from snmf_jax.steer._generate import Generation, generate, generate_tokens, left_pad
from snmf_jax.steer._patches import (POSITION_MODES, broadcast_patch, check_patch, combine,
                                     make_patch, position_mask, repeat_rows, site_patch,
                                     stack_patches, vmap_axes, with_positions, with_scale)
from snmf_jax.steer._sampling import (SAMPLERS, filter_logits, sample_logits, sampler_settings,
                                      top_k_filter, top_p_filter)
from snmf_jax.steer._steer import SteeredModel, steer

__all__ = [
    "Patch", "SitePatch", "POSITION_MODES",
    "site_patch", "make_patch", "combine", "check_patch", "with_scale",
    "stack_patches", "broadcast_patch", "repeat_rows", "vmap_axes", "position_mask",
    "with_positions",
    "Directions", "feature_directions", "hidden_preimage", "has_post_mlp_norm",
    "SteeredModel", "steer", "patched_forward",
    "Calibration", "calibrate", "calibrate_both", "calibrate_signs", "batched_kl",
    "DEFAULT_TARGETS", "DEFAULT_PROMPT",
    "Generation", "generate", "generate_tokens", "top_k_filter", "top_p_filter",
    "filter_logits", "sample_logits", "left_pad", "SAMPLERS", "sampler_settings",
]
