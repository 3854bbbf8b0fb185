"""Semi-nonnegative matrix factorization of MLP activations."""

from snmf_jax.factorize._fit import fit, StopRule, FitState, CHECKPOINT_FILE
from snmf_jax.factorize._inits import random_codes, svd_init, kmeans_init
from snmf_jax.factorize._result import SNMFResult
from snmf_jax.factorize._solver import (SNMFConfig, SNMFState, init, update,
                                        winner_take_all, solve_features, scaled_features,
                                        dense_loss)
from snmf_jax.factorize._threads import limit_blas_threads
from snmf_jax.factorize._sharded import fit_sharded, token_sharding
from snmf_jax.factorize._streaming import (fit_streaming, RowSource, ArraySource,
                                           SafetensorsSource, CodesStore, as_source)
from snmf_jax.factorize._distributed import (initialize as initialize_distributed,
                                             global_mesh, process_row_range,
                                             process_chunk_range, load_process_rows)
from snmf_jax.factorize._hierarchy_result import HierarchicalResult
from snmf_jax.factorize._hierarchy import fit_hierarchical, fit_level
from snmf_jax.factorize._finetune import finetune_hierarchy
from snmf_jax.factorize._planted import PlantedHierarchy, planted_hierarchy, parent_recovery

__all__ = [
    "fit", "StopRule", "FitState", "CHECKPOINT_FILE", "SNMFResult", "SNMFConfig",
    "SNMFState", "init", "update", "winner_take_all", "solve_features", "dense_loss",
    "random_codes", "svd_init", "kmeans_init", "scaled_features", "limit_blas_threads",
    "fit_sharded", "token_sharding", "fit_streaming", "RowSource", "ArraySource",
    "SafetensorsSource", "CodesStore", "as_source", "initialize_distributed", "global_mesh",
    "process_row_range", "process_chunk_range", "load_process_rows",
    "HierarchicalResult", "fit_hierarchical", "fit_level", "finetune_hierarchy",
    "PlantedHierarchy", "planted_hierarchy", "parent_recovery",
]
