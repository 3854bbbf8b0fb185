"""Sparse autoencoders (standard ReLU + L1, TopK, JumpReLU) in Flax NNX.

The math lives in pure functions over a plain dict of arrays
(`{"W_enc", "b_enc", "W_dec", "b_dec"[, "threshold"]}`, SAELens' names and
orientations) so that the training step can be jitted with the weights as
arguments; `SparseAutoencoder` is the NNX module that holds them as
`nnx.Param`s and calls the same functions.

    encode(x) = act((x - b_dec) @ W_enc + b_enc)        (b_dec only if apply_b_dec_to_input)
    decode(z) = z @ W_dec + b_dec

act is ReLU ("standard"), TopK of the pre-activations then ReLU ("topk", as
SAELens), or JumpReLU: pre * (pre > threshold) ("jumprelu"): one class per
architecture in `_architectures`, looked up by name; nothing here branches on it.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from snmf_jax import _numerics
from snmf_jax.baselines._architectures import (ARCHITECTURES, DECODER_NORM_FLOOR, architecture,
                                              topk_mask)

Params = Mapping[str, jax.Array]


@dataclasses.dataclass(frozen=True)
class SAEConfig:
    """Shape and architecture of a sparse autoencoder.

    Attributes:
      d_in: width of the activations it reads.
      d_sae: number of latents (the SNMF-matched width is K; a wide SAE 8-32x d_in).
      architecture: a registered architecture: "standard" (ReLU, L1
        penalty), "topk" or "jumprelu" (see `_architectures`).
      k: active latents per token (topk only).
      apply_b_dec_to_input: subtract b_dec before encoding (SAELens' default).
      jumprelu_init_threshold: initial threshold (jumprelu only).
      hook_name: where the activations come from, e.g. "blocks.6.mlp_out"
        (written to SAELens' metadata; free text).
      model_name: the model the SAE was trained on (metadata).
      dtype: dtype of the weights.
    """

    d_in: int
    d_sae: int
    architecture: str = "topk"
    k: int = 32
    apply_b_dec_to_input: bool = True
    jumprelu_init_threshold: float = 0.001
    hook_name: str = ""
    model_name: str = ""
    dtype: str = "float32"

    def __post_init__(self):
        try:
            arch = architecture(self.architecture)
        except ValueError as e:
            raise ValueError(f"SAEConfig.{e}") from None
        for name in ("d_in", "d_sae"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"SAEConfig.{name} must be >= 1; got {getattr(self, name)}")
        arch.validate(self)


# ---------------------------------------------------------------------------
# Pure functions over a params dict.


def encode_pre(params: Params, x: jax.Array, config: SAEConfig) -> jax.Array:
    """Pre-activations (..., d_sae) of inputs x (..., d_in)."""
    if config.apply_b_dec_to_input:
        x = x - params["b_dec"]
    return x @ params["W_enc"] + params["b_enc"]


def activate(params: Params, pre: jax.Array, config: SAEConfig) -> jax.Array:
    """Latent activations (..., d_sae) from pre-activations."""
    return architecture(config.architecture).activate(params, pre, config)


def encode(params: Params, x: jax.Array, config: SAEConfig) -> jax.Array:
    """Latent activations (..., d_sae) of inputs x (..., d_in)."""
    return activate(params, encode_pre(params, x, config), config)


def decode(params: Params, z: jax.Array) -> jax.Array:
    """Reconstruction (..., d_in) from latent activations z (..., d_sae)."""
    return z @ params["W_dec"] + params["b_dec"]


def init_params(config: SAEConfig, key: jax.Array) -> dict[str, jax.Array]:
    """Fresh weights: unit-norm decoder rows, encoder = decoder transpose, zero biases.

    Arguments in the order of `snmf_jax.models.init_params(config, key)`.

    The decoder is drawn as torch's kaiming_uniform (SAELens) and its rows
    normalised; tying the encoder to its transpose at the start keeps early
    latents from firing on directions they cannot reconstruct (Conerly et al.).
    """
    dtype = jnp.dtype(config.dtype)
    bound = float(np.sqrt(6.0 / config.d_in))  # kaiming_uniform, fan_in = d_in
    W_dec = _numerics.unit_rows(jax.random.uniform(
        key, (config.d_sae, config.d_in), dtype, -bound, bound), DECODER_NORM_FLOOR)
    params = {"W_enc": W_dec.T, "b_enc": jnp.zeros((config.d_sae,), dtype),
              "W_dec": W_dec, "b_dec": jnp.zeros((config.d_in,), dtype)}
    params.update(architecture(config.architecture).init_extra(config, dtype))
    return params


def check_params(params: Mapping[str, np.ndarray], config: SAEConfig) -> None:
    """Raise ValueError naming the first weight whose shape disagrees with config."""
    want = {"W_enc": (config.d_in, config.d_sae), "b_enc": (config.d_sae,),
            "W_dec": (config.d_sae, config.d_in), "b_dec": (config.d_in,)}
    want.update({name: (config.d_sae,)
                 for name in architecture(config.architecture).extra_params})
    for name, shape in want.items():
        if name not in params:
            raise ValueError(f"SAE weights: missing {name!r} (expected shape {shape})")
        if tuple(params[name].shape) != shape:
            raise ValueError(
                f"SAE weights: {name} must have shape {shape}; got {tuple(params[name].shape)}")
        if not np.all(np.isfinite(np.asarray(params[name]))):
            raise ValueError(f"SAE weights: {name} has non-finite values")


# ---------------------------------------------------------------------------
# The NNX module.


class SparseAutoencoder(nnx.Module):
    """A sparse autoencoder whose weights are `nnx.Param`s.

    Args:
      config: the SAEConfig.
      rngs: nnx.Rngs for the initial weights (ignored when `params` is given).
      params: optional weights to load instead (numpy or jax arrays, SAELens'
        names and orientations).

    Example:
      sae = SparseAutoencoder(SAEConfig(d_in=576, d_sae=4608, k=32), rngs=nnx.Rngs(0))
      z = sae.encode(x)            # (n, 4608)
      x_hat = sae.decode(z)        # (n, 576)
    """

    def __init__(self, config: SAEConfig, *, rngs: nnx.Rngs | None = None,
                 params: Mapping[str, np.ndarray] | None = None):
        self.config = config
        if params is None:
            rngs = rngs if rngs is not None else nnx.Rngs(0)
            params = init_params(config, rngs.params())
        else:
            check_params(params, config)
        dtype = jnp.dtype(config.dtype)
        self.W_enc = nnx.Param(jnp.asarray(params["W_enc"], dtype))
        self.b_enc = nnx.Param(jnp.asarray(params["b_enc"], dtype))
        self.W_dec = nnx.Param(jnp.asarray(params["W_dec"], dtype))
        self.b_dec = nnx.Param(jnp.asarray(params["b_dec"], dtype))
        for name in architecture(config.architecture).extra_params:  # e.g. JumpReLU's threshold
            setattr(self, name, nnx.Param(jnp.asarray(params[name], dtype)))

    def params(self) -> dict[str, jax.Array]:
        """The weights as a plain dict of arrays (the pure functions' input)."""
        return nnx.to_pure_dict(nnx.state(self, nnx.Param))

    def set_params(self, params: Mapping[str, jax.Array]) -> None:
        """Overwrite the weights from a plain dict of arrays."""
        state = nnx.state(self, nnx.Param)
        nnx.replace_by_pure_dict(state, dict(params))
        nnx.update(self, state)

    def encode(self, x: jax.Array) -> jax.Array:
        """Latent activations (..., d_sae) of x (..., d_in)."""
        return encode(self.params(), jnp.asarray(x), self.config)

    def decode(self, z: jax.Array) -> jax.Array:
        """Reconstruction (..., d_in) of latents z (..., d_sae)."""
        return decode(self.params(), jnp.asarray(z))

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.decode(self.encode(x))

    def directions(self) -> np.ndarray:
        """Unit decoder rows (d_sae, d_in): the latents' steering directions."""
        return np.asarray(_numerics.unit_rows(self.W_dec[...], DECODER_NORM_FLOOR))
