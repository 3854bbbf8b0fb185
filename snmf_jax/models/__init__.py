"""One Flax NNX transformer whose config flags make it GPT-2, Llama or Gemma 2/3 (`FAMILIES`),
its loaders (HF, GGUF) and tokenizers."""

from snmf_jax.models._blocks import run_blocks
from snmf_jax.models._cache import KVCache, init_cache
from snmf_jax.models._config import SITES, ModelConfig, RopeScaling
from snmf_jax.models._gguf import GGUFError, read_gguf
from snmf_jax.models._gguf_params import config_from_gguf, params_from_gguf
from snmf_jax.models._hf import config_from_hf
from snmf_jax.models._hf_params import params_from_hf
from snmf_jax.models._load import load_model
from snmf_jax.models._model import Model
from snmf_jax.models._modules import (Transformer, abstract_model, check_layout, init_params,
                                      layout, state_from_arrays)
from snmf_jax.models._patch import Patch, SitePatch, apply_site_patch
from snmf_jax.models._presets import FAMILIES, PRESETS, cache_dir
from snmf_jax.models._sharding import DEFAULT_RULES, auto_mesh, param_shardings, shard_params
from snmf_jax.models._state import as_arrays
from snmf_jax.models._tokenizer import Tokenizer
from snmf_jax.models._transformer import (ForwardOutput, embed, forward, mlp_output_map,
                                          unembed, unembedding_matrix)

__all__ = [
    "ModelConfig", "RopeScaling", "SITES",
    "Transformer", "Model", "abstract_model", "layout", "check_layout", "state_from_arrays",
    "as_arrays", "init_params",
    "forward", "ForwardOutput", "embed", "run_blocks", "unembed", "mlp_output_map",
    "unembedding_matrix",
    "KVCache", "init_cache", "SitePatch", "Patch", "apply_site_patch",
    "DEFAULT_RULES", "auto_mesh", "param_shardings", "shard_params",
    "load_model", "FAMILIES", "PRESETS", "cache_dir", "Tokenizer",
    "config_from_hf", "params_from_hf",
    "read_gguf", "GGUFError", "config_from_gguf", "params_from_gguf",
]
