"""A loaded model: frozen config + the module tree's state + tokenizer.

`Model.forward` calls a module-level jitted `forward` with the weights (the
`nnx.State`) as an argument (never closed over), so every Model with the same
config and the same capture/patch keys shares one compiled program.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from snmf_jax.models._blocks import run_blocks
from snmf_jax.models._config import ModelConfig
from snmf_jax.models._modules import Transformer, abstract_model, state_from_arrays
from snmf_jax.models._transformer import (ForwardOutput, check_values, embed, forward,
                                          mlp_output_map, unembed)

forward_jit = jax.jit(forward, static_argnames=("config", "capture"))
_embed_jit = jax.jit(embed, static_argnames=("config",))
_run_blocks_jit = jax.jit(run_blocks, static_argnames=("config", "start", "stop", "capture"))
_unembed_jit = jax.jit(unembed, static_argnames=("config",))
_mlp_output_map_jit = jax.jit(mlp_output_map, static_argnames=("config", "layer", "bias"))


@dataclasses.dataclass(frozen=True)
class Model:
    """A model ready to run.

    Attributes:
      config: the architecture.
      params: the weights: the `Transformer` module's `nnx.State` (layers
        stacked along a leading L axis). A nested dict of arrays is accepted
        and checked against the module tree.
      tokenizer: a `Tokenizer`, or None.
      name: a label (preset name or path).
    """

    config: ModelConfig
    params: Any
    tokenizer: Any = None
    name: str = ""

    def __post_init__(self):
        if not isinstance(self.params, nnx.State):
            object.__setattr__(self, "params", state_from_arrays(self.config, self.params))

    @property
    def graphdef(self) -> nnx.GraphDef:
        """The module structure (`nnx.split`'s first half)."""
        return abstract_model(self.config)[0]

    @property
    def module(self) -> Transformer:
        """The `Transformer` NNX module holding these weights (shares the arrays)."""
        return nnx.merge(self.graphdef, self.params)

    def __treescope_repr__(self, path, subtree_renderer):
        # Renders as the module tree (names, shapes, axis annotations).
        return subtree_renderer(self.module, path=path)

    @property
    def dtype(self):
        """dtype of the weights (and of the activations)."""
        return self.params["embed"].dtype

    def forward(self, tokens, **kwargs) -> ForwardOutput:
        """Jitted `forward(self.params, tokens, config=self.config, **kwargs)`.

        Args:
          tokens: (B, T) int token ids.
          **kwargs: attention_mask, cache, patch, capture (see `forward`).

        Returns:
          ForwardOutput(logits, captures, cache).
        """
        cache = kwargs.get("cache")
        if cache is not None:
            # Checked here, on the host: inside jit the length is traced.
            length, new = int(cache.length), np.shape(tokens)[1]
            if length + new > cache.max_len:
                raise ValueError(
                    f"cache overflow: {length} cached + {new} new tokens > max_len "
                    f"{cache.max_len}")
        # Token ids and patch values are checked here, concretely: inside the jit
        # they are traced (an out-of-range id would be clamped silently).
        check_values(tokens if isinstance(tokens, jax.Array) else np.asarray(tokens),
                     self.config, cache=cache, patch=kwargs.get("patch"))
        if "capture" in kwargs:
            kwargs["capture"] = tuple((int(layer), str(site))
                                      for layer, site in kwargs["capture"])
        return forward_jit(self.params, jnp.asarray(tokens, jnp.int32),
                           config=self.config, **kwargs)

    def embed(self, tokens, **kwargs):
        """(B, T, D) residual stream entering block 0; see `models.embed`."""
        return _embed_jit(self.params, jnp.asarray(tokens, jnp.int32), config=self.config,
                          **kwargs)

    def run_blocks(self, x, *, start: int = 0, stop: int | None = None, **kwargs):
        """(x, captures, cache) after blocks [start, stop); see `models.run_blocks`."""
        if "capture" in kwargs:
            kwargs["capture"] = tuple((int(layer), str(site))
                                      for layer, site in kwargs["capture"])
        stop = self.config.n_layers if stop is None else int(stop)
        return _run_blocks_jit(self.params, x, config=self.config, start=int(start),
                               stop=stop, **kwargs)

    def unembed(self, x):
        """(..., V) float32 logits of a final residual stream; see `models.unembed`."""
        return _unembed_jit(self.params, x, config=self.config)

    def mlp_output_map(self, hidden, *, layer: int, bias: bool = True):
        """(..., D) mlp_out of mlp_hidden vectors at `layer`; see `models.mlp_output_map`."""
        return _mlp_output_map_jit(self.params, jnp.asarray(hidden, self.dtype),
                                   config=self.config, layer=int(layer), bias=bias)

    def __repr__(self) -> str:
        return (f"Model(name={self.name!r}, family={self.config.family!r}, "
                f"n_layers={self.config.n_layers}, d_model={self.config.d_model}, "
                f"dtype={self.dtype})")
