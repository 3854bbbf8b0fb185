"""Hostile inputs to models/: the forward, loaders (HF folders), configs, tokenizer,
steering directions and calibration, and export arguments.

Each case is an error a user sees: one line naming the argument or file.
"""

import json
import math

import numpy as np
import pytest

from snmf_jax import _io
from snmf_jax.activations import export_activations
from snmf_jax.models import Model, load_model
from snmf_jax.models._hf import config_from_hf
from snmf_jax.models._patch import SitePatch
from snmf_jax.models._transformer import forward
from snmf_jax.testing import CharTokenizer, tiny_model, write_word_level_json

V = 64


@pytest.fixture(scope="module")
def tiny():
    model = tiny_model(vocab_size=V)  # d_mlp 48
    return model.config, model.params


def _one_line(e):
    assert "\n" not in str(e), str(e)
    return str(e)


# -- the forward ------------------------------------------------------------------

@pytest.mark.parametrize("bad", [V, V + 100, -1])
def test_forward_refuses_token_ids_outside_the_vocabulary(tiny, bad):
    cfg, params = tiny
    with pytest.raises(ValueError, match="token"):
        forward(params, np.array([[2, bad, 3]], np.int32), config=cfg)


def test_forward_refuses_sequences_longer_than_max_position(tiny):
    cfg, params = tiny
    with pytest.raises(ValueError, match="max_position"):
        forward(params, np.full((1, 65), 2, np.int32), config=cfg)


def test_forward_refuses_a_nan_patch(tiny):
    cfg, params = tiny
    sp = SitePatch(vector=np.full(48, np.nan, np.float32), scale=np.float32(1.0),
                   replace=np.float32(0.0), positions=None)
    with pytest.raises(ValueError, match="finite"):
        forward(params, np.array([[2, 3]], np.int32), config=cfg, patch={(0, "mlp_hidden"): sp})


def test_model_forward_checks_values_before_its_jit(tiny):
    """Model.forward jits `forward`, where values are traced: it checks them first."""
    cfg, params = tiny
    m = Model(cfg, params, None, "tiny")
    with pytest.raises(ValueError, match=rf"tokens must be token ids in \[0, {V}\); got {V}"):
        m.forward(np.array([[2, V]], np.int32))
    sp = SitePatch(vector=np.ones(48, np.float32), scale=np.float32(np.inf),
                   replace=np.float32(0.0), positions=None)
    with pytest.raises(ValueError, match="scale must be finite") as e:
        m.forward(np.array([[2, 3]], np.int32), patch={(0, "mlp_hidden"): sp})
    _one_line(e.value)
    from snmf_jax.models import init_cache
    cache = m.forward(np.full((1, 60), 2, np.int32), cache=init_cache(cfg, 1, 70)).cache
    with pytest.raises(ValueError, match="after 60 cached"):
        m.forward(np.full((1, 5), 2, np.int32), cache=cache)


def test_forward_refuses_float_tokens(tiny):
    cfg, params = tiny
    with pytest.raises(ValueError, match="integers"):
        forward(params, np.array([[2.0, 3.0]], np.float32), config=cfg)


# -- steering directions and calibration (steer/_directions.py, _calibrate.py) -------

def test_feature_directions_refuse_nan_features(tiny):
    from snmf_jax import steer as st
    cfg, params = tiny
    with pytest.raises(ValueError, match="NaN|finite"):
        st.feature_directions(Model(cfg, params, None, "tiny"), np.full((2, 48), np.nan),
                              layer=0)


@pytest.mark.parametrize("kw", [dict(rtol=math.nan), dict(rtol=-0.5)])
def test_calibrate_refuses_bad_tolerances(tiny, kw):
    from snmf_jax import steer as st

    cfg, params = tiny
    m = Model(cfg, params, CharTokenizer(), "tiny")
    d = st.Directions.from_vectors(np.ones((1, 48)), layer=0, site="mlp_hidden")
    with pytest.raises(ValueError, match="rtol"):
        st.calibrate(m, d, progress=False, **kw)


# -- configs -----------------------------------------------------------------------

LLAMA = {"model_type": "llama", "vocab_size": V, "hidden_size": 32, "num_hidden_layers": 2,
         "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 48,
         "max_position_embeddings": 64, "rms_norm_eps": 1e-5, "rope_theta": 10000.0}


def test_zero_attention_heads_is_a_named_error():
    with pytest.raises(ValueError, match="num_attention_heads"):
        config_from_hf({**LLAMA, "num_attention_heads": 0})


@pytest.mark.parametrize("edit", [dict(hidden_size=-32), dict(vocab_size=0),
                                  dict(rope_theta=float("nan")), dict(rms_norm_eps=-1.0),
                                  dict(num_hidden_layers=0)])
def test_config_values_read_from_files_are_range_checked(edit):
    with pytest.raises(ValueError):
        config_from_hf({**LLAMA, **edit})


# -- HF folders -----------------------------------------------------------------

def _hf_folder(path, tiny, index=None):
    cfg, params = tiny
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(LLAMA))
    if index is not None:
        (path / "model.safetensors.index.json").write_text(index)
    return path


