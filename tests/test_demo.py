"""`snmf-jax demo` and `snmf-jax export` end to end on a tiny random model:
every step runs, writes runs/demo's files, and a rerun reuses each finished
step only while its recorded settings and data match."""

import json

import numpy as np
import pytest

from snmf_jax import cli, models
from snmf_jax.activations import ActivationStore
from snmf_jax.factorize import SNMFResult
from snmf_jax.testing import CharTokenizer, tiny_model


def _load_tiny(name="tiny", **_):
    """Stands in for `models.load_model`: the tiny llama, peaked logits, 256 positions."""
    return tiny_model(tokenizer=CharTokenizer(), logit_scale=3.0, max_position=256)


@pytest.fixture
def tiny(monkeypatch):
    monkeypatch.setattr(models, "load_model", _load_tiny)


def test_export_command_writes_a_store(tmp_path, tiny, capsys):
    out = tmp_path / "acts"
    assert cli.main(["export", "--model", "tiny", "--layers", "0,1", "--out", str(out),
                     "--limit", "12", "--no-progress"]) == 0
    store = ActivationStore(out)
    assert store.layers == (0, 1) and store.shape[1] == 48 and store.n_rows > 12
    assert len(store.texts) == 12
    capsys.readouterr()


@pytest.mark.slow
def test_demo_runs_every_step_then_reuses_them(tmp_path, tiny, capsys):
    out = tmp_path / "demo"
    argv = ["demo", "--rank", "6", "--max-iter", "5", "--steer", "3", "--max-new-tokens", "4",
            "--no-judge", "--kl", "0.5", "--out", str(out), "--prompt", "hello there"]
    assert cli.main(argv) == 0
    first = capsys.readouterr().out
    for step in range(1, 7):
        assert f"[{step}/6]" in first
    assert "wrote " in first and "The 3 clearest features" in first
    assert first.count("top tokens:") == 3 and first.count("steered (+α=") == 3
    res = SNMFResult.load(out / "features")
    assert res.rank == 6 and res.metadata["demo"]["data"]["kind"] == "chunks"
    page = (out / "index.html").read_text()
    steered = json.loads((out / "steered.json").read_text())
    assert len(steered["samples"]) == 3
    text = next(iter(steered["samples"].values()))[0]["text"]
    assert json.dumps(text)[1:-1][:20] in page or text[:10] in page  # samples in the page
    assert any((out / "plots").iterdir())

    # A rerun reuses the store, the fit and the steered samples.
    assert cli.main(argv) == 0
    second = capsys.readouterr().out
    assert "reused" in second and "(same settings, restarts and data)" in second
    assert "(same features, picks and settings)" in second
    np.testing.assert_array_equal(SNMFResult.load(out / "features").features, res.features)

    # Other settings: the fit (and so the steering) is redone, the store reused.
    assert cli.main([*argv, "--sparsity", "0.5"]) == 0
    third = capsys.readouterr().out
    assert "fitted with other settings or data; fitting again" in third
    assert "(same features, picks and settings)" not in third
    assert SNMFResult.load(out / "features").settings["sparsity"] == 0.5


def test_demo_rejects_a_file_as_out_before_work(tmp_path, capsys):
    f = tmp_path / "f"
    f.write_text("x")
    assert cli.main(["demo", "--out", str(f)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--out must be a folder" in err[0]
