"""`snmf-jax steer`: prints calibrated alphas and three continuations."""

import argparse

import numpy as np
import pytest

from snmf_jax.factorize import SNMFResult
from snmf_jax.testing import CharTokenizer, tiny_model
from snmf_jax.cli import steer as _cli


def _load_tiny(name):
    """Stands in for the CLI's model loader: the tiny llama with peaked logits."""
    return tiny_model(tokenizer=CharTokenizer(), logit_scale=3.0)


def save_result(path, metadata):
    features = np.random.default_rng(0).standard_normal((4, 48)).astype(np.float32)
    SNMFResult(features=features, codes=None, losses=np.zeros(1, np.float32), best_iter=1,
               converged=True, settings={"rank": 4}, metadata=metadata).save(path)
    return path


def parse(argv):
    parser = argparse.ArgumentParser()
    _cli.register(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


@pytest.mark.slow
def test_steer_command_prints_both_signs_next_to_unsteered(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(_cli, "_load_model", _load_tiny)
    path = save_result(tmp_path / "res", {"layer": 1, "site": "mlp_hidden"})
    args = parse(["steer", "--model", "tiny", "--features", str(path), "--feature", "0",
                  "--kl", "0.5", "--prompt", "hello", "--max-new-tokens", "5"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "feature 0 | layer 1 mlp_hidden | target KL 0.5" in out
    assert "+alpha =" in out and "-alpha =" in out
    lines = [line for line in out.splitlines() if line.strip().startswith("[")]
    assert len(lines) == 3 and "unsteered" in lines[0]
    assert len({line.split("]", 1)[1] for line in lines}) >= 2  # steering changed something


def test_steer_command_needs_a_layer(tmp_path, monkeypatch):
    monkeypatch.setattr(_cli, "_load_model", _load_tiny)
    path = save_result(tmp_path / "res", {})
    args = parse(["steer", "--model", "tiny", "--features", str(path), "--feature", "0"])
    with pytest.raises(ValueError, match="does not record its layer; pass --layer"):
        args.func(args)
    args = parse(["steer", "--model", "tiny", "--features", str(path), "--feature", "9",
                  "--layer", "1"])
    with pytest.raises(ValueError, match=r"--feature must be in \[0, 4\)"):
        args.func(args)
    path = save_result(tmp_path / "res2", {"layer": 0})
    args = parse(["steer", "--model", "tiny", "--features", str(path), "--feature", "0",
                  "--layer", "1"])
    with pytest.raises(ValueError, match="disagrees with the layer recorded"):
        args.func(args)