@pytest.mark.parametrize("name", ["../outside.safetensors", "ABSOLUTE",
                                  "sub/../../outside.safetensors"])
def test_hf_index_paths_are_confined_to_the_folder(tmp_path, tiny, name):
    """Each name resolves to an existing file outside the folder (read today)."""
    outside = tmp_path / "outside.safetensors"
    _io.save_arrays(outside, {"model.embed_tokens.weight": np.ones((V, 32), np.float32)})
    name = str(outside) if name == "ABSOLUTE" else name
    folder = _hf_folder(tmp_path / "m", tiny,
                        json.dumps({"weight_map": {"model.embed_tokens.weight": name}}))
    (folder / "sub").mkdir()
    with pytest.raises(ValueError, match="model.safetensors.index.json") as e:
        load_model(folder, tokenizer=False, progress=False)
    assert name in _one_line(e.value)


@pytest.mark.parametrize("index", ["{broken", "[]", '{"no_weight_map": 1}',
                                   '{"weight_map": [1, 2]}'])
def test_hf_index_that_is_not_valid_names_the_file(tmp_path, tiny, index):
    folder = _hf_folder(tmp_path / "m", tiny, index)
    with pytest.raises(ValueError, match="model.safetensors.index.json") as e:
        load_model(folder, tokenizer=False, progress=False)
    _one_line(e.value)


@pytest.mark.parametrize("cut", [4, 20, -3])
def test_truncated_hf_weights_name_the_file(tmp_path, tiny, cut):
    folder = _hf_folder(tmp_path / "m", tiny)
    f = folder / "model.safetensors"
    _io.save_arrays(f, {"model.embed_tokens.weight": np.ones((V, 32), np.float32)})
    f.write_bytes(f.read_bytes()[:cut])
    with pytest.raises(ValueError) as e:
        load_model(folder, tokenizer=False, progress=False)
    assert str(f) in _one_line(e.value)


def test_hf_config_not_json_names_the_file(tmp_path, tiny):
    folder = _hf_folder(tmp_path / "m", tiny)
    (folder / "config.json").write_text("{nope")
    with pytest.raises(ValueError, match="config.json") as e:
        load_model(folder, tokenizer=False, progress=False)
    _one_line(e.value)


# -- export arguments --------------------------------------------------------------

@pytest.mark.parametrize("kw, match", [
    (dict(batch_size=0), "batch_size"), (dict(chunk_rows=0), "chunk_rows"),
    (dict(min_bucket=0), "min_bucket"), (dict(site="attn"), "site"),
    (dict(dtype="int8"), "dtype"), (dict(layers=[5]), "layer"), (dict(layers=[-1]), "layer"),
    (dict(layers=[0, 0]), "duplicates"),
])
def test_export_refuses_bad_arguments(tmp_path, tiny, kw, match):
    cfg, params = tiny
    model = Model(cfg, params, CharTokenizer(), "tiny")
    kw = {"layers": [0], **kw}
    with pytest.raises(ValueError, match=match) as e:
        export_activations(model, ["abc"], kw.pop("layers"), out=tmp_path / "s",
                           progress=False, **kw)
    _one_line(e.value)
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("kw", [dict(max_length=0), dict(max_length=-5),
                                dict(batch_size=2.5), dict(chunk_rows=True)])
def test_export_refuses_bad_lengths_and_counts(tmp_path, tiny, kw):
    cfg, params = tiny
    model = Model(cfg, params, CharTokenizer(), "tiny")
    name = next(iter(kw))
    with pytest.raises(ValueError, match=name):
        export_activations(model, ["abc"], [0], out=tmp_path / "s", progress=False, **kw)


# -- tokenizer -------------------------------------------------------------------

@pytest.fixture
def tok_dir(tmp_path):
    write_word_level_json(tmp_path)
    return tmp_path


def test_tokenizer_file_errors_name_the_file(tok_dir):
    from snmf_jax.models._tokenizer import Tokenizer
    for text in ("{broken", ""):
        (tok_dir / "bad.json").write_text(text)
        with pytest.raises(ValueError, match="bad.json") as e:
            Tokenizer.from_file(tok_dir / "bad.json")
        _one_line(e.value)
    tok = Tokenizer.from_file(tok_dir / "tokenizer.json")
    with pytest.raises(TypeError, match="str"):
        tok.encode(None)
    with pytest.raises(IndexError, match="99"):
        tok.id_to_token(99)


@pytest.mark.parametrize("bad", [99, -1])
def test_tokenizer_decode_refuses_ids_outside_the_vocabulary(tok_dir, bad):
    from snmf_jax.models._tokenizer import Tokenizer
    tok = Tokenizer.from_file(tok_dir / "tokenizer.json")
    with pytest.raises(ValueError, match="token"):
        tok.decode([2, bad])


def test_tokenizer_config_that_is_not_json_names_the_file(tok_dir):
    from snmf_jax.models._tokenizer import Tokenizer
    (tok_dir / "tokenizer_config.json").write_text("{oops")
    with pytest.raises(ValueError, match="tokenizer_config.json"):
        Tokenizer.from_file(tok_dir / "tokenizer.json")
