"""snmf-jax: interpretable MLP features of language models by semi-NMF, in JAX.

    import snmf_jax as sj
    result = sj.fit(X, rank=100, sparsity=0.01)
"""

from snmf_jax import (activations, baselines, evaluate, factorize, interpret, models, report,
                      steer)
from snmf_jax.activations import (Activations, ActivationStore, TextDataset,
                                  export_activations, load_concepts, read_dataset)
from snmf_jax.factorize import (FitConfig, HierarchicalResult, SNMFConfig, SNMFResult,
                                SNMFState, encode, fit, fit_hierarchical, fit_online,
                                fit_sharded, fit_streaming)
from snmf_jax.models import load_model

__version__ = "0.1.0"

__all__ = [
    "activations", "baselines", "evaluate", "factorize", "interpret", "models", "report",
    "steer",
    "Activations", "ActivationStore", "TextDataset", "export_activations", "load_concepts",
    "read_dataset", "FitConfig", "SNMFConfig", "SNMFResult", "SNMFState", "fit", "fit_sharded",
    "fit_streaming", "fit_online", "encode", "HierarchicalResult", "fit_hierarchical", "load_model", "__version__",
]
