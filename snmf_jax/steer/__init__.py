"""Steering: patches as data, a patched jitted forward, KL-calibrated α, generation.

    from snmf_jax import steer

    dirs = steer.feature_directions(model, result.features, layer=15, indices=[3, 12])
    pos, neg = steer.calibrate_both(model, dirs, targets=(0.1,))
    out = steer.generate(model, "I think that", pos.patch(dirs, 0.1), max_new_tokens=20)
    steered = steer.steer(model, dirs.select(0).patch(2.0))
    steered.forward(tokens).logits

One spelling: `snmf_jax.steer` is the package, `snmf_jax.steer.steer(model,
patch)` the function that builds a `SteeredModel`. A patch is a
`snmf_jax.models.Patch` ({(layer, site): `models.SitePatch`}), built here. A patch's strength is
changed with `with_scale` (or `SteeredModel.with_scale`); the jitted patched
forward is `patched_forward`.
"""

# pylint: disable=g-importing-member

# Patches: {(layer, site): SitePatch} built from directions and strengths.
from snmf_jax.steer._patches import combine, make_patch, with_scale

# Directions of features at a site.
from snmf_jax.steer._directions import Directions, feature_directions

# The steered model and its jitted patched forward.
from snmf_jax.steer._forward import patched_forward
from snmf_jax.steer._steer import SteeredModel, check_steered_logits, steer

# Strengths calibrated to a KL budget.
from snmf_jax.steer._calibrate import (DEFAULT_PROMPT, Calibration, calibrate, calibrate_both,
                                       calibrate_signs)

# Generation with a patch.
from snmf_jax.steer._generate import Generation, generate
from snmf_jax.steer._sampling import SAMPLERS, sample_logits, sampler_settings

__all__ = [
    # Patches
    "make_patch", "combine", "with_scale",
    # Directions
    "Directions", "feature_directions",
    # The steered model
    "steer", "SteeredModel", "patched_forward", "check_steered_logits",
    # Calibration
    "calibrate", "calibrate_both", "calibrate_signs", "Calibration", "DEFAULT_PROMPT",
    # Generation
    "generate", "Generation", "sample_logits", "sampler_settings", "SAMPLERS",
]
