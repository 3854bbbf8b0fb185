"""Parity of the JAX forward pass with transformers (torch, CPU, eager attention).

Each family is built from a tiny random config, its state dict converted with
`params_from_hf` and its config with `config_from_hf`; logits and the named
sites must match transformers in float32.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from snmf_jax.models import (ForwardOutput, as_arrays, config_from_hf, forward,
                             init_params, params_from_hf)

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

VOCAB = 128
T = 20
TOL = 1e-4


def _randomize(model, family: str, seed: int) -> None:
    """Replaces transformers' tiny default init with O(1)-scale weights so that
    every component (norm scales, biases, rope) visibly moves the logits."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if p.ndim == 1 and name.endswith("bias"):
                p.copy_(0.05 * noise)
            elif p.ndim == 1:  # norm weights (Gemma: zero-centred, others: ones)
                p.add_(0.2 * noise)
            elif "embed" in name or "wte" in name or "wpe" in name:
                std = 1 / math.sqrt(p.shape[1]) if family.startswith("gemma") else 1.0
                p.copy_(std * noise)
            else:
                # nn.Linear is (out, in); GPT-2's Conv1D is (in, out).
                fan_in = p.shape[0] if family == "gpt2" else p.shape[1]
                p.copy_(noise / math.sqrt(fan_in))


def _hf_config(family: str):
    common = dict(vocab_size=VOCAB, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    if family == "gpt2":
        return transformers.GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=64,
                                       **common)
    if family == "llama":
        return transformers.LlamaConfig(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, head_dim=8,
            max_position_embeddings=64, tie_word_embeddings=False, rms_norm_eps=1e-5,
            # original_max_position 16 puts frequencies in all three llama3 bands.
            rope_parameters={"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0,
                             "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                             "original_max_position_embeddings": 16},
            **common)
    if family == "gemma2":
        return transformers.Gemma2Config(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, head_dim=8,
            max_position_embeddings=64, query_pre_attn_scalar=12, sliding_window=5,
            attn_logit_softcapping=2.0, final_logit_softcapping=3.0, **common)
    if family == "gemma3":
        return transformers.Gemma3TextConfig(
            hidden_size=32, intermediate_size=64, num_hidden_layers=3,
            num_attention_heads=4, num_key_value_heads=2, head_dim=8,
            max_position_embeddings=64, query_pre_attn_scalar=12, sliding_window=5,
            layer_types=["sliding_attention", "full_attention", "sliding_attention"],
            rope_theta=10000.0, rope_local_base_freq=100.0, **common)
    raise ValueError(family)


def _hf_model(family: str, seed: int = 0):
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(
        _hf_config(family), attn_implementation="eager")
    _randomize(model, family, seed)
    return model.eval()


def _hf_modules(model, family: str):
    """Per layer: (decoder layer, down projection, module whose output is mlp_out)."""
    if family == "gpt2":
        return [(blk, blk.mlp.c_proj, blk.mlp) for blk in model.transformer.h]
    out = []
    for layer in model.model.layers:
        mlp_out = layer.post_feedforward_layernorm if family.startswith("gemma") else layer.mlp
        out.append((layer, layer.mlp.down_proj, mlp_out))
    return out


def _hf_run(model, family, tokens):
    """Logits and per-layer site activations from transformers."""
    sites, hooks = {}, []
    for i, (layer, down, mlp_out) in enumerate(_hf_modules(model, family)):
        hooks.append(down.register_forward_pre_hook(
            lambda m, args, i=i: sites.__setitem__((i, "mlp_hidden"), args[0].numpy())))
        hooks.append(mlp_out.register_forward_hook(
            lambda m, args, out, i=i: sites.__setitem__((i, "mlp_out"), out.numpy())))
        hooks.append(layer.register_forward_hook(
            lambda m, args, out, i=i: sites.__setitem__(
                (i, "resid_post"), (out[0] if isinstance(out, tuple) else out).numpy())))
    try:
        with torch.no_grad():
            logits = model(torch.as_tensor(np.asarray(tokens), dtype=torch.long)).logits.numpy()
    finally:
        for h in hooks:
            h.remove()
    return logits, sites


def _convert(model):
    config = config_from_hf(model.config.to_dict())
    state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    return config, params_from_hf(config, state, jnp.float32)


# LLVM -O0 compiles the tiny test programs ~3x faster; the HLO (and so the
# float semantics, which XLA keeps strict) is the same as in production.
FAST_COMPILE = {"xla_backend_optimization_level": 0}
_FORWARD = jax.jit(forward, static_argnames=("config", "capture"),
                   compiler_options=FAST_COMPILE)
FAMILIES = ["gpt2", "llama", "gemma2", "gemma3"]


def _all_sites(config):
    return tuple((layer, site) for layer in range(config.n_layers)
                 for site in ("mlp_hidden", "mlp_out", "resid_post"))


@pytest.fixture(scope="module", params=FAMILIES)
def converted(request):
    family = request.param
    model = _hf_model(family)
    config, params = _convert(model)
    tokens = np.random.default_rng(0).integers(3, VOCAB, size=(2, T))
    hf_logits, hf_sites = _hf_run(model, family, tokens)
    no_window = None
    if config.layer_types:
        # Reference without the window, to show the parity test exercises it.
        model.config.sliding_window = 10 * T
        no_window = _hf_run(model, family, tokens)[0]
    return family, config, params, tokens, hf_logits, hf_sites, no_window


def test_config_from_hf_reads_family_specifics(converted):
    family, config, *_ = converted
    assert config.family == family
    if family == "llama":
        assert config.rope_scaling is not None and config.rope_scaling.rope_type == "llama3"
        assert config.rope_scaling.original_max_position == 16
        assert (config.n_heads, config.n_kv_heads) == (4, 2)
        assert not config.tie_embeddings
    if family == "gemma2":
        assert config.layer_types == ("sliding", "full")
        assert (config.attn_logit_softcap, config.final_logit_softcap) == (2.0, 3.0)
        assert config.query_pre_attn_scalar == 12
    if family == "gemma3":
        assert config.layer_types == ("sliding", "full", "sliding")
        assert (config.rope_theta, config.rope_local_theta) == (10000.0, 100.0)
        assert config.attn_logit_softcap is None
    if family == "gpt2":
        assert config.mlp_activation == "gelu_tanh" and config.tie_embeddings


def test_logits_and_sites_match_transformers(converted):
    family, config, params, tokens, hf_logits, hf_sites, _ = converted
    capture = _all_sites(config)
    out = _FORWARD(params, jnp.asarray(tokens), config=config, capture=capture)
    assert isinstance(out, ForwardOutput) and out.cache is None
    assert out.logits.dtype == jnp.float32 and out.logits.shape == (2, T, VOCAB)
    # The weights are O(1), so a wrong component moves logits by far more than TOL.
    assert np.abs(hf_logits).max() > 0.5
    np.testing.assert_allclose(np.asarray(out.logits), hf_logits, atol=TOL, rtol=0)
    for key in capture:
        ours, ref = np.asarray(out.captures[key]), hf_sites[key]
        scale = max(1.0, float(np.abs(ref).max()))
        np.testing.assert_allclose(ours, ref, atol=TOL * scale, rtol=0,
                                   err_msg=f"{family} site {key}")


def test_padding_matches_unpadded_rows(converted):
    """Row 0 left-padded, row 1 padded on both sides: the real tokens give the
    unpadded logits and sites (positions come from the mask)."""
    family, config, params, tokens, *_ = converted
    capture = _all_sites(config)
    ref = _FORWARD(params, jnp.asarray(tokens), config=config, capture=capture)
    pad = 5
    toks = np.zeros((2, T + pad), np.int32)
    mask = np.zeros((2, T + pad), np.int32)
    where = [slice(pad, T + pad), slice(2, T + 2)]
    for i, sl in enumerate(where):
        toks[i, sl], mask[i, sl] = tokens[i], 1
    out = _FORWARD(params, jnp.asarray(toks), config=config,
                   attention_mask=jnp.asarray(mask), capture=capture)
    for i, sl in enumerate(where):
        np.testing.assert_allclose(np.asarray(out.logits[i, sl]), np.asarray(ref.logits[i]),
                                   atol=TOL, rtol=0, err_msg=f"{family} row {i}")
        for key in capture:
            np.testing.assert_allclose(np.asarray(out.captures[key][i, sl]),
                                       np.asarray(ref.captures[key][i]), atol=TOL, rtol=0,
                                       err_msg=f"{family} row {i} site {key}")


def test_sliding_window_changes_logits_beyond_the_window(converted):
    """Guards the parity test: without the window transformers' logits differ
    past it, so matching them means the sliding mask is right."""
    family, config, params, tokens, hf_logits, _, no_window = converted
    if no_window is None:
        pytest.skip("no sliding layers")
    w = config.sliding_window
    np.testing.assert_allclose(no_window[:, :w], hf_logits[:, :w], atol=TOL)
    assert np.abs(no_window[:, w:] - hf_logits[:, w:]).max() > 100 * TOL


def test_init_params_matches_converted_structure(converted):
    family, config, params, *_ = converted
    ours = as_arrays(init_params(config, jax.random.key(0)))
    assert (jax.tree.structure(ours) == jax.tree.structure(params))
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(params)):
        assert a.shape == b.shape and a.dtype == b.dtype


