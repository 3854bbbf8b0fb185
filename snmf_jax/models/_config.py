"""Frozen, hashable model configuration shared by every family.

A config is static under `jax.jit`: it decides shapes and control flow, while
weights travel as a separate pytree argument. A family is a set of flag
values (`_presets.FAMILIES`); the forward reads the flags, never the name.
"""

from __future__ import annotations

import dataclasses
from snmf_jax import _checks
from snmf_jax.models._presets import FAMILIES

SITES = ("mlp_hidden", "mlp_out", "resid_post")


@dataclasses.dataclass(frozen=True)
class RopeScaling:
    """Frequency scaling of rotary embeddings.

    Attributes:
      factor: the context-extension factor.
      low_freq_factor, high_freq_factor, original_max_position: "llama3"
        (Llama 3.1) smoothing parameters; unused by "linear".
      rope_type: "llama3" (Llama 3.1) or "linear" (all frequencies divided by
        `factor`, as Gemma 3's larger models do on their global layers).
    """

    factor: float = 8.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position: int = 8192
    rope_type: str = "llama3"

    def __post_init__(self):
        if self.rope_type not in ("llama3", "linear"):
            raise ValueError(
                f"RopeScaling.rope_type must be 'llama3' or 'linear'; got "
                f"{self.rope_type!r}")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Architecture of a decoder-only transformer.

    Attributes:
      family: the preset ("gpt2", "llama", "gemma2", "gemma3"; see
        `_presets.FAMILIES`) whose values fill the architecture flags below
        left as None. Another name is a new family: give every flag. The
        forward never reads the name.
      vocab_size: rows of the embedding table.
      d_model: residual stream width.
      n_layers: number of transformer blocks.
      n_heads: query heads.
      n_kv_heads: key/value heads (grouped-query attention when < n_heads).
      head_dim: width of one head.
      d_mlp: MLP hidden width (the SNMF site's width).
      max_position: longest context the model supports.
      norm_eps: epsilon of LayerNorm / RMSNorm.
      rope_theta: rotary base (global layers for Gemma 3).
      rope_local_theta: rotary base of sliding-window layers (Gemma 3).
      rope_scaling: frequency scaling of the full-attention layers (every
        layer of a model without sliding windows), or None. Sliding layers
        use `rope_local_theta` unscaled, as in Gemma 3.
      tie_embeddings: unembedding is the transpose of the embedding.
      query_pre_attn_scalar: Gemma: queries scaled by this**-0.5 instead of
        head_dim**-0.5.
      attn_logit_softcap: Gemma 2: tanh soft-capping of attention scores.
      final_logit_softcap: Gemma 2: tanh soft-capping of the logits.
      sliding_window: window of local layers (tokens), or None.
      layer_types: per layer "full" or "sliding"; empty means all "full".
      bos_token_id, eos_token_ids, pad_token_id: special tokens.
      qkv_bias: q/k/v projections have biases (implied by linear_bias).

    Architecture flags (None: the family's value, filled in on construction):
      activation: MLP nonlinearity, "silu", "gelu_tanh" or "gelu".
      norm: "rms" (RMSNorm) or "layer" (LayerNorm with a bias).
      norm_scale_in_float32: RMSNorm multiplies by its scale in float32, then
        casts (Gemma); False casts first (Llama). Equal in float32.
      norm_offset: checkpoints store norm weights as scale - offset (Gemma:
        1, the 1 + w convention). The converters add it back, so the module
        tree and the forward always hold the effective scale.
      positions: "rope" (rotary) or "learned" (a position embedding table).
      gated_mlp: MLP is act(gate(h)) * up(h); False: act(up(h)).
      linear_bias: every linear map (q, k, v, o, up, down) has a bias.
      post_attn_norm, post_mlp_norm: norms of the attention and MLP outputs
        before the residual add (Gemma's sandwich norms).
      qk_norm: RMSNorm over each query and key head before rope (Gemma 3).
      scale_embeddings: embeddings are multiplied by sqrt(d_model) (Gemma).
    """

    family: str
    vocab_size: int
    d_model: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    d_mlp: int
    max_position: int = 2048
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    rope_local_theta: float = 10000.0
    rope_scaling: RopeScaling | None = None
    tie_embeddings: bool = True
    query_pre_attn_scalar: float | None = None
    attn_logit_softcap: float | None = None
    final_logit_softcap: float | None = None
    sliding_window: int | None = None
    layer_types: tuple[str, ...] = ()
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = ()
    pad_token_id: int | None = None
    activation: str | None = None
    qkv_bias: bool = False
    norm: str | None = None
    norm_scale_in_float32: bool | None = None
    norm_offset: float | None = None
    positions: str | None = None
    gated_mlp: bool | None = None
    linear_bias: bool | None = None
    post_attn_norm: bool | None = None
    post_mlp_norm: bool | None = None
    qk_norm: bool | None = None
    scale_embeddings: bool | None = None

    def __post_init__(self):
        preset = FAMILIES.get(self.family, {})
        for name in FLAGS:
            if getattr(self, name) is None:
                if name not in preset:
                    raise ValueError(
                        f"ModelConfig.{name} must be given for family {self.family!r}, "
                        f"which is not a preset ({', '.join(FAMILIES)})")
                object.__setattr__(self, name, preset[name])  # frozen: fill once, here
        _check_flags(self)
        # Values read from config.json / GGUF files: a zero or negative size or a
        # NaN base fails here, not as a ZeroDivisionError or NaN logits later.
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads",
                     "head_dim", "d_mlp", "max_position"):
            _checks.integer(f"ModelConfig.{name}", getattr(self, name), lo=1)
        if self.sliding_window is not None:
            _checks.integer("ModelConfig.sliding_window", self.sliding_window, lo=1)
        for name in ("norm_eps", "rope_theta", "rope_local_theta", "query_pre_attn_scalar",
                     "attn_logit_softcap", "final_logit_softcap"):
            if getattr(self, name) is not None:
                _checks.real(f"ModelConfig.{name}", getattr(self, name), lo=0, lo_open=True)
        if self.n_heads % self.n_kv_heads:
            raise ValueError(
                f"n_heads ({self.n_heads}) must be a multiple of n_kv_heads "
                f"({self.n_kv_heads})")
        if self.layer_types and len(self.layer_types) != self.n_layers:
            raise ValueError(
                f"layer_types has {len(self.layer_types)} entries; expected "
                f"n_layers={self.n_layers}")
        bad = [t for t in self.layer_types if t not in ("full", "sliding")]
        if bad:
            raise ValueError(
                f"layer_types entries must be 'full' or 'sliding'; got {bad[0]!r}")
        if "sliding" in self.layer_types and self.sliding_window is None:
            raise ValueError(
                "layer_types has 'sliding' layers but sliding_window is None")

    @property
    def mlp_activation(self) -> str:
        """The MLP nonlinearity (`activation`, filled from the family)."""
        return self.activation

    @property
    def sliding_layers(self) -> tuple[bool, ...]:
        """Per layer: True where attention is restricted to the window."""
        if not self.layer_types:
            return (False,) * self.n_layers
        return tuple(t == "sliding" for t in self.layer_types)

    def site_dim(self, site: str) -> int:
        """Width of the activations at a named site."""
        if site == "mlp_hidden":
            return self.d_mlp
        if site in ("mlp_out", "resid_post"):
            return self.d_model
        raise ValueError(f"unknown site {site!r}; expected one of {SITES}")


# The architecture flags, in the order ModelConfig declares them.
FLAGS = ("activation", "norm", "norm_scale_in_float32", "norm_offset", "positions",
         "gated_mlp", "linear_bias", "post_attn_norm", "post_mlp_norm", "qk_norm",
         "scale_embeddings")
_CHOICES = {"activation": ("silu", "gelu_tanh", "gelu"), "norm": ("rms", "layer"),
            "positions": ("rope", "learned")}


def _check_flags(config: ModelConfig) -> None:
    """Each flag holds a value of its kind (a string flag one of its choices)."""
    for name in FLAGS:
        value = getattr(config, name)
        if name in _CHOICES:
            if value not in _CHOICES[name]:
                raise ValueError(f"ModelConfig.{name} must be one of {_CHOICES[name]}; "
                                 f"got {value!r}")
        elif name == "norm_offset":
            _checks.real(f"ModelConfig.{name}", value)
        elif not isinstance(value, bool):
            raise ValueError(f"ModelConfig.{name} must be a bool; got {value!r}")
