"""Conversion of Hugging Face transformers configs and state dicts.

Only plain dicts and numpy arrays cross this boundary: transformers itself is
not imported (it is a test-time reference, not a dependency).
"""

from __future__ import annotations

from typing import Any, Mapping

import jax.numpy as jnp
import numpy as np

from snmf_jax import _checks
from snmf_jax.models._config import ModelConfig, RopeScaling
from snmf_jax.models._modules import check_layout

_FAMILIES = {
    "gpt2": "gpt2",
    "llama": "llama",
    "gemma2": "gemma2",
    "gemma3": "gemma3",
    "gemma3_text": "gemma3",
}
_ACTIVATIONS = {
    "silu": "silu", "swish": "silu",
    "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu_fast": "gelu_tanh",
    "gelu": "gelu",
}


def _activation(name: str) -> str:
    if name not in _ACTIVATIONS:
        raise ValueError(
            f"unsupported hidden activation {name!r}; expected one of "
            f"{sorted(_ACTIVATIONS)}")
    return _ACTIVATIONS[name]


def _eos(value) -> tuple[int, ...]:
    if value is None:
        return ()
    if isinstance(value, int):
        return (value,)
    return tuple(int(v) for v in value)


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


def config_from_hf(config_dict: Mapping[str, Any]) -> ModelConfig:
    """A ModelConfig from a transformers config.json dict.

    Supports GPT-2, Llama (2, 3, 3.1 with "llama3" rope scaling; SmolLM2),
    Gemma 2 and Gemma 3 (text model; a multimodal config's `text_config`
    is used). Missing keys take transformers' defaults for the model type.

    Args:
      config_dict: the parsed config.json.

    Returns:
      The ModelConfig.
    """
    cfg = dict(config_dict)
    model_type = cfg.get("model_type")
    if model_type == "gemma3" and "text_config" in cfg:
        text = dict(cfg["text_config"] or {})
        text.setdefault("model_type", "gemma3_text")
        cfg = text
        model_type = "gemma3_text"
    if model_type not in _FAMILIES:
        raise ValueError(
            f"config_dict['model_type'] must be one of {sorted(_FAMILIES)}; got "
            f"{model_type!r}")
    family = _FAMILIES[model_type]
    common = dict(
        bos_token_id=cfg.get("bos_token_id"),
        eos_token_ids=_eos(cfg.get("eos_token_id")),
        pad_token_id=cfg.get("pad_token_id"),
    )
    if family != "gpt2":
        common["qkv_bias"] = bool(cfg.get("attention_bias", False))

    if family == "gpt2":
        if cfg.get("scale_attn_by_inverse_layer_idx", False):
            raise ValueError("GPT-2 scale_attn_by_inverse_layer_idx=True is not supported")
        d = int(cfg.get("n_embd", 768))
        n_heads = _heads(cfg, "n_head", 12)
        return ModelConfig(
            family="gpt2",
            vocab_size=int(cfg.get("vocab_size", 50257)),
            d_model=d,
            n_layers=int(cfg.get("n_layer", 12)),
            n_heads=n_heads,
            n_kv_heads=n_heads,
            head_dim=d // n_heads,
            d_mlp=int(cfg.get("n_inner") or 4 * d),
            max_position=int(cfg.get("n_positions", 1024)),
            norm_eps=float(cfg.get("layer_norm_epsilon", 1e-5)),
            tie_embeddings=bool(cfg.get("tie_word_embeddings", True)),
            # scale_attn_weights=False means unscaled scores: scalar**-0.5 = 1.
            query_pre_attn_scalar=None if cfg.get("scale_attn_weights", True) else 1.0,
            activation=_activation(cfg.get("activation_function", "gelu_new")),
            **{**common, "bos_token_id": cfg.get("bos_token_id", 50256),
               "eos_token_ids": _eos(cfg.get("eos_token_id", 50256))},
        )

    d = int(cfg.get("hidden_size", {"llama": 4096, "gemma2": 2304, "gemma3": 2304}[family]))
    n_layers = int(cfg.get("num_hidden_layers", {"llama": 32, "gemma2": 26, "gemma3": 26}[family]))
    n_heads = _heads(cfg, "num_attention_heads",
                     {"llama": 32, "gemma2": 8, "gemma3": 8}[family])
    n_kv = (_heads(cfg, "num_key_value_heads", 0) if cfg.get("num_key_value_heads") is not None
            else (n_heads if family == "llama" else 4))
    head_dim = cfg.get("head_dim") or (d // n_heads if family == "llama" else 256)
    max_position = int(cfg.get("max_position_embeddings",
                               {"llama": 2048, "gemma2": 8192, "gemma3": 131072}[family]))
    arch = dict(
        family=family,
        vocab_size=int(cfg.get("vocab_size", {"llama": 32000, "gemma2": 256000,
                                              "gemma3": 262208}[family])),
        d_model=d, n_layers=n_layers, n_heads=n_heads, n_kv_heads=int(n_kv),
        head_dim=int(head_dim),
        d_mlp=int(cfg.get("intermediate_size", {"llama": 11008, "gemma2": 9216,
                                                "gemma3": 9216}[family])),
        max_position=max_position,
        norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
    )

    if family == "llama":
        theta, scaling = _rope(cfg, None, 10000.0, "rope_theta", max_position, True)
        return ModelConfig(
            **arch, rope_theta=theta, rope_local_theta=theta, rope_scaling=scaling,
            tie_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            activation=_activation(cfg.get("hidden_act", "silu")),
            **{**common, "bos_token_id": cfg.get("bos_token_id", 1),
               "eos_token_ids": _eos(cfg.get("eos_token_id", 2))},
        )

    # Gemma 2 / 3.
    if cfg.get("use_bidirectional_attention"):
        raise ValueError("Gemma use_bidirectional_attention=True is not supported")
    n_pattern = 2 if family == "gemma2" else int(
        cfg.get("sliding_window_pattern", cfg.get("_sliding_window_pattern", 6)))
    layer_types = cfg.get("layer_types") or [
        "sliding_attention" if (i + 1) % n_pattern else "full_attention"
        for i in range(n_layers)]
    layer_types = tuple("sliding" if t == "sliding_attention" else "full" for t in layer_types)
    sliding_window = cfg.get("sliding_window", 4096)
    if family == "gemma2":
        theta, scaling = _rope(cfg, None, 10000.0, "rope_theta", max_position, True)
        local_theta, attn_softcap = theta, cfg.get("attn_logit_softcapping", 50.0)
        final_softcap = cfg.get("final_logit_softcapping", 30.0)
    else:
        theta, scaling = _rope(cfg, "full_attention", 1_000_000.0, "rope_theta",
                               max_position, True)
        local_theta, local_scaling = _rope(cfg, "sliding_attention", 10_000.0,
                                           "rope_local_base_freq", max_position, False)
        if local_scaling is not None:
            raise ValueError("rope scaling of Gemma 3 sliding layers is not supported")
        # transformers' Gemma 3 never soft-caps attention scores.
        attn_softcap = None
        final_softcap = cfg.get("final_logit_softcapping")
    if "sliding" not in layer_types:
        sliding_window = None
    return ModelConfig(
        **arch, rope_theta=theta, rope_local_theta=local_theta, rope_scaling=scaling,
        tie_embeddings=bool(cfg.get("tie_word_embeddings", True)),
        query_pre_attn_scalar=float(cfg.get("query_pre_attn_scalar", 256)),
        attn_logit_softcap=None if attn_softcap is None else float(attn_softcap),
        final_logit_softcap=None if final_softcap is None else float(final_softcap),
        sliding_window=None if sliding_window is None else int(sliding_window),
        layer_types=layer_types,
        activation=_activation(cfg.get("hidden_activation",
                                       cfg.get("hidden_act", "gelu_pytorch_tanh"))),
        **{**common, "bos_token_id": cfg.get("bos_token_id", 2),
           "eos_token_ids": _eos(cfg.get("eos_token_id", 1)),
           "pad_token_id": cfg.get("pad_token_id", 0)},
    )


class _StateDict:
    """Name lookup that ignores wrapper prefixes (model., transformer., ...)."""

    def __init__(self, state_dict: Mapping[str, Any], anchor: str):
        self._sd = state_dict
        anchors = [k for k in state_dict if k == anchor or k.endswith("." + anchor)]
        if not anchors:
            raise ValueError(
                f"state_dict has no {anchor!r} entry (with any prefix); is this a "
                f"state dict of the right model family?")
        self.prefix = min(anchors, key=len)[: -len(anchor)]

    def has(self, name: str) -> bool:
        return self.prefix + name in self._sd

    def get(self, name: str) -> np.ndarray:
        key = self.prefix + name
        if key not in self._sd:
            raise ValueError(f"state_dict is missing {key!r}")
        return np.asarray(self._sd[key], dtype=np.float32)

    def find(self, suffix: str) -> np.ndarray | None:
        keys = [k for k in self._sd if k == suffix or k.endswith("." + suffix)]
        return np.asarray(self._sd[min(keys, key=len)], np.float32) if keys else None


def params_from_hf(config: ModelConfig, state_dict: Mapping[str, Any], dtype=jnp.float32) -> dict:
    """Converts a transformers state dict into the params contract.

    nn.Linear weights (out, in) are transposed to (in, out) kernels; GPT-2's
    Conv1D weights are already (in, out) and its fused c_attn is split into
    q, k, v; Gemma's RMSNorm weights w become effective scales 1 + w;
    the unembedding is kept only for untied models.

    Args:
      config: the architecture (e.g. from `config_from_hf`).
      state_dict: name -> numpy array (any float dtype numpy can convert to
        float32, e.g. ml_dtypes bfloat16). Torch tensors: pass `.numpy()`.
      dtype: dtype of the returned leaves.

    Returns:
      The params pytree (layers stacked along a leading L axis).
    """
    n = config.n_layers
    gemma = config.family in ("gemma2", "gemma3")

    def stack(fn):
        return np.stack([fn(i) for i in range(n)])

    if config.family == "gpt2":
        sd = _StateDict(state_dict, "wte.weight")
        d = config.d_model

        def attn_part(i, part, j):
            w = sd.get(f"h.{i}.attn.c_attn.{part}")
            return w[..., j * d:(j + 1) * d]

        layers = {
            "attn_norm": {"scale": stack(lambda i: sd.get(f"h.{i}.ln_1.weight")),
                          "bias": stack(lambda i: sd.get(f"h.{i}.ln_1.bias"))},
            "mlp_norm": {"scale": stack(lambda i: sd.get(f"h.{i}.ln_2.weight")),
                         "bias": stack(lambda i: sd.get(f"h.{i}.ln_2.bias"))},
            "o": {"kernel": stack(lambda i: sd.get(f"h.{i}.attn.c_proj.weight")),
                  "bias": stack(lambda i: sd.get(f"h.{i}.attn.c_proj.bias"))},
            "up": {"kernel": stack(lambda i: sd.get(f"h.{i}.mlp.c_fc.weight")),
                   "bias": stack(lambda i: sd.get(f"h.{i}.mlp.c_fc.bias"))},
            "down": {"kernel": stack(lambda i: sd.get(f"h.{i}.mlp.c_proj.weight")),
                     "bias": stack(lambda i: sd.get(f"h.{i}.mlp.c_proj.bias"))},
        }
        for j, name in enumerate("qkv"):
            layers[name] = {
                "kernel": stack(lambda i, j=j: attn_part(i, "weight", j)),
                "bias": stack(lambda i, j=j: attn_part(i, "bias", j)),
            }
        params = {
            "embed": sd.get("wte.weight"),
            "pos_embed": sd.get("wpe.weight"),
            "layers": layers,
            "final_norm": {"scale": sd.get("ln_f.weight"), "bias": sd.get("ln_f.bias")},
        }
    else:
        sd = _StateDict(state_dict, "embed_tokens.weight")
        shift = 1.0 if gemma else 0.0

        def linear(module):
            p = {"kernel": stack(lambda i: sd.get(f"layers.{i}.{module}.weight").T)}
            if sd.has(f"layers.0.{module}.bias"):
                p["bias"] = stack(lambda i: sd.get(f"layers.{i}.{module}.bias"))
            return p

        def norm(module):
            return {"scale": stack(lambda i: sd.get(f"layers.{i}.{module}.weight") + shift)}

        layers = {
            "attn_norm": norm("input_layernorm"),
            "q": linear("self_attn.q_proj"),
            "k": linear("self_attn.k_proj"),
            "v": linear("self_attn.v_proj"),
            "o": linear("self_attn.o_proj"),
            "gate": linear("mlp.gate_proj"),
            "up": linear("mlp.up_proj"),
            "down": linear("mlp.down_proj"),
        }
        if gemma:
            layers["post_attn_norm"] = norm("post_attention_layernorm")
            layers["mlp_norm"] = norm("pre_feedforward_layernorm")
            layers["post_mlp_norm"] = norm("post_feedforward_layernorm")
        else:
            # Llama's "post_attention_layernorm" is the pre-MLP norm.
            layers["mlp_norm"] = norm("post_attention_layernorm")
        if config.family == "gemma3":
            layers["q_norm"] = norm("self_attn.q_norm")
            layers["k_norm"] = norm("self_attn.k_norm")
        params = {
            "embed": sd.get("embed_tokens.weight"),
            "layers": layers,
            "final_norm": {"scale": sd.get("norm.weight") + shift},
        }

    if not config.tie_embeddings:
        head = sd.find("lm_head.weight")
        if head is None:
            raise ValueError(
                "config.tie_embeddings is False but state_dict has no 'lm_head.weight'")
        params["unembed"] = {"kernel": head.T}
    check_layout(config, params, source="state_dict")
    return _to_jax(params, dtype)


def _to_jax(tree, dtype):
    if isinstance(tree, dict):
        return {k: _to_jax(v, dtype) for k, v in tree.items()}
    return jnp.asarray(np.ascontiguousarray(tree), dtype)
