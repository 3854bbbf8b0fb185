"""Conversion of Hugging Face transformers state dicts into the params contract.

Only plain dicts and numpy arrays cross this boundary: transformers itself is
not imported. The config side is `_hf.py`.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax.numpy as jnp
import numpy as np

from snmf_jax.models._config import ModelConfig
from snmf_jax.models._modules import check_layout


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
    q, k, v; norm weights w become effective scales w + config.norm_offset
    (Gemma's 1 + w); the unembedding is kept only for untied models. The
    names are transformers': GPT-2's (`wte`, `h.{i}.attn.c_attn`) for
    learned-position models, Llama's (`embed_tokens`, `layers.{i}.self_attn`)
    otherwise, with the norms the config's flags ask for.

    Args:
      config: the architecture (e.g. from `config_from_hf`).
      state_dict: name -> numpy array (any float dtype numpy can convert to
        float32, e.g. ml_dtypes bfloat16). Torch tensors: pass `.numpy()`.
      dtype: dtype of the returned leaves.

    Returns:
      The params pytree (layers stacked along a leading L axis).
    """
    n = config.n_layers

    def stack(fn):
        return np.stack([fn(i) for i in range(n)])

    if config.positions == "learned":
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
        shift = np.float32(config.norm_offset)

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
            "up": linear("mlp.up_proj"),
            "down": linear("mlp.down_proj"),
        }
        if config.gated_mlp:
            layers["gate"] = linear("mlp.gate_proj")
        if config.post_attn_norm:
            layers["post_attn_norm"] = norm("post_attention_layernorm")
            layers["mlp_norm"] = norm("pre_feedforward_layernorm")
        else:
            # Without a post-attention norm, Llama's "post_attention_layernorm" is
            # the pre-MLP norm.
            layers["mlp_norm"] = norm("post_attention_layernorm")
        if config.post_mlp_norm:
            layers["post_mlp_norm"] = norm("post_feedforward_layernorm")
        if config.qk_norm:
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
