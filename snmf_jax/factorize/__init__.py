"""Semi-nonnegative matrix factorization of MLP activations.

One pipeline, several places for the rows: `fit` (one device), `fit_sharded`
(a mesh; several hosts after `initialize_distributed`), `fit_streaming`
(chunks on disk). All take the same options (`FitOptions`, or its fields as
keywords), run the same solver (`snmf(config) -> (init, update)`), the same
inits, the same loop and checkpoints, and return an `SNMFResult`.

`fit_online` (mini-batches, a few passes: corpora too large for full passes;
`OnlineOptions`) folds codes of each batch into running statistics and
re-solves the features with the same solver steps. `encode` codes new rows
for fixed features (`encode_loss` scores features on held-out rows).
"""

from snmf_jax.factorize._checkpoint import CHECKPOINT_FILE, array_identity, source_identity
from snmf_jax.factorize._codes_store import CodesStore
from snmf_jax.factorize._encode import EncodeLoss, encode, encode_loss
from snmf_jax.factorize._distributed import (global_mesh, initialize as initialize_distributed,
                                             load_process_rows, process_chunk_range,
                                             process_row_range)
from snmf_jax.factorize._driver import fit
from snmf_jax.factorize._inits import kmeans_init, random_codes, svd_init
from snmf_jax.factorize._rows_mesh import token_sharding
from snmf_jax.factorize._loop import FitState, StopRule
from snmf_jax.factorize._online import OnlineOptions, fit_online
from snmf_jax.factorize._options import FitOptions
from snmf_jax.factorize._result import SNMFResult
from snmf_jax.factorize._driver import fit_sharded
from snmf_jax.factorize._solver import (SNMF, SNMFConfig, SNMFState, dense_loss, init,
                                        multiplicative_update, scaled_features, snmf,
                                        solve_features, update, winner_take_all)
from snmf_jax.factorize._row_sources import ArraySource, RowSource, SafetensorsSource, as_source
from snmf_jax.factorize._driver import fit_streaming
from snmf_jax.factorize._threads import limit_blas_threads
from snmf_jax.factorize._finetune import finetune_hierarchy
from snmf_jax.factorize._hierarchy import fit_hierarchical, fit_level
from snmf_jax.factorize._hierarchy_result import HierarchicalResult
from snmf_jax.factorize._planted import PlantedHierarchy, parent_recovery, planted_hierarchy

__all__ = [
    "fit", "fit_sharded", "fit_streaming", "fit_online", "OnlineOptions", "encode",
    "encode_loss", "EncodeLoss", "multiplicative_update", "FitOptions", "SNMFResult", "StopRule", "FitState",
    "CHECKPOINT_FILE", "array_identity", "source_identity",
    "SNMF", "snmf", "SNMFConfig", "SNMFState", "init", "update", "winner_take_all",
    "solve_features", "scaled_features", "dense_loss",
    "random_codes", "svd_init", "kmeans_init", "limit_blas_threads", "token_sharding",
    "RowSource", "ArraySource", "SafetensorsSource", "CodesStore", "as_source",
    "initialize_distributed", "global_mesh", "process_row_range", "process_chunk_range",
    "load_process_rows",
    "HierarchicalResult", "fit_hierarchical", "fit_level", "finetune_hierarchy",
    "PlantedHierarchy", "planted_hierarchy", "parent_recovery",
]
