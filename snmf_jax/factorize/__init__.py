"""Semi-nonnegative matrix factorization of MLP activations.

One pipeline, several places for the rows: `fit` (one device), `fit_sharded`
(a mesh; several hosts after `initialize_distributed`), `fit_streaming`
(chunks on disk). All take the same options (`FitConfig`, or its fields as
keywords), run the same solver (`snmf(config) -> (init, update)`), the same
inits, the same loop and checkpoints, and return an `SNMFResult`.

`fit_online` (mini-batches, a few passes: corpora too large for full passes;
`OnlineConfig`) folds codes of each batch into running statistics and
re-solves the features with the same solver steps. `encode` codes new rows
for fixed features (`encode_loss` scores features on held-out rows).
"""

# pylint: disable=g-importing-member,g-import-not-at-top

# The fits: one pipeline, several places for the rows.
from snmf_jax.factorize._driver import fit, fit_sharded, fit_streaming
from snmf_jax.factorize._online import OnlineConfig, fit_online
from snmf_jax.factorize._options import FitConfig
from snmf_jax.factorize._result import SNMFResult

# Codes of new rows for fixed features.
from snmf_jax.factorize._encode import encode, encode_loss

# The solver: `snmf(config) -> SNMF(init, update)`, an optax-style pure pair.
from snmf_jax.factorize._solver import SNMF, SNMFConfig, SNMFState, snmf
# A hand-driven solver loop on CPU wants BLAS pinned to one thread, as the fits do.
from snmf_jax.factorize._threads import limit_blas_threads

# Rows on disk: what `fit_streaming` and `fit_online` read, where codes go.
from snmf_jax.factorize._codes_store import CodesStore
from snmf_jax.factorize._row_sources import RowSource, SafetensorsSource, as_source

# Several processes (`fit_sharded` over hosts).
from snmf_jax.factorize._distributed import (global_mesh, initialize as initialize_distributed,
                                             load_process_rows)

# Hierarchies of features (and a planted tree to check them against).
from snmf_jax.factorize._finetune import finetune_hierarchy
from snmf_jax.factorize._hierarchy import fit_hierarchical
from snmf_jax.factorize._hierarchy_result import HierarchicalResult
from snmf_jax.factorize._planted import parent_recovery, planted_hierarchy

__all__ = [
    # The fits
    "fit", "fit_sharded", "fit_streaming", "fit_online", "FitConfig", "OnlineConfig",
    "SNMFResult",
    # Encoding
    "encode", "encode_loss",
    # The solver
    "snmf", "SNMF", "SNMFConfig", "SNMFState", "limit_blas_threads",
    # Rows on disk
    "RowSource", "SafetensorsSource", "as_source", "CodesStore",
    # Several processes
    "initialize_distributed", "global_mesh", "load_process_rows",
    # Hierarchies
    "fit_hierarchical", "finetune_hierarchy", "HierarchicalResult", "planted_hierarchy",
    "parent_recovery",
]
