"""SAE architectures: one class each, behind a registry keyed by SAELens' names.

Every architecture shares the affine encoder and decoder of `_sae`; a class
says only what differs: the activation, the extra per-latent weights, the
training-time sparsity term and auxiliary loss, what happens after each
update and when inputs are rescaled, and its SAELens cfg.json fields. The
classes are stateless (their methods are pure and jittable), so the jitted
training step and the module look the architecture up by `config.architecture`
at trace time and nothing else branches on its name. SAELens keeps the same
split (one class per architecture, `register_sae_class`).

    @register_architecture
    class MyArchitecture(Architecture):
        name = "mine"
        def activate(self, params, pre, config): ...
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Mapping

import jax
import jax.numpy as jnp
import numpy as np

if TYPE_CHECKING:  # annotations only: _sae imports this module
    from snmf_jax.baselines._sae import SAEConfig
    from snmf_jax.baselines._train import TrainConfig

Params = Mapping[str, jax.Array]

# Floor of a decoder row's norm wherever rows are made unit (init, after each
# update, folding SAELens' decoder norms): a dead all-zero row stays zero.
DECODER_NORM_FLOOR = 1e-8


class Architecture:
    """What one SAE architecture adds to the shared affine encoder/decoder.

    Attributes:
      name: the architecture's name in SAEConfig and SAELens' cfg.json.
      extra_params: per-latent (d_sae,) weights beyond W_enc, b_enc, W_dec, b_dec.
    """

    name: ClassVar[str]
    extra_params: ClassVar[tuple[str, ...]] = ()

    def validate(self, config: SAEConfig) -> None:
        """Raises ValueError on settings this architecture cannot use."""

    def init_extra(self, config: SAEConfig, dtype) -> dict[str, jax.Array]:
        """Initial values of `extra_params`."""
        return {}

    def activate(self, params: Params, pre: jax.Array, config: SAEConfig) -> jax.Array:
        """Latent activations (..., d_sae) from pre-activations."""
        raise NotImplementedError

    def train_activate(self, params: Params, pre: jax.Array, config: SAEConfig,
                       train: TrainConfig) -> tuple[jax.Array, jax.Array | None]:
        """(latents (B, d_sae), the per-token sparsity the penalty coefficient
        multiplies, or None for no penalty) while training."""
        return self.activate(params, pre, config), None

    def aux_loss(self, params: Params, pre: jax.Array, residual: jax.Array, dead: jax.Array,
                 config: SAEConfig, train: TrainConfig) -> jax.Array | None:
        """An auxiliary training loss (dead latents), or None."""
        return None

    def after_update(self, params: dict) -> dict:
        """Weights after each optimizer step (beyond the unit decoder rows)."""
        return params

    def fold_scale(self, params: dict, scale: float) -> dict:
        """Extra weights for raw inputs, given weights trained on scale * x
        (the biases are already divided by scale)."""
        return params

    def saelens_fields(self, config: SAEConfig) -> dict[str, Any]:
        """This architecture's own cfg.json fields."""
        return {}

    def config_from_saelens(self, cfg: Mapping[str, Any]) -> dict[str, Any]:
        """This architecture's SAEConfig fields from a SAELens cfg.json dict."""
        return {}

    def from_saelens(self, cfg: Mapping[str, Any], weights: dict[str, np.ndarray]
                     ) -> dict[str, np.ndarray]:
        """SAELens weights in our convention (unit decoder rows where SAELens
        keeps them elsewhere)."""
        return weights


ARCHITECTURES: dict[str, Architecture] = {}


def register_architecture(cls: type[Architecture]) -> type[Architecture]:
    """Class decorator: makes `cls.name` usable in SAEConfig and cfg.json."""
    ARCHITECTURES[cls.name] = cls()
    return cls


def architecture(name: str) -> Architecture:
    """The registered architecture called `name`.

    Raises:
      ValueError: no architecture of that name.
    """
    if not isinstance(name, str) or name not in ARCHITECTURES:
        raise ValueError(f"architecture must be one of {tuple(ARCHITECTURES)}; got {name!r}")
    return ARCHITECTURES[name]


def topk_mask(pre: jax.Array, k: int) -> jax.Array:
    """Keep the k largest entries of each row of pre (..., d_sae), zero the rest.

    Compares with the k-th largest value instead of scattering the top-k
    values back: no scatter in the forward or backward pass, and for float
    pre-activations ties at the threshold (which would keep more than k)
    do not occur in practice.
    """
    # min over the top-k values, not the slice [..., k-1:k]: XLA:CPU turns top_k
    # followed by that slice into a full sort (12x slower at 1024 x 1152, measured).
    kth = jnp.min(jax.lax.top_k(pre, k)[0], axis=-1, keepdims=True)  # (..., 1)
    return jnp.where(pre >= kth, pre, 0.0)


@register_architecture
class Standard(Architecture):
    """ReLU latents with an L1 penalty ("standard").

    SAELens weights the L1 by decoder norms; ours are 1, so it is plain L1.
    """

    name = "standard"

    def activate(self, params, pre, config):
        return jax.nn.relu(pre)

    def train_activate(self, params, pre, config, train):
        z = self.activate(params, pre, config)
        return z, jnp.mean(jnp.sum(z, -1))


