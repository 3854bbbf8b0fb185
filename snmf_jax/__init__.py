"""snmf-jax: interpretable MLP features of language models by semi-NMF, in JAX.

    import snmf_jax as sj
    result = sj.fit(X, rank=100, sparsity=0.01)
"""

# pylint: disable=g-importing-member

# The subpackages, bottom layer first.
from snmf_jax import (activations, baselines, evaluate, factorize, interpret, models, report,
                      steer)

# Shortcuts: a model, its activations, a fit.
from snmf_jax.models import load_model
from snmf_jax.activations import (Activations, ActivationStore, TextDataset,
                                  export_activations, load_concepts, load_dataset)
from snmf_jax.factorize import (FitConfig, HierarchicalResult, SNMFConfig, SNMFResult,
                                SNMFState, encode, fit, fit_hierarchical, fit_online,
                                fit_sharded, fit_streaming)

__version__ = "0.1.0"

__all__ = [
    # The subpackages
    "activations", "baselines", "evaluate", "factorize", "interpret", "models", "report",
    "steer",
    # A model and its activations
    "load_model", "Activations", "ActivationStore", "TextDataset", "export_activations",
    "load_concepts", "load_dataset",
    # Fits
    "fit", "fit_sharded", "fit_streaming", "fit_online", "encode", "FitConfig", "SNMFConfig",
    "SNMFResult", "SNMFState", "fit_hierarchical", "HierarchicalResult",
    "__version__",
]
