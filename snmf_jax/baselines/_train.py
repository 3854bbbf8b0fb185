"""Training sparse autoencoders with optax, streaming minibatches.

One jitted step takes the weights, the optimizer state and a minibatch as
arguments (never closed over). Around it a host loop draws shuffled
minibatches from an in-memory array, an `Activations` or an
`ActivationStore`, tracks which latents have not fired for a while, and logs.

The usual care, as in SAELens / Gao et al. (2024) / Conerly et al. (2024):
  * activations are scaled so their mean norm is sqrt(d_in) while training
    (hyperparameters then carry across layers and models) and the scale is
    folded into the biases at the end, so the returned SAE reads raw
    activations and its decoder rows stay unit norm;
  * decoder rows kept at unit norm: the gradient's component along each row
    is removed and the rows renormalised after every update;
  * encoder initialised as the decoder's transpose, b_dec at the data mean;
  * linear learning-rate warm-up, linear decay over the last `decay_fraction`
    of the steps; L1 coefficient warm-up for the standard SAE;
  * TopK: the auxiliary loss (dead latents reconstruct the live latents'
    residual, k_aux = d_in // 2, scaled by min(n_dead / k_aux, 1), as SAELens);
  * JumpReLU: L0 penalty through the straight-through estimator of
    Rajamanoharan et al. (2024) with a rectangle kernel of width `bandwidth`.
What differs per architecture (the last two points) is its class in
`_architectures`; the step here only calls it.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Iterator, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from snmf_jax import _numerics
from snmf_jax.baselines._architectures import DECODER_NORM_FLOOR, architecture
from snmf_jax.baselines._sae import SAEConfig, SparseAutoencoder, decode, encode_pre
from snmf_jax.baselines._stream import iter_minibatches, mean_and_scale


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How to train a sparse autoencoder.

    Attributes:
      total_tokens: tokens to train on (rounded up to whole batches).
      batch_size: tokens per step.
      lr: peak Adam learning rate.
      warmup_steps: linear learning-rate warm-up from 0.
      decay_fraction: fraction of the steps at the end over which lr decays to 0.
      l1_coefficient: L1 (standard) or L0 (jumprelu) penalty weight, on
        activations normalised to mean norm sqrt(d_in).
      l1_warmup_fraction: fraction of the steps over which the penalty ramps up.
      aux_coefficient: weight of the TopK auxiliary dead-latent loss.
      dead_window: a latent that has not fired for this many steps is dead.
      bandwidth: JumpReLU straight-through estimator width.
      normalize: train on activations scaled to mean norm sqrt(d_in).
      shuffle_buffer: rows mixed before minibatches are cut (store chunks come
        grouped by document; a buffer of several chunks mixes documents).
      seed: weight init and shuffling.
      log_every: steps between history entries (0: only the last).
    """

    total_tokens: int = 1_000_000
    batch_size: int = 4096
    lr: float = 4e-4
    warmup_steps: int = 50
    decay_fraction: float = 0.2
    l1_coefficient: float = 5.0
    l1_warmup_fraction: float = 0.05
    aux_coefficient: float = 1.0
    dead_window: int = 200
    bandwidth: float = 0.001
    normalize: bool = True
    shuffle_buffer: int = 65536
    seed: int = 0
    log_every: int = 50

    def __post_init__(self):
        for name in ("total_tokens", "batch_size", "dead_window"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1; got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"TrainConfig.lr must be > 0; got {self.lr}")
        if not 0 <= self.decay_fraction <= 1:
            raise ValueError(f"TrainConfig.decay_fraction must be in [0, 1]; got {self.decay_fraction}")

    @property
    def steps(self) -> int:
        return math.ceil(self.total_tokens / self.batch_size)


class TrainResult(NamedTuple):
    """What training returns besides the SAE.

    Attributes:
      history: list of dicts (step, tokens, loss, mse, fve, l0, aux, dead) at log points.
      n_tokens: tokens the SAE saw.
      scale: the input scale used while training (folded into the weights).
      dead_fraction: latents that had not fired for `dead_window` steps at the end.
      seconds: wall time of the training loop (compile included).
    """

    history: list
    n_tokens: int
    scale: float
    dead_fraction: float
    seconds: float


# ---------------------------------------------------------------------------
# The jitted step.


def _losses(params, x, dead, l1_coef, *, config: SAEConfig, train: TrainConfig):
    """Total loss and metrics of one minibatch x (B, d_in); dead (d_sae,) bool."""
    arch = architecture(config.architecture)
    pre = encode_pre(params, x, config)  # (B, d_sae)
    z, sparsity = arch.train_activate(params, pre, config, train)
    penalty = jnp.zeros((), x.dtype) if sparsity is None else l1_coef * sparsity
    x_hat = decode(params, z)
    err = x_hat - x
    mse = jnp.mean(jnp.sum(err * err, -1))
    aux = arch.aux_loss(params, pre, jax.lax.stop_gradient(-err), dead, config, train)
    aux = jnp.zeros((), x.dtype) if aux is None else aux
    loss = mse + penalty + aux
    var = jnp.sum(jnp.var(x, axis=0))
    metrics = {"loss": loss, "mse": mse, "aux": aux,
               "fve": 1.0 - mse / jnp.maximum(var, 1e-12),
               "l0": jnp.mean(jnp.sum(z > 0, -1).astype(x.dtype))}
    return loss, (metrics, jnp.any(z > 0, axis=0))


