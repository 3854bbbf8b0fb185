"""Conversion of Hugging Face transformers configs (the state dicts: `_hf_params.py`).

Only plain dicts and numpy arrays cross this boundary: transformers itself is
not imported (it is a test-time reference, not a dependency).
"""

from __future__ import annotations

from typing import Any, Mapping


from snmf_jax import _checks
from snmf_jax.models._config import ModelConfig, RopeScaling

# model_type -> the family preset its flags come from.
_FAMILIES = {"gpt2": "gpt2", "llama": "llama", "gemma2": "gemma2", "gemma3_text": "gemma3"}
# transformers' defaults for keys a config.json may leave out.
_DEFAULTS = {
    "llama": dict(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32,
                  head_dim=None, max_position_embeddings=2048, vocab_size=32000,
                  intermediate_size=11008, bos_token_id=1, eos_token_id=2, pad_token_id=None,
                  tie_word_embeddings=False, hidden_act="silu"),
    "gemma2": dict(hidden_size=2304, num_hidden_layers=26, num_attention_heads=8,
                   num_key_value_heads=4, head_dim=256, max_position_embeddings=8192,
                   vocab_size=256000, intermediate_size=9216, bos_token_id=2, eos_token_id=1,
                   pad_token_id=0, tie_word_embeddings=True, hidden_act="gelu_pytorch_tanh",
                   sliding_window_pattern=2, rope_theta=10000.0, rope_local_base_freq=None,
                   attn_logit_softcapping=50.0, final_logit_softcapping=30.0),
}
_DEFAULTS["gemma3_text"] = dict(_DEFAULTS["gemma2"], vocab_size=262208,
                                max_position_embeddings=131072, sliding_window_pattern=6,
                                rope_theta=1_000_000.0, rope_local_base_freq=10_000.0,
                                attn_logit_softcapping=None, final_logit_softcapping=None)
_ACTIVATIONS = {"silu": "silu", "swish": "silu", "gelu_new": "gelu_tanh",
                "gelu_pytorch_tanh": "gelu_tanh", "gelu_fast": "gelu_tanh", "gelu": "gelu"}
# Keys that change nothing in the forward (bookkeeping, training, generation
# defaults of transformers 4 and 5, and a few tools' own keys).
_INERT = frozenset("""
    _name_or_path _commit_hash _attn_implementation_autoset architectures model_type
    transformers_version torch_dtype dtype use_cache return_dict output_hidden_states
    output_attentions torchscript use_bfloat16 tf_legacy_loss pruned_heads
    chunk_size_feed_forward is_encoder_decoder is_decoder cross_attention_hidden_size
    tie_encoder_decoder max_length min_length do_sample early_stopping num_beams
    num_beam_groups diversity_penalty temperature top_k top_p typical_p repetition_penalty
    length_penalty no_repeat_ngram_size encoder_no_repeat_ngram_size bad_words_ids
    num_return_sequences output_scores return_dict_in_generate forced_bos_token_id
    forced_eos_token_id remove_invalid_values exponential_decay_length_penalty
    suppress_tokens begin_suppress_tokens finetuning_task id2label label2id tokenizer_class
    prefix sep_token_id decoder_start_token_id task_specific_params problem_type
    initializer_range attention_dropout cache_implementation transformers.js_config
    is_llama_config pretraining_tp
""".split())
# Keys each model_type's converter reads (beyond the inert ones); any other
# key is refused by name: a setting we do not implement is not dropped silently.
_READ_COMMON = {"bos_token_id", "eos_token_id", "pad_token_id", "vocab_size",
                "tie_word_embeddings"}
_READ_LLAMA = _READ_COMMON | {
    "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
    "head_dim", "intermediate_size", "max_position_embeddings", "rms_norm_eps", "hidden_act",
    "attention_bias", "mlp_bias", "rope_theta", "rope_scaling", "rope_parameters",
    "rope_interleaved"}
_READ_GEMMA = _READ_LLAMA | {
    "hidden_activation", "query_pre_attn_scalar", "attn_logit_softcapping",
    "final_logit_softcapping", "sliding_window", "layer_types", "sliding_window_pattern",
    "_sliding_window_pattern", "rope_local_base_freq", "use_bidirectional_attention"}
_READ = {
    "gpt2": _READ_COMMON | {
        "n_embd", "n_head", "n_layer", "n_inner", "n_positions", "n_ctx",
        "layer_norm_epsilon", "activation_function", "scale_attn_weights",
        "scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn", "add_cross_attention",
        "attn_pdrop", "embd_pdrop", "resid_pdrop", "summary_activation",
        "summary_first_dropout", "summary_proj_to_labels", "summary_type", "summary_use_proj"},
    "llama": _READ_LLAMA,
    "gemma2": _READ_GEMMA,
    "gemma3_text": _READ_GEMMA,
}
# Settings we know and do not implement: refused when they differ from this value.
_UNSUPPORTED = {"scale_attn_by_inverse_layer_idx": False, "add_cross_attention": False,
                "mlp_bias": False, "rope_interleaved": False,
                "use_bidirectional_attention": False}


