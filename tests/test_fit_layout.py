"""The fit pipeline's shape: one table of init names, and steps that never
import the driver that calls them (a fit reads top-down, see _driver)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import snmf_jax as sj
from snmf_jax.factorize import _inits, _online, _options

FACTORIZE = Path(sj.__file__).parent / "factorize"


def _imports(path: Path) -> set[str]:
    """factorize modules a file imports (module level and inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "snmf_jax.factorize":
                found |= {a.name for a in node.names}
            elif node.module.startswith("snmf_jax.factorize."):
                found.add(node.module.rsplit(".", 1)[1])
    return found


def test_no_step_of_a_fit_imports_its_driver():
    callers = {p.stem for p in FACTORIZE.glob("_*.py")
               if p.stem != "__init__" and "_driver" in _imports(p)}
    # Only the hierarchy (a fit of fits) builds on the drivers.
    assert callers == {"_hierarchy"}


def test_init_names_come_from_one_table():
    assert _options.INITS == tuple(_inits.INITS)
    assert set(_online.INITS) == set(_inits.INITS)
    for name, spec in _inits.INITS.items():
        assert callable(spec.codes) and callable(spec.sample_features), name


def test_an_unknown_init_is_refused_by_every_fit():
    for make in (lambda: sj.factorize.FitConfig(rank=2, init="pca"),
                 lambda: sj.factorize.OnlineConfig(rank=2, init="pca")):
        with pytest.raises(ValueError, match="init must be one of"):
            make()