def make_train_step(config: SAEConfig, train: TrainConfig, tx: optax.GradientTransformation):
    """A jitted step(params, opt_state, x, since_fired, step) -> (params, opt_state, since_fired, metrics).

    Args:
      config: the SAE's shape and architecture.
      train: the training hyperparameters.
      tx: the optax optimizer.

    Returns:
      The jitted step. `since_fired` (d_sae,) int32 counts steps since each
      latent last fired; `step` is the int32 step index (L1 warm-up).
    """
    warm = max(1, int(train.l1_warmup_fraction * train.steps))

    def step_fn(params, opt_state, x, since_fired, step):
        dead = since_fired >= train.dead_window
        l1_coef = train.l1_coefficient * jnp.minimum(1.0, (step + 1) / warm)
        (_, (metrics, fired)), grads = jax.value_and_grad(_losses, has_aux=True)(
            params, x, dead, l1_coef, config=config, train=train)
        # Remove the gradient along each unit decoder row: it would only change the
        # row's norm, which the renormalisation below undoes anyway.
        W = params["W_dec"]
        g = grads["W_dec"]
        grads = dict(grads, W_dec=g - jnp.sum(g * W, -1, keepdims=True) * W)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        params = architecture(config.architecture).after_update(
            dict(params, W_dec=_numerics.unit_rows(params["W_dec"], DECODER_NORM_FLOOR)))
        since_fired = jnp.where(fired, 0, since_fired + 1)
        metrics["dead"] = jnp.mean(dead.astype(x.dtype))
        return params, opt_state, since_fired, metrics

    return jax.jit(step_fn, donate_argnums=(0, 1, 3))


def make_optimizer(train: TrainConfig) -> optax.GradientTransformation:
    """Adam with linear warm-up, constant, then linear decay to 0."""
    steps = train.steps
    warm = min(train.warmup_steps, steps)
    decay = int(train.decay_fraction * steps)
    flat = max(steps - warm - decay, 0)
    schedule = optax.join_schedules(
        [optax.linear_schedule(0.0, train.lr, max(warm, 1)),
         optax.constant_schedule(train.lr),
         optax.linear_schedule(train.lr, 0.0, max(decay, 1))],
        boundaries=[warm, warm + flat])
    return optax.adam(schedule, b1=0.9, b2=0.999)


def _fold_scale(params: dict, scale: float, config: SAEConfig) -> dict:
    """Weights that read raw x given weights trained on scale * x.

    encode'(x) = encode(scale * x) / scale and decode'(z') = decode(z' * scale) / scale
    hold with W_enc, W_dec unchanged and the biases (and thresholds) divided by
    scale, so decoder rows stay unit norm and TopK picks the same latents.
    """
    out = dict(params, b_enc=params["b_enc"] / scale, b_dec=params["b_dec"] / scale)
    return architecture(config.architecture).fold_scale(out, scale)


def train_sae(data: Any, config: SAEConfig, train: TrainConfig = TrainConfig(), *,
              layer: int | None = None, sae: SparseAutoencoder | None = None,
              verbose: bool = False) -> tuple[SparseAutoencoder, TrainResult]:
    """Train a sparse autoencoder on activations.

    Args:
      data: (n, d_in) array, an `Activations`, or an `ActivationStore`
        (streamed chunk by chunk; `layer` picks one of a multi-layer store).
      config: the SAE's shape and architecture (config.d_in must match the data).
      train: hyperparameters.
      layer: layer of a multi-layer store.
      sae: continue from these weights instead of a fresh init.
      verbose: print the log lines.

    Returns:
      (sae, TrainResult). The SAE reads raw activations.

    Raises:
      ValueError: width mismatch or non-finite activations.
    """
    mean, scale = mean_and_scale(data, layer=layer, d_in=config.d_in,
                                 normalize=train.normalize)
    if sae is None:
        sae = SparseAutoencoder(config, rngs=nnx.Rngs(train.seed))
        params = sae.params()
        params["b_dec"] = jnp.asarray(mean * scale, params["b_dec"].dtype)
    else:
        params = _fold_scale(sae.params(), 1.0 / scale, config)
    # The step donates its inputs: train on copies so the caller's SAE keeps valid
    # weights even if training stops half-way.
    params = jax.tree.map(jnp.array, params)
    tx = make_optimizer(train)
    opt_state = tx.init(params)
    step_fn = make_train_step(config, train, tx)
    since = jnp.zeros((config.d_sae,), jnp.int32)
    history, t0, seen = [], time.perf_counter(), 0
    batches: Iterator[np.ndarray] = iter_minibatches(
        data, train.batch_size, layer=layer, seed=train.seed, buffer=train.shuffle_buffer)
    for i in range(train.steps):
        x = jnp.asarray(next(batches)) * scale
        params, opt_state, since, metrics = step_fn(params, opt_state, x, since,
                                                    jnp.int32(i))
        seen += train.batch_size
        if (train.log_every and (i + 1) % train.log_every == 0) or i + 1 == train.steps:
            entry = {"step": i + 1, "tokens": seen,
                     **{k: float(v) for k, v in jax.device_get(metrics).items()}}
            if not all(np.isfinite(v) for v in entry.values()):
                raise FloatingPointError(f"SAE training diverged at step {i + 1}: {entry}")
            history.append(entry)
            if verbose:
                print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                               for k, v in entry.items()), flush=True)
    sae.set_params(_fold_scale(params, scale, config))
    dead = float(jnp.mean(since >= train.dead_window))
    return sae, TrainResult(history, seen, float(scale), dead, time.perf_counter() - t0)