def _activation(name: str) -> str:
    if name not in _ACTIVATIONS:
        raise ValueError(
            f"unsupported hidden activation {name!r}; expected one of "
            f"{sorted(_ACTIVATIONS)}")
    return _ACTIVATIONS[name]


def _eos(value) -> tuple[int, ...]:
    """eos_token_id: None, one id or a list of ids."""
    return () if value is None else (value,) if isinstance(value, int) else tuple(map(int, value))


def _heads(cfg: Mapping[str, Any], key: str, default: int) -> int:
    """A head count from config.json, checked before anything divides by it."""
    return _checks.integer(f"config_dict[{key!r}]", cfg.get(key, default), lo=1)


def _rope_scaling(params: Mapping[str, Any] | None, max_position: int) -> RopeScaling | None:
    """A RopeScaling from a transformers rope dict, or None for "default"."""
    if not params:
        return None
    kind = params.get("rope_type", params.get("type", "default"))
    if kind == "default":
        return None
    if kind == "llama3":
        return RopeScaling(
            factor=float(params["factor"]),
            low_freq_factor=float(params.get("low_freq_factor", 1.0)),
            high_freq_factor=float(params.get("high_freq_factor", 4.0)),
            original_max_position=int(params.get("original_max_position_embeddings",
                                                 max_position)),
            rope_type="llama3")
    if kind == "linear":
        return RopeScaling(factor=float(params["factor"]), rope_type="linear")
    raise ValueError(
        f"unsupported rope scaling type {kind!r}; expected 'default', 'llama3' "
        f"or 'linear'")


def _rope(cfg: Mapping[str, Any], layer_type: str | None, default_theta: float,
          legacy_theta_key: str, max_position: int, use_legacy_scaling: bool):
    """(theta, scaling) from either rope_parameters (transformers >= 5) or the
    legacy rope_theta / rope_scaling keys of older config.json files."""
    params = cfg.get("rope_parameters") or {}
    if layer_type is not None and layer_type in params:
        params = params[layer_type] or {}
    elif layer_type is not None and ("full_attention" in params
                                     or "sliding_attention" in params):
        params = {}
    theta = float(params.get("rope_theta", cfg.get(legacy_theta_key, default_theta)))
    scaling = _rope_scaling(params, max_position)
    if scaling is None and use_legacy_scaling:
        scaling = _rope_scaling(cfg.get("rope_scaling"), max_position)
    return theta, scaling


def _check_keys(cfg: Mapping[str, Any], model_type: str) -> None:
    """Refuses keys this converter does not know and known settings it does not implement."""
    for key, value in cfg.items():
        if key not in _INERT and key not in _READ[model_type]:
            raise ValueError(f"config_dict[{key!r}] is a setting this converter does not "
                             f"know for model_type {model_type!r}; refusing to guess its "
                             f"effect")
        if key in _UNSUPPORTED and value not in (None, _UNSUPPORTED[key]):
            raise ValueError(f"config_dict[{key!r}]={value!r} is not supported")


def _gpt2(cfg: Mapping[str, Any], common: dict) -> ModelConfig:
    d = int(cfg.get("n_embd", 768))
    n_heads = _heads(cfg, "n_head", 12)
    return ModelConfig(
        family="gpt2", vocab_size=int(cfg.get("vocab_size", 50257)), d_model=d,
        n_layers=int(cfg.get("n_layer", 12)), n_heads=n_heads, n_kv_heads=n_heads,
        head_dim=d // n_heads, d_mlp=int(cfg.get("n_inner") or 4 * d),
        max_position=int(cfg.get("n_positions", 1024)),
        norm_eps=float(cfg.get("layer_norm_epsilon", 1e-5)),
        tie_embeddings=bool(cfg.get("tie_word_embeddings", True)),
        # scale_attn_weights=False means unscaled scores: scalar**-0.5 = 1.
        query_pre_attn_scalar=None if cfg.get("scale_attn_weights", True) else 1.0,
        activation=_activation(cfg.get("activation_function", "gelu_new")),
        **{**common, "bos_token_id": cfg.get("bos_token_id", 50256),
           "eos_token_ids": _eos(cfg.get("eos_token_id", 50256))})