def test_params_from_hf_names_missing_weight():
    model = _hf_model("llama")
    config = config_from_hf(model.config.to_dict())
    state = {k: v.numpy() for k, v in model.state_dict().items() if "lm_head" not in k}
    with pytest.raises(ValueError, match="lm_head"):
        params_from_hf(config, state)
    with pytest.raises(ValueError, match="embed_tokens"):
        params_from_hf(config, {"foo": np.zeros(3)})


def test_config_from_hf_legacy_keys_and_errors():
    legacy = {"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2,
              "num_attention_heads": 4, "intermediate_size": 128, "vocab_size": 100,
              "rope_theta": 500000.0,
              "rope_scaling": {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                               "high_freq_factor": 4.0,
                               "original_max_position_embeddings": 8192}}
    config = config_from_hf(legacy)
    assert config.rope_theta == 500000.0 and config.rope_scaling.factor == 32.0
    assert config.n_kv_heads == 4 and config.head_dim == 16
    gemma3 = config_from_hf({"model_type": "gemma3", "text_config": {
        "hidden_size": 64, "num_hidden_layers": 7, "num_attention_heads": 4,
        "num_key_value_heads": 1, "head_dim": 16, "intermediate_size": 128,
        "vocab_size": 100, "sliding_window": 512, "rope_local_base_freq": 10000.0,
        "rope_theta": 1000000.0, "rope_scaling": {"rope_type": "linear", "factor": 8.0}}})
    assert gemma3.layer_types == ("sliding",) * 5 + ("full", "sliding")
    assert gemma3.rope_scaling.rope_type == "linear"
    with pytest.raises(ValueError, match="model_type"):
        config_from_hf({"model_type": "bert"})
    with pytest.raises(ValueError, match="rope scaling type 'yarn'"):
        config_from_hf({**legacy, "rope_scaling": {"rope_type": "yarn", "factor": 2.0}})
