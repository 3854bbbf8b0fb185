"""Flax/JAX ports of GPT-2, Llama and Gemma 2/3, their loaders and tokenizers."""

import importlib

# Public name -> private module. Resolved lazily so `import snmf_jax` stays
# cheap and does not import tokenizers/gguf until a model is used.
_EXPORTS = {
    "ModelConfig": "_config",
    "RopeScaling": "_config",
    "SITES": "_config",
    "SitePatch": "_patch",
    "Patch": "_patch",
    "apply_site_patch": "_patch",
    "forward": "_transformer",
    "ForwardOutput": "_transformer",
    "KVCache": "_cache",
    "init_cache": "_cache",
    "Model": "_model",
    "init_params": "_model",
    "config_from_hf": "_hf",
    "params_from_hf": "_hf",
    "Tokenizer": "_tokenizer",
    "load_model": "_load",
    "PRESETS": "_presets",
    "cache_dir": "_presets",
    "read_gguf": "_gguf",
    "GGUFError": "_gguf",
    "config_from_gguf": "_gguf",
    "params_from_gguf": "_gguf",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        module = importlib.import_module(f"{__name__}.{_EXPORTS[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