def _gemma(cfg: Mapping[str, Any], model_type: str, n_layers: int, max_position: int) -> dict:
    """Gemma 2 / 3's settings: sliding layers, query scaling, soft-caps, two rope bases."""
    dflt = _DEFAULTS[model_type]
    n_pattern = dflt["sliding_window_pattern"]
    if model_type != "gemma2":  # transformers' Gemma 2 alternates, whatever the key says
        n_pattern = int(cfg.get("sliding_window_pattern",
                                cfg.get("_sliding_window_pattern", n_pattern)))
    layer_types = cfg.get("layer_types") or [
        "sliding_attention" if (i + 1) % n_pattern else "full_attention"
        for i in range(n_layers)]
    layer_types = tuple("sliding" if t == "sliding_attention" else "full" for t in layer_types)
    theta, scaling = _rope(cfg, "full_attention", dflt["rope_theta"], "rope_theta",
                           max_position, True)
    local_theta = theta
    if dflt["rope_local_base_freq"] is not None:  # Gemma 3: its own base on sliding layers
        local_theta, local_scaling = _rope(cfg, "sliding_attention",
                                           dflt["rope_local_base_freq"],
                                           "rope_local_base_freq", max_position, False)
        if local_scaling is not None:
            raise ValueError("rope scaling of Gemma 3 sliding layers is not supported")
    # transformers' Gemma 3 never soft-caps attention scores, whatever the key says.
    attn_cap = (cfg.get("attn_logit_softcapping", dflt["attn_logit_softcapping"])
                if dflt["attn_logit_softcapping"] is not None else None)
    final_cap = cfg.get("final_logit_softcapping", dflt["final_logit_softcapping"])
    window = cfg.get("sliding_window", 4096) if "sliding" in layer_types else None
    return dict(
        rope_theta=theta, rope_local_theta=local_theta, rope_scaling=scaling,
        query_pre_attn_scalar=float(cfg.get("query_pre_attn_scalar", 256)),
        attn_logit_softcap=None if attn_cap is None else float(attn_cap),
        final_logit_softcap=None if final_cap is None else float(final_cap),
        sliding_window=None if window is None else int(window), layer_types=layer_types,
        activation=_activation(cfg.get("hidden_activation",
                                       cfg.get("hidden_act", dflt["hidden_act"]))))


def config_from_hf(config_dict: Mapping[str, Any]) -> ModelConfig:
    """A ModelConfig from a transformers config.json dict.

    Supports GPT-2, Llama (2, 3, 3.1 with "llama3" rope scaling; SmolLM2),
    Gemma 2 and Gemma 3 (text model; a multimodal config's `text_config`
    is used). The model_type names the family preset (its flags); missing
    keys take transformers' defaults for the model type. A key this
    converter does not know is an error naming the key.

    Args:
      config_dict: the parsed config.json.

    Returns:
      The ModelConfig.

    Raises:
      ValueError: an unsupported model_type, an unknown key, a setting we do
        not implement, or an out-of-range value.
    """
    cfg = dict(config_dict)
    model_type = cfg.get("model_type")
    if model_type == "gemma3" and "text_config" in cfg:
        text = dict(cfg["text_config"] or {})
        text.setdefault("model_type", "gemma3_text")
        cfg = text
        model_type = "gemma3_text"
    if model_type == "gemma3":
        model_type = cfg["model_type"] = "gemma3_text"  # a text-only config under the old name
    if model_type not in _FAMILIES:
        raise ValueError(
            f"config_dict['model_type'] must be one of {sorted(_FAMILIES) + ['gemma3']}; "
            f"got {model_type!r}")
    _check_keys(cfg, model_type)
    common = dict(bos_token_id=cfg.get("bos_token_id"), eos_token_ids=_eos(cfg.get("eos_token_id")),
                  pad_token_id=cfg.get("pad_token_id"))
    if model_type == "gpt2":
        return _gpt2(cfg, common)

    dflt = _DEFAULTS[model_type]
    d = int(cfg.get("hidden_size", dflt["hidden_size"]))
    n_layers = int(cfg.get("num_hidden_layers", dflt["num_hidden_layers"]))
    n_heads = _heads(cfg, "num_attention_heads", dflt["num_attention_heads"])
    n_kv = (_heads(cfg, "num_key_value_heads", 0) if cfg.get("num_key_value_heads") is not None
            else dflt.get("num_key_value_heads", n_heads))
    max_position = int(cfg.get("max_position_embeddings", dflt["max_position_embeddings"]))
    arch = dict(
        family=_FAMILIES[model_type],
        vocab_size=int(cfg.get("vocab_size", dflt["vocab_size"])),
        d_model=d, n_layers=n_layers, n_heads=n_heads, n_kv_heads=int(n_kv),
        head_dim=int(cfg.get("head_dim") or dflt["head_dim"] or d // n_heads),
        d_mlp=int(cfg.get("intermediate_size", dflt["intermediate_size"])),
        max_position=max_position, norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
        tie_embeddings=bool(cfg.get("tie_word_embeddings", dflt["tie_word_embeddings"])),
        qkv_bias=bool(cfg.get("attention_bias", False)),
        **{**common, "bos_token_id": cfg.get("bos_token_id", dflt["bos_token_id"]),
           "eos_token_ids": _eos(cfg.get("eos_token_id", dflt["eos_token_id"])),
           "pad_token_id": cfg.get("pad_token_id", dflt["pad_token_id"])})
    if model_type == "llama":
        theta, scaling = _rope(cfg, None, 10000.0, "rope_theta", max_position, True)
        return ModelConfig(**arch, rope_theta=theta, rope_local_theta=theta,
                           rope_scaling=scaling,
                           activation=_activation(cfg.get("hidden_act", dflt["hidden_act"])))
    return ModelConfig(**arch, **_gemma(cfg, model_type, n_layers, max_position))