@register_architecture
class TopK(Architecture):
    """The k largest pre-activations, then ReLU, as SAELens; no penalty, and
    the auxiliary loss of Gao et al. (2024) for dead latents."""

    name = "topk"

    def validate(self, config):
        if not 1 <= config.k <= config.d_sae:
            raise ValueError(
                f"SAEConfig.k must be in [1, d_sae={config.d_sae}] for topk; got {config.k}")

    def activate(self, params, pre, config):
        return jax.nn.relu(topk_mask(pre, config.k))

    def aux_loss(self, params, pre, residual, dead, config, train):
        return train.aux_coefficient * topk_aux_loss(params, pre, residual, dead, config)

    def saelens_fields(self, config):
        # Our decoder rows are unit norm, so rescaling by them would be a no-op.
        return {"k": config.k, "rescale_acts_by_decoder_norm": False}

    def config_from_saelens(self, cfg):
        k = cfg.get("k")
        if k is None:  # the pre-6 layout: activation_fn "topk", activation_fn_kwargs {"k": ..}
            k = (cfg.get("activation_fn_kwargs") or {}).get("k")
        if not isinstance(k, int) or isinstance(k, bool):
            raise ValueError(f"a topk SAE needs an integer k; got {k!r}")
        return {"k": k}

    def from_saelens(self, cfg, weights):
        """Decoder norms folded into the encoder: exactly the same latents and output."""
        if not cfg.get("rescale_acts_by_decoder_norm", False):
            return weights
        w = dict(weights)
        norms = np.maximum(np.linalg.norm(w["W_dec"], axis=1), DECODER_NORM_FLOOR)  # (d_sae,)
        w["W_enc"] = w["W_enc"] * norms[None, :]
        w["b_enc"] = w["b_enc"] * norms
        w["W_dec"] = w["W_dec"] / norms[:, None]
        return w


def topk_aux_loss(params, pre, residual, dead, config: SAEConfig):
    """Dead latents' top-k_aux pre-activations reconstruct the residual (B, d_in).

    k_aux = d_in // 2, scaled by min(n_dead / k_aux, 1), as SAELens.
    """
    k_aux = max(1, min(config.d_in // 2, config.d_sae))
    n_dead = jnp.sum(dead)

    def loss():
        masked = jnp.where(dead[None], pre, -jnp.inf)  # (B, d_sae)
        kth = jnp.min(jax.lax.top_k(masked, k_aux)[0], -1, keepdims=True)  # (B, 1); see topk_mask
        acts = jnp.where(dead[None] & (masked >= kth), pre, 0.0)
        recon = acts @ params["W_dec"]  # no b_dec: the residual already has it
        scale = jnp.minimum(n_dead / k_aux, 1.0)
        return scale * jnp.mean(jnp.sum((recon - residual) ** 2, -1))

    # Skip the second top-k entirely while nothing is dead (most of training).
    return jax.lax.cond(n_dead > 0, loss, lambda: jnp.zeros((), pre.dtype))


@register_architecture
class JumpReLU(Architecture):
    """pre * (pre > threshold), a learned threshold per latent, trained with an
    L0 penalty through straight-through estimators (Rajamanoharan et al. 2024)."""

    name = "jumprelu"
    extra_params = ("threshold",)

    def init_extra(self, config, dtype):
        return {"threshold": jnp.full((config.d_sae,), config.jumprelu_init_threshold, dtype)}

    def activate(self, params, pre, config):
        return jnp.where(pre > params["threshold"], pre, 0.0)

    def train_activate(self, params, pre, config, train):
        jump, step = jumprelu_ste(train.bandwidth)
        thr = params["threshold"]
        return jump(pre, thr), jnp.mean(jnp.sum(step(pre, thr), -1))

    def after_update(self, params):
        return dict(params, threshold=jnp.maximum(params["threshold"], 1e-6))

    def fold_scale(self, params, scale):
        return dict(params, threshold=params["threshold"] / scale)


def jumprelu_ste(bandwidth: float):
    """(jump, step): pre * (pre > thr) and (pre > thr), with pseudo-gradients to thr.

    The threshold's pseudo-derivative of H(pre - thr) is -(1/bandwidth) *
    rect((pre - thr) / bandwidth); jump gets the same times thr, as DeepMind's
    JumpReLU. The step passes no gradient to pre.
    """

    def window(pre, thr):
        return (jnp.abs(pre - thr) < bandwidth / 2).astype(pre.dtype) / bandwidth

    def batch_sum(g):
        return jnp.sum(g, axis=tuple(range(g.ndim - 1)))

    @jax.custom_vjp
    def jump(pre, thr):
        return pre * (pre > thr)

    def jump_bwd(res, g):
        pre, thr = res
        return (pre > thr) * g, batch_sum(-thr * window(pre, thr) * g)

    jump.defvjp(lambda pre, thr: (jump(pre, thr), (pre, thr)), jump_bwd)

    @jax.custom_vjp
    def step(pre, thr):
        return (pre > thr).astype(pre.dtype)

    def step_bwd(res, g):
        pre, thr = res
        return jnp.zeros_like(pre), batch_sum(-window(pre, thr) * g)

    step.defvjp(lambda pre, thr: (step(pre, thr), (pre, thr)), step_bwd)
    return jump, step
