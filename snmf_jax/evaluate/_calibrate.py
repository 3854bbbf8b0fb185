"""Small, dependency-free calibration tools: weighted logistic regression and ROC-AUC."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with tied scores counted half).

    Args:
      scores: (n,) higher = more positive.
      labels: (n,) bool / {0, 1}.

    Raises:
      ValueError: a class is empty or a score is not finite.
    """
    s = np.asarray(scores, np.float64)
    y = np.asarray(labels).astype(bool)
    if s.shape != y.shape or s.ndim != 1:
        raise ValueError(f"roc_auc: scores and labels must be equal-length vectors; got "
                         f"{s.shape} and {y.shape}")
    if y.all() or not y.any():
        raise ValueError(f"roc_auc: needs both classes; got {int(y.sum())} positives of {len(y)}")
    if not np.all(np.isfinite(s)):
        raise ValueError("roc_auc: non-finite scores")
    # average ranks over ties, vectorised
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    ranks = (np.cumsum(counts) - (counts - 1) / 2.0)[inverse]
    n_pos, n_neg = y.sum(), (~y).sum()
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


class Logistic(NamedTuple):
    """p = sigmoid(((x - mean) / scale) @ w + b).

    Attributes:
      w: (f,) weights on standardised features.
      b: bias.
      mean, scale: (f,) feature standardisation.
    """

    w: np.ndarray
    b: float
    mean: np.ndarray
    scale: np.ndarray

    def logit(self, X: np.ndarray) -> np.ndarray:
        X = np.atleast_2d(np.asarray(X, np.float64))
        return ((X - self.mean) / self.scale) @ self.w + self.b

    def prob(self, X: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-self.logit(X)))

    def to_json(self) -> dict:
        return {"w": self.w.tolist(), "b": float(self.b), "mean": self.mean.tolist(),
                "scale": self.scale.tolist()}

    @classmethod
    def from_json(cls, d: dict) -> "Logistic":
        return cls(np.asarray(d["w"], np.float64), float(d["b"]),
                   np.asarray(d["mean"], np.float64), np.asarray(d["scale"], np.float64))


def fit_logistic(X: np.ndarray, y: np.ndarray, *, l2: float = 1e-2, balanced: bool = True,
                 iters: int = 50) -> Logistic:
    """L2-regularised logistic regression by Newton's method.

    Args:
      X: (n, f) features (standardised internally).
      y: (n,) bool labels.
      l2: ridge on the weights (not the bias), per unit of total sample weight.
      balanced: weight classes equally, so p is calibrated for a 50/50 prior.
      iters: Newton steps (converges in ~10 for well-posed problems).

    Returns:
      The fitted `Logistic`.
    """
    X = np.atleast_2d(np.asarray(X, np.float64))
    y = np.asarray(y).astype(bool)
    if len(X) != len(y) or y.all() or not y.any():
        raise ValueError(f"fit_logistic: needs both classes and len(X) == len(y); got "
                         f"{len(X)} rows, {int(y.sum())} positives of {len(y)}")
    if not np.all(np.isfinite(X)):
        raise ValueError("fit_logistic: non-finite features")
    mean, scale = X.mean(0), X.std(0)
    scale = np.where(scale > 1e-12, scale, 1.0)
    Z = np.concatenate([(X - mean) / scale, np.ones((len(X), 1))], 1)  # (n, f+1)
    sw = np.where(y, 0.5 / y.sum(), 0.5 / (~y).sum()) if balanced else np.full(len(y), 1 / len(y))
    reg = np.full(Z.shape[1], l2)
    reg[-1] = 0.0
    theta = np.zeros(Z.shape[1])
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-Z @ theta))
        grad = Z.T @ (sw * (p - y)) + reg * theta
        H = (Z * (sw * p * (1 - p))[:, None]).T @ Z + np.diag(reg + 1e-9)
        step = np.linalg.solve(H, grad)
        theta -= step
        if np.max(np.abs(step)) < 1e-10:
            break
    return Logistic(theta[:-1], float(theta[-1]), mean, scale)
