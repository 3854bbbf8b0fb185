"""`FitConfig`: the one set of settings every fit and the CLI share.

A frozen dataclass validated once, in `__post_init__` (plus `check_shape`
against the data). The `snmf-jax fit` flags are derived from its fields
(`snmf_jax.cli._options.add_dataclass_arguments`), so names, defaults and help cannot drift
from the Python API. `fit`, `fit_sharded` and `fit_streaming` take the same
keyword arguments and build one of these.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from snmf_jax import _checks
from snmf_jax.factorize import _inits, _solver
from snmf_jax.factorize._loop import StopRule

INITS = tuple(_inits.INITS)  # ("random", "svd", "kmeans"): the one table
TOL_MODES = ("relative", "absolute")


def _opt(default, help: str, **cli) -> Any:  # pylint: disable=redefined-builtin
    """A field whose metadata carries its CLI help (and choices / type)."""
    return dataclasses.field(default=default, metadata={"help": help, **cli})


@dataclasses.dataclass(frozen=True)
class FitConfig:
    """Settings of an SNMF fit (validated on construction).

    Attributes:
      rank: number of features K (checked against the data by `check_shape`).
      sparsity: keep-fraction p: each feature keeps ceil(p·d) neurons.
      init: "random", "svd" or "kmeans" (ignored with codes_init).
      seed: PRNG seed of the init.
      max_iter: iteration budget.
      patience: stop after this many iterations without improvement; None
        runs exactly max_iter iterations (the CLI spells None as 0).
      tol: improvement threshold (see tol_mode).
      tol_mode: "relative" (beat best·(1 − tol)) or "absolute" (beat
        best − tol, as the paper's reference code does).
      reg: ridge λ of the feature solve.
      mu_eps: epsilon of the multiplicative update.
      checkpoint_every: iterations between checkpoints (with checkpoint_dir).
      chunk_size: iterations per device call between host updates.
    """

    rank: int = dataclasses.field(metadata={"help": "number of features K"})
    sparsity: float = _opt(0.01, "keep-fraction of neurons per feature")
    init: str = _opt("random", "initial codes", choices=INITS)
    seed: int = _opt(0, "PRNG seed of the init")
    max_iter: int = _opt(1000, "iteration budget")
    patience: int | None = _opt(
        50, "stop after this many iterations without improvement (0: never)", type=int,
        none=0)
    tol: float = _opt(1e-5, "improvement threshold (see --tol-mode)")
    tol_mode: str = _opt("relative", "relative: beat best*(1-tol); absolute: best-tol",
                         choices=TOL_MODES)
    reg: float = _opt(1e-6, "ridge of the feature solve")
    mu_eps: float = _opt(1e-6, "epsilon of the multiplicative code update")
    checkpoint_every: int = _opt(100, "iterations between checkpoints")
    chunk_size: int = _opt(25, "iterations per device call between host updates")

    def __post_init__(self):
        if not _checks.is_int(self.rank):
            raise TypeError(f"rank must be an int; got {type(self.rank).__name__}")
        # The range of rank depends on the data: `check_shape`.
        if not (_checks.is_real(self.sparsity) and 0 < self.sparsity <= 1):
            raise ValueError(f"sparsity (keep-fraction) must be in (0, 1]; got {self.sparsity!r}")
        if self.init not in INITS:
            raise ValueError(f"init must be one of {INITS}; got {self.init!r}")
        if not _checks.is_int(self.seed) or not -2 ** 63 <= self.seed < 2 ** 63:
            raise ValueError(f"seed must be an int in [-2**63, 2**63) (a PRNG seed is 64-bit); "
                             f"got {self.seed!r}")
        if not _checks.is_int(self.max_iter) or self.max_iter < 1:
            raise ValueError(f"max_iter must be an int >= 1; got {self.max_iter!r}")
        if self.patience is not None and (not _checks.is_int(self.patience) or self.patience < 1):
            raise ValueError(f"patience must be None or an int >= 1; got {self.patience!r}")
        if not (_checks.is_real(self.tol) and self.tol >= 0 and math.isfinite(self.tol)):
            raise ValueError(f"tol must be a finite number >= 0; got {self.tol!r}")
        if self.tol_mode not in TOL_MODES:
            raise ValueError(f"tol_mode must be 'relative' or 'absolute'; got {self.tol_mode!r}")
        for name in ("reg", "mu_eps"):
            v = getattr(self, name)
            if not (_checks.is_real(v) and v > 0 and math.isfinite(v)):
                raise ValueError(f"{name} must be a finite number > 0; got {v!r}")
        for name in ("checkpoint_every", "chunk_size"):
            v = getattr(self, name)
            if not _checks.is_int(v) or v < 1:
                raise ValueError(f"{name} must be an int >= 1; got {v!r}")

    def check_shape(self, n: int, d: int) -> None:
        """Checks the rank against data of shape (n, d)."""
        if not 1 <= self.rank <= min(n, d):
            raise ValueError(
                f"rank must be in [1, min(n_tokens, d_mlp)] = [1, {min(n, d)}] for "
                f"X of shape ({n}, {d}); got {self.rank}")

    @property
    def solver_config(self) -> _solver.SNMFConfig:
        """The static settings of the update."""
        return _solver.SNMFConfig(rank=int(self.rank), sparsity=float(self.sparsity),
                                  reg=self.reg, mu_eps=self.mu_eps)

    @property
    def stop_rule(self) -> StopRule:
        return StopRule(patience=self.patience, tol=float(self.tol),
                        relative=self.tol_mode == "relative")

    def settings(self, *, dtype, n: int, d: int, has_codes_init: bool) -> dict:
        """The JSON settings identifying a trajectory (a checkpoint resumes only
        under equal settings; the result records them)."""
        return {"rank": int(self.rank), "sparsity": float(self.sparsity),
                "init": "codes_init" if has_codes_init else self.init,
                "seed": int(self.seed), "max_iter": int(self.max_iter),
                "patience": self.patience, "tol": float(self.tol),
                "tol_mode": self.tol_mode, "reg": self.reg, "mu_eps": self.mu_eps,
                "dtype": str(np.dtype(dtype)), "n_tokens": int(n), "d": int(d)}


def resolve(fn: str, rank, options, kwargs: dict, cls=FitConfig):
    """The options of a fit call: `options=`, or rank and option keywords.

    Args:
      fn: the calling function's name (for messages).
      rank: the positional rank, or None with options=.
      options: an instance of `cls`, or None.
      kwargs: the remaining keywords: fields of `cls` only.
      cls: the frozen options dataclass (FitConfig; the online fit's
        OnlineConfig).

    Returns:
      The validated options.
    """
    fields = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(kwargs) - set(fields))
    if unknown:
        raise TypeError(f"{fn}() got unexpected keyword argument(s) {unknown}; the "
                        f"{cls.__name__} fields are {fields}")
    if options is not None:
        if not isinstance(options, cls):
            raise TypeError(f"options must be a {cls.__name__}; got {type(options).__name__}")
        if rank is not None or kwargs:
            raise TypeError(f"{fn}(): pass either options= or rank and option keywords, "
                            "not both")
        return options
    if rank is None:
        raise TypeError(f"{fn}() needs rank (or options=)")
    return cls(rank=rank, **kwargs)
