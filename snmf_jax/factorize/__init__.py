"""Semi-nonnegative matrix factorization of MLP activations."""

from snmf_jax.factorize._fit import fit, StopRule, FitState, CHECKPOINT_FILE
from snmf_jax.factorize._inits import random_codes, svd_init, kmeans_init
from snmf_jax.factorize._result import SNMFResult
from snmf_jax.factorize._solver import (SNMFConfig, SNMFState, init, update,
                                        winner_take_all, solve_features, dense_loss)

__all__ = [
    "fit", "StopRule", "FitState", "CHECKPOINT_FILE", "SNMFResult", "SNMFConfig",
    "SNMFState", "init", "update", "winner_take_all", "solve_features", "dense_loss",
    "random_codes", "svd_init", "kmeans_init",
]
