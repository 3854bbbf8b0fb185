"""Planted data for factorization tests."""

from __future__ import annotations

import numpy as np


def low_rank_data(n: int, d: int, k: int = 4, *, seed: int = 0,
                  noise: float = 0.05) -> np.ndarray:
    """Rows near a rank-k subspace: X = C W + noise, C uniform in [0, 1).

    Args:
      n: rows.
      d: columns.
      k: rank of the planted part (codes C (n, k) >= 0, W (k, d) Gaussian).
      seed: numpy seed; C, W and the noise are drawn from it in that order.
      noise: standard deviation of the Gaussian noise added (0: none drawn).

    Returns:
      X, float32 (n, d).
    """
    rng = np.random.default_rng(seed)
    x = rng.random((n, k)) @ rng.standard_normal((k, d))
    if noise:
        x = x + noise * rng.standard_normal((n, d))
    return x.astype(np.float32)
