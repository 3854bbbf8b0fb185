"""Baselines SNMF is compared against: DiffMean and sparse autoencoders.

    names, D = diffmean_directions(acts)                       # (C, d) unit rows
    sae, info = train_sae(store, SAEConfig(d_in=576, d_sae=4608, k=32),
                          TrainConfig(total_tokens=2_000_000))
    print(sae_metrics(sae, held_out))                          # fve, l0, dead
    save_sae(sae, "runs/sae")                                  # SAELens layout
    sae = load_sae("path/to/a/saelens/folder")
"""

from snmf_jax.baselines._architectures import Architecture, register_architecture
from snmf_jax.baselines._diffmean import diffmean, diffmean_directions, diffmean_texts
from snmf_jax.baselines._metrics import SAEMetrics, sae_metrics
from snmf_jax.baselines._sae import (ARCHITECTURES, SAEConfig, SparseAutoencoder, decode,
                                     encode, encode_pre, init_params)
from snmf_jax.baselines._saelens import load_sae, save_sae
from snmf_jax.baselines._stream import iter_minibatches
from snmf_jax.baselines._train import (TrainConfig, TrainResult, make_optimizer,
                                       make_train_step, train_sae)

__all__ = [
    "diffmean", "diffmean_directions", "diffmean_texts", "SAEMetrics", "sae_metrics",
    "ARCHITECTURES", "Architecture", "register_architecture",
    "SAEConfig", "SparseAutoencoder", "decode", "encode", "encode_pre", "init_params",
    "load_sae", "save_sae", "iter_minibatches", "TrainConfig", "TrainResult",
    "make_optimizer", "make_train_step", "train_sae",
]
