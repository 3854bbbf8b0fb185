"""Bootstrap confidence intervals with the feature as the unit.

The texts of one feature share its direction, its α and its description, so
they are not independent draws: an interval over texts would be far too
narrow. Every statistic here first averages a feature's texts, then resamples
features with replacement (percentile bootstrap). A paired difference
resamples the same features for both methods (SNMF and the DiffMean built
from that SNMF feature), so what the features share cancels.

    mean, lo, hi = bootstrap_mean(per_feature)                 # (F,) -> CI
    diff, lo, hi = paired_difference(snmf_f, diffmean_f)       # same F features
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from snmf_jax import _checks


class Interval(NamedTuple):
    """A mean and its percentile-bootstrap interval over n units."""

    mean: float
    lo: float
    hi: float
    n: int

    def as_dict(self) -> dict:
        return {"mean": self.mean, "lo": self.lo, "hi": self.hi, "n": self.n}


def _vector(name: str, x) -> np.ndarray:
    x = np.asarray(x, np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"{name} must be a non-empty (F,) vector; got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} has non-finite values")
    return x


def bootstrap_mean(values, *, n_boot: int = 2000, level: float = 0.95, seed: int = 0
                   ) -> Interval:
    """The mean of per-feature values with a percentile-bootstrap interval.

    Args:
      values: (F,) one value per feature (e.g. its mean score over texts).
      n_boot: bootstrap resamples.
      level: coverage of the interval.
      seed: resampling seed.

    Returns:
      Interval(mean, lo, hi, n=F); with F == 1 the interval is the point.
    """
    x = _vector("values", values)
    _checks.integer("n_boot", n_boot, lo=1)
    _checks.real("level", level, lo=0, lo_open=True, hi=1, hi_open=True)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.size, size=(n_boot, x.size))  # (B, F)
    means = x[idx].mean(1)  # (B,)
    a = (1 - level) / 2
    lo, hi = np.quantile(means, [a, 1 - a])
    return Interval(float(x.mean()), float(lo), float(hi), int(x.size))


def paired_difference(a, b, *, n_boot: int = 2000, level: float = 0.95, seed: int = 0
                      ) -> Interval:
    """mean(a − b) over paired features, with a bootstrap interval that resamples
    the pairs (not the two methods separately).

    Args:
      a, b: (F,) per-feature values of two methods on the same features.
      n_boot, level, seed: as in `bootstrap_mean`.

    Returns:
      Interval of the mean difference.
    """
    a, b = _vector("a", a), _vector("b", b)
    if a.shape != b.shape:
        raise ValueError(f"paired_difference: a and b must pair up; got {a.shape} and {b.shape}")
    return bootstrap_mean(a - b, n_boot=n_boot, level=level, seed=seed)
