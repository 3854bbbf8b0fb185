"""snmf-jax: interpretable MLP features of language models by semi-NMF, in JAX.

    import snmf_jax as sj
    result = sj.fit(X, rank=100, sparsity=0.01)
"""

from snmf_jax import factorize
from snmf_jax.factorize import (SNMFConfig, SNMFResult, SNMFState, fit)

__version__ = "0.1.0"

__all__ = ["factorize", "SNMFConfig", "SNMFResult", "SNMFState", "fit", "__version__"]
