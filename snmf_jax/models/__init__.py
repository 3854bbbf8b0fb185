"""One Flax NNX transformer whose config flags make it GPT-2, Llama or Gemma 2/3 (`FAMILIES`),
its loaders (HF, GGUF) and tokenizers."""

# pylint: disable=g-importing-member

# Configs and presets.
from snmf_jax.models._config import SITES, ModelConfig
from snmf_jax.models._presets import FAMILIES, PRESETS, cache_dir

# The model: the module tree, its weights, the loader.
from snmf_jax.models._load import load_model
from snmf_jax.models._model import Model
from snmf_jax.models._modules import Transformer, init_params, layout
from snmf_jax.models._state import as_arrays
from snmf_jax.models._tokenizer import Tokenizer

# The forward and its pieces (what steering and activation export build on).
from snmf_jax.models._blocks import run_blocks
from snmf_jax.models._cache import KVCache, init_cache
from snmf_jax.models._patch import Patch, SitePatch
from snmf_jax.models._transformer import (ForwardOutput, check_values, embed, forward,
                                          mlp_output_map, unembed)

# Sharding over a device mesh.
from snmf_jax.models._sharding import auto_mesh, shard_params

# Checkpoint converters: one per format (HF safetensors, GGUF).
from snmf_jax.models._gguf import read_gguf
from snmf_jax.models._gguf_params import config_from_gguf, params_from_gguf
from snmf_jax.models._hf import config_from_hf
from snmf_jax.models._hf_params import params_from_hf

__all__ = [
    # Configs and presets
    "ModelConfig", "SITES", "FAMILIES", "PRESETS", "cache_dir",
    # The model
    "load_model", "Model", "Transformer", "init_params", "layout", "as_arrays", "Tokenizer",
    # The forward and its pieces
    "forward", "ForwardOutput", "check_values", "embed", "run_blocks", "unembed",
    "mlp_output_map", "KVCache", "init_cache", "Patch", "SitePatch",
    # Sharding
    "auto_mesh", "shard_params",
    # Converters
    "config_from_hf", "params_from_hf", "read_gguf", "config_from_gguf", "params_from_gguf",
]
