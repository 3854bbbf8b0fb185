"""Baselines SNMF is compared against: DiffMean and sparse autoencoders.

    names, D = diffmean_directions(acts)                       # (C, d) unit rows
    sae, info = train_sae(store, SAEConfig(d_in=576, d_sae=4608, k=32),
                          TrainConfig(total_tokens=2_000_000))
    print(sae_metrics(sae, held_out))                          # fve, l0, dead
    save_sae(sae, "runs/sae")                                  # SAELens layout
    sae = load_sae("path/to/a/saelens/folder")
"""

# pylint: disable=g-importing-member

# DiffMean: a difference of class means per concept.
from snmf_jax.baselines._diffmean import diffmean, diffmean_directions, diffmean_texts

# Sparse autoencoders: the architectures, the pure encode/decode, the NNX module.
from snmf_jax.baselines._architectures import Architecture, register_architecture
from snmf_jax.baselines._sae import SAEConfig, SparseAutoencoder, decode, encode, init_params

# Training and quality.
from snmf_jax.baselines._metrics import sae_metrics
from snmf_jax.baselines._train import TrainConfig, train_sae

# SAELens' folder layout.
from snmf_jax.baselines._saelens import load_sae, save_sae

__all__ = [
    # DiffMean
    "diffmean", "diffmean_directions", "diffmean_texts",
    # Sparse autoencoders
    "SAEConfig", "SparseAutoencoder", "init_params", "encode", "decode", "Architecture",
    "register_architecture",
    # Training and quality
    "TrainConfig", "train_sae", "sae_metrics",
    # SAELens' layout
    "save_sae", "load_sae",
]
