"""Hostile inputs to the baselines: SAELens folders written by anyone.

A SAELens folder carries no digest of ours, so it is checked instead: its
cfg.json must parse, its weights file must be readable safetensors with the
configured shapes and finite values; each failure names the file.
"""

import json

import numpy as np
import pytest
from flax import nnx

from snmf_jax import _io
from snmf_jax.baselines import SAEConfig, SparseAutoencoder, load_sae, save_sae


@pytest.fixture
def folder(tmp_path):
    sae = SparseAutoencoder(SAEConfig(d_in=6, d_sae=10, architecture="topk", k=2),
                            rngs=nnx.Rngs(0))
    return save_sae(sae, tmp_path / "sae")


def _one_line(e):
    assert "\n" not in str(e), str(e)
    return str(e)


@pytest.mark.parametrize("text", ["{broken", "[]", '{"architecture": "topk"}'])
def test_bad_cfg_json_names_the_file(folder, text):
    (folder / "cfg.json").write_text(text)
    with pytest.raises(ValueError) as e:
        load_sae(folder)
    assert "cfg.json" in _one_line(e.value)


@pytest.mark.parametrize("cut", [4, 30, -6])
def test_truncated_weights_name_the_file(folder, cut):
    f = folder / "sae_weights.safetensors"
    f.write_bytes(f.read_bytes()[:cut])
    with pytest.raises(ValueError) as e:
        load_sae(folder)
    assert "sae_weights.safetensors" in _one_line(e.value)


@pytest.mark.parametrize("edit", ["nan", "missing", "shape"])
def test_bad_weights_name_the_file_and_the_weight(folder, edit):
    f = folder / "sae_weights.safetensors"
    w = _io.load_arrays(f)
    if edit == "nan":
        w["W_dec"][0, 0] = np.nan
    elif edit == "missing":
        del w["W_dec"]
    else:
        w["W_dec"] = w["W_dec"][:, :3].copy()
    _io.save_arrays(f, w)
    with pytest.raises(ValueError, match="W_dec") as e:
        load_sae(folder)
    assert "sae_weights.safetensors" in _one_line(e.value)
