"""The CLI's flag defaults are the library's (read from it, never restated)."""

import dataclasses
import inspect

import pytest

from snmf_jax.cli import _options as cli_options
from snmf_jax.cli.main import build_parser
from snmf_jax.evaluate._compare import CompareConfig
from snmf_jax.evaluate._per_feature import PerFeatureConfig
from snmf_jax.evaluate._steering import SteeringConfig
from snmf_jax.factorize import fit_hierarchical
from snmf_jax.factorize._online import OnlineConfig
from snmf_jax.factorize._options import FitConfig
from snmf_jax.interpret import concept_tree
from snmf_jax.report import feature_report
from snmf_jax.steer import feature_directions, generate


def _sub(name):
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")  # noqa: SLF001
    return action.choices[name]


def _sig(fn, name):
    return inspect.signature(fn).parameters[name].default


def _field(cls, name):
    return next(f for f in dataclasses.fields(cls) if f.name == name).default


@pytest.mark.parametrize("command, expected", [
    ("fit", {**{f.name: f.default for f in dataclasses.fields(FitConfig)
                if f.name not in ("rank", "init")},
             **{n: _field(OnlineConfig, n) for n in ("passes", "batch_size", "forget",
                                                      "code_iters")}}),
    ("hierarchy", {"sparsity": [_sig(fit_hierarchical, "sparsity")],
                   **{n: _sig(fit_hierarchical, n) for n in ("init", "seed", "restarts",
                                                            "max_iter", "finetune_steps")},
                   **{n: _sig(concept_tree, n) for n in ("threshold", "max_children")}}),
    ("interpret", {"contexts": _sig(feature_report, "k"),
                   "window": _sig(feature_report, "window"),
                   "tokens": _sig(feature_report, "n_tokens"),
                   "neurons": _sig(feature_report, "max_neurons")}),
    ("steer", {"where": _sig(generate, "where"), "samples": _sig(generate, "n_samples"),
               "max_new_tokens": _sig(generate, "max_new_tokens"),
               "site": _sig(feature_directions, "site")}),
    ("evaluate", {"features": _field(PerFeatureConfig, "n_features"),
                  "sae_k": _field(CompareConfig, "sae_k"),
                  "sae_tokens": _field(CompareConfig, "sae_tokens"),
                  "unsupervised": _field(CompareConfig, "unsupervised"),
                  "samples": _field(SteeringConfig, "n_samples"),
                  "max_new_tokens": _field(SteeringConfig, "max_new_tokens"),
                  "sampler": _field(SteeringConfig, "sampler")}),
])
def test_flag_defaults_are_the_librarys(command, expected):
    p = _sub(command)
    got = {name: p.get_default(name) for name in expected}
    assert got == expected


def test_fit_help_shows_the_options_defaults():
    text = " ".join(_sub("fit").format_help().split())  # unwrapped
    assert "(default: 50)" in text and "(default: 1e-05)" in text  # patience, tol
    assert text.count("(default: 0.01)") == 1  # shown once, not twice


def test_one_generator_handles_required_and_none_fields():
    import argparse
    p = argparse.ArgumentParser()
    cli_options.add_dataclass_arguments(p, FitConfig)
    with pytest.raises(SystemExit):
        p.parse_args([])  # --rank is required (no default)
    opts = cli_options.from_args(FitConfig, p.parse_args(["--rank", "4", "--patience", "0"]))
    assert opts == FitConfig(rank=4, patience=None)
