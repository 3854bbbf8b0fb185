"""GGUF -> ModelConfig and weights on the module tree (`_modules.Transformer`).

Layout conventions undone on load (see `params_from_gguf`):
- ggml lists dimensions innermost first; numpy shapes are the reverse, so a
  linear weight reads as (out, in) like torch's nn.Linear and is transposed
  to an (in, out) kernel.
- llama.cpp permutes the rows of Q and K of the `llama` architecture (its
  rope pairs adjacent dimensions); the permutation is reverted so Q/K are in
  transformers' rotate-half layout.
- Gemma norms are stored as 1 + w (llama.cpp adds the norm_offset), i.e. the effective
  scale the module tree holds, so they are kept as they are.

Names and shapes are checked against the module tree (`check_layout`), the
one definition of the layout.
"""

from __future__ import annotations

import os
import re
from typing import Any, Mapping

import numpy as np

from snmf_jax import _progress
from snmf_jax.models._config import ModelConfig, RopeScaling
from snmf_jax.models._gguf import GGUFError, GGUFFile
from snmf_jax.models._modules import check_layout


def _first(value, default=None):
    """A scalar from a scalar or a per-layer array (GGUF allows both)."""
    if value is None:
        return default
    if isinstance(value, (np.ndarray, list)):
        return value[0] if len(value) else default
    return value


def _llama3_scaling(gf: GGUFFile, head_dim: int, theta: float) -> RopeScaling | None:
    """Recovers Llama 3.1 rope scaling from llama.cpp's `rope_freqs.weight`.

    llama.cpp stores the per-frequency divisors instead of the parameters; we
    accept them when they match the llama3 rule with transformers' default
    smoothing (low 1, high 4, original context 8192), the values of every
    Llama 3.1 / 3.2 release.
    """
    if "rope_freqs.weight" not in gf.tensors:
        return None
    divisors = gf.tensor("rope_freqs.weight").reshape(-1)
    factor = float(divisors.max())
    scaling = RopeScaling(factor=factor, rope_type="llama3")
    freqs = theta ** -(np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    wavelen = 2 * np.pi / freqs
    low_wavelen = scaling.original_max_position / scaling.low_freq_factor
    high_wavelen = scaling.original_max_position / scaling.high_freq_factor
    smooth = ((scaling.original_max_position / wavelen - scaling.low_freq_factor)
              / (scaling.high_freq_factor - scaling.low_freq_factor))
    expected = np.where(wavelen < high_wavelen, 1.0,
                        np.where(wavelen > low_wavelen, factor,
                                 1.0 / ((1 - smooth) / factor + smooth)))
    if divisors.shape != expected.shape or not np.allclose(divisors, expected, rtol=1e-4):
        raise GGUFError(
            f"{gf.path}: rope_freqs.weight does not follow the llama3 rope scaling "
            f"rule with factor {factor}, low_freq_factor 1, high_freq_factor 4, "
            f"original context 8192; this rope scaling is not supported")
    return scaling


def _special_ids(md: Mapping[str, Any]) -> dict:
    def get(key):
        value = md.get(f"tokenizer.ggml.{key}")
        return None if value is None else int(_first(value))

    eos = [get(k) for k in ("eos_token_id", "eot_token_id", "eom_token_id")]
    eos_ids = tuple(dict.fromkeys(e for e in eos if e is not None))
    return dict(bos_token_id=get("bos_token_id"), eos_token_ids=eos_ids,
                pad_token_id=get("padding_token_id"))


# Metadata keys (after "{arch}.") each architecture's converter reads or knows to
# change nothing in the forward; any other "{arch}." key is refused by name, so a
# setting this loader does not implement (experts, partial rotary, ...) fails
# instead of being silently dropped. Its keys are the one list of architectures
# that load: `config_from_gguf` checks it before any other work.
_SHAPE_KEYS = frozenset({
    "context_length", "embedding_length", "block_count", "feed_forward_length",
    "attention.head_count", "attention.head_count_kv", "attention.key_length",
    "attention.value_length", "vocab_size"})
_ROPE_KEYS = frozenset({
    "attention.layer_norm_rms_epsilon", "rope.freq_base", "rope.dimension_count",
    "rope.scaling.type", "rope.scaling.factor", "rope.scaling.original_context_length",
    "rope.scaling.finetuned"})
_GEMMA_KEYS = _ROPE_KEYS | {"attention.query_pre_attn_scalar", "attention.sliding_window",
                            "attention.sliding_window_pattern", "attn_logit_softcapping",
                            "final_logit_softcapping"}
_KNOWN_KEYS = {
    "llama": _SHAPE_KEYS | _ROPE_KEYS,
    "gemma2": _SHAPE_KEYS | _GEMMA_KEYS,
    "gemma3": _SHAPE_KEYS | _GEMMA_KEYS | {"rope.freq_base_swa"},
    "gpt2": _SHAPE_KEYS | {"attention.layer_norm_epsilon"},
}
# llama.cpp's converter interleaves the rows of Q and K for these architectures.
_PERMUTED_QK = frozenset({"llama"})


def _gemma(gf: GGUFFile, need, d: int, n_heads: int, head_dim: int, n_layers: int) -> dict:
    """Gemma 2 / 3 settings; where the metadata is silent, llama.cpp's defaults.

    Gemma 2 alternates sliding and full layers and soft-caps 50 / 30; Gemma 3
    slides on 5 of every 6 layers (or per llama.cpp's per-layer pattern) with
    rope base 10000 there and never soft-caps attention scores (like
    transformers). Queries are scaled by head_dim**-0.5 except in the 27B
    models (46 layers for Gemma 2, 62 for Gemma 3): (d_model / n_heads)**-0.5.
    """
    gemma2 = gf.architecture == "gemma2"
    theta = float(_first(gf.arch_key("rope.freq_base"), 10000.0))
    pattern = 2 if gemma2 else gf.arch_key("attention.sliding_window_pattern")
    if isinstance(pattern, (np.ndarray, list)) and len(pattern) == n_layers:
        layer_types = tuple("sliding" if bool(p) else "full" for p in pattern)
    else:
        period = int(_first(pattern, 6))
        layer_types = tuple("sliding" if (i + 1) % period else "full" for i in range(n_layers))
    qscale = gf.arch_key("attention.query_pre_attn_scalar")
    big = 46 if gemma2 else 62
    qscale = float(_first(qscale) if qscale is not None
                   else d // n_heads if n_layers == big else head_dim)
    attn_cap = gf.arch_key("attn_logit_softcapping", 50.0) if gemma2 else None
    final_cap = gf.arch_key("final_logit_softcapping", 30.0 if gemma2 else None)
    window = gf.arch_key("attention.sliding_window")
    return dict(
        norm_eps=float(need("attention.layer_norm_rms_epsilon")), rope_theta=theta,
        rope_local_theta=theta if gemma2 else float(
            _first(gf.arch_key("rope.freq_base_swa"), 10000.0)),
        rope_scaling=_rope_scaling(gf), query_pre_attn_scalar=qscale,
        attn_logit_softcap=None if attn_cap is None else float(_first(attn_cap)),
        final_logit_softcap=None if final_cap is None else float(_first(final_cap)),
        sliding_window=(int(_first(window, 4096 if gemma2 else 512))
                        if "sliding" in layer_types else None),
        layer_types=layer_types)


def config_from_gguf(gf: GGUFFile) -> ModelConfig:
    """A ModelConfig from GGUF metadata (architectures llama, gemma2, gemma3, gpt2).

    The architecture names the family preset (its flags); the metadata gives
    sizes and settings. Values the metadata does not state take llama.cpp's
    (and transformers') defaults. A metadata key of the architecture that
    this converter does not know is an error.

    Args:
      gf: a parsed GGUF file.

    Returns:
      The ModelConfig. `tie_embeddings` is True when there is no output.weight.

    Raises:
      GGUFError: unsupported architecture, an unknown setting, or
        missing/inconsistent metadata.
    """
    arch = gf.architecture
    if arch not in _KNOWN_KEYS:
        raise GGUFError(
            f"{gf.path}: unsupported architecture {arch!r} (general.architecture); "
            f"supported: {', '.join(_KNOWN_KEYS)}")
    unknown = [k for k in gf.metadata
               if k.startswith(f"{arch}.") and k[len(arch) + 1:] not in _KNOWN_KEYS[arch]]
    if unknown:
        raise GGUFError(f"{gf.path}: metadata {unknown[0]} is a setting this loader does not "
                        f"know for architecture {arch!r}; refusing to guess its effect")

    def need(key):
        value = gf.arch_key(key)
        if value is None:
            raise GGUFError(f"{gf.path}: metadata {arch}.{key} is missing")
        return _first(value)

    d = int(need("embedding_length"))
    n_layers = int(need("block_count"))
    n_heads = int(need("attention.head_count"))
    n_kv = int(_first(gf.arch_key("attention.head_count_kv"), n_heads))
    head_dim = int(_first(gf.arch_key("attention.key_length"), d // n_heads))
    rot = gf.arch_key("rope.dimension_count")
    if rot is not None and int(_first(rot)) != head_dim:
        raise GGUFError(f"{gf.path}: partial rotary embeddings ({arch}.rope."
                        f"dimension_count={int(_first(rot))} < head_dim={head_dim}) "
                        f"are not supported")
    if "token_embd.weight" not in gf.tensors:
        raise GGUFError(f"{gf.path}: tensor token_embd.weight is missing")
    common = dict(
        family=arch, vocab_size=int(gf.tensors["token_embd.weight"].shape[0]), d_model=d,
        n_layers=n_layers, n_heads=n_heads, n_kv_heads=n_kv, head_dim=head_dim,
        d_mlp=int(need("feed_forward_length")),
        max_position=int(_first(gf.arch_key("context_length"), 2048)),
        tie_embeddings="output.weight" not in gf.tensors,
        qkv_bias="blk.0.attn_q.bias" in gf.tensors,
        **_special_ids(gf.metadata))
    if arch == "gpt2":
        return ModelConfig(**common, norm_eps=float(need("attention.layer_norm_epsilon")))
    if arch.startswith("gemma"):
        return ModelConfig(**common, **_gemma(gf, need, d, n_heads, head_dim, n_layers))
    theta = float(_first(gf.arch_key("rope.freq_base"), 10000.0))
    return ModelConfig(**common, norm_eps=float(need("attention.layer_norm_rms_epsilon")),
                       rope_theta=theta, rope_local_theta=theta,
                       rope_scaling=_rope_scaling(gf) or _llama3_scaling(gf, head_dim, theta))


def _rope_scaling(gf: GGUFFile) -> RopeScaling | None:
    """Linear rope scaling stated in the metadata (e.g. Gemma 3 4B+), or None."""
    kind = gf.arch_key("rope.scaling.type")
    factor = float(_first(gf.arch_key("rope.scaling.factor"), 1.0))
    if kind in (None, "none") or factor == 1.0:
        return None
    if kind == "linear":
        return RopeScaling(factor=factor, rope_type="linear")
    raise GGUFError(f"{gf.path}: unsupported rope scaling type {kind!r} "
                    f"({gf.architecture}.rope.scaling.type); supported: linear")


# llama.cpp block tensor -> (params entry, leaf). Linear weights become kernels.
_BLOCK_TENSORS = {
    "attn_norm.weight": ("attn_norm", "scale"),
    "attn_norm.bias": ("attn_norm", "bias"),
    "attn_q.weight": ("q", "kernel"), "attn_q.bias": ("q", "bias"),
    "attn_k.weight": ("k", "kernel"), "attn_k.bias": ("k", "bias"),
    "attn_v.weight": ("v", "kernel"), "attn_v.bias": ("v", "bias"),
    "attn_output.weight": ("o", "kernel"), "attn_output.bias": ("o", "bias"),
    "attn_q_norm.weight": ("q_norm", "scale"),
    "attn_k_norm.weight": ("k_norm", "scale"),
    "post_attention_norm.weight": ("post_attn_norm", "scale"),
    "ffn_norm.weight": ("mlp_norm", "scale"), "ffn_norm.bias": ("mlp_norm", "bias"),
    "ffn_gate.weight": ("gate", "kernel"),
    "ffn_up.weight": ("up", "kernel"), "ffn_up.bias": ("up", "bias"),
    "ffn_down.weight": ("down", "kernel"), "ffn_down.bias": ("down", "bias"),
    "post_ffw_norm.weight": ("post_mlp_norm", "scale"),
}
# Tensors that carry nothing the forward pass needs (rope tables it recomputes).
_IGNORED = re.compile(r"^(rope_freqs\.weight|blk\.\d+\.attn_rot_embd\.weight)$")
_BLOCK = re.compile(r"^blk\.(\d+)\.(.+)$")


def _unpermute_rope(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Reverts llama.cpp's Q/K row permutation (interleaved -> rotate-half).

    llama.cpp's convert_hf_to_gguf permutes rows as
    w.reshape(H, 2, hd/2, ...).swapaxes(1, 2); this is its inverse.

    Args:
      w: (H*hd, D) weight or (H*hd,) bias, in llama.cpp's layout.
      n_heads: H, the heads of this projection (KV heads for K).

    Returns:
      The same shape in transformers' layout.
    """
    half = w.shape[0] // n_heads // 2
    return (w.reshape(n_heads, half, 2, *w.shape[1:])  # (H, hd/2, 2, ...)
            .swapaxes(1, 2).reshape(w.shape))


def _aligned_empty(shape: tuple[int, ...], dtype) -> np.ndarray:
    """np.empty on a 64-byte boundary, so jax.device_put on CPU can adopt the
    buffer instead of copying it."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(nbytes + 64, np.uint8)
    start = -raw.ctypes.data % 64
    return raw[start:start + nbytes].view(dtype).reshape(shape)


def _plan(gf: GGUFFile, config: ModelConfig):
    """Where each tensor goes: name -> (path in params, layer or None, kind).

    kind is "kernel" (transpose), "leaf" (as is), or "qkv_kernel" /
    "qkv_bias" (GPT-2's fused projection, split in three).
    """
    n = config.n_layers
    top = {"token_embd.weight": (("embed",), "leaf"),
           "position_embd.weight": (("pos_embed",), "leaf"),
           "output.weight": (("unembed", "kernel"), "kernel"),
           "output_norm.weight": (("final_norm", "scale"), "leaf"),
           "output_norm.bias": (("final_norm", "bias"), "leaf")}
    plan, unknown = {}, []
    for name in gf.tensors:
        if _IGNORED.match(name):
            continue
        m = _BLOCK.match(name)
        if m is None:
            if name in top:
                path, kind = top[name]
                plan[name] = (path, None, kind)
            else:
                unknown.append(name)
            continue
        layer, part = int(m.group(1)), m.group(2)
        if layer >= n:
            raise GGUFError(f"{gf.path}: tensor {name!r} is beyond block_count={n}")
        if part in ("attn_qkv.weight", "attn_qkv.bias"):
            kind = "qkv_kernel" if part.endswith("weight") else "qkv_bias"
            plan[name] = (("layers", "qkv"), layer, kind)
        elif part in _BLOCK_TENSORS:
            key, leaf = _BLOCK_TENSORS[part]
            plan[name] = (("layers", key, leaf), layer, "kernel" if leaf == "kernel" else "leaf")
        else:
            unknown.append(name)
    if unknown:
        raise GGUFError(f"{gf.path}: tensors this loader does not know for architecture "
                        f"{gf.architecture!r}: {', '.join(unknown[:8])}"
                        f"{' ...' if len(unknown) > 8 else ''}")
    return plan


def params_from_gguf(gf: GGUFFile, config: ModelConfig, dtype=None,
                     progress: bool = True, workers: int | None = None) -> dict:
    """Dequantizes a GGUF's tensors into the params contract (numpy leaves).

    Per-layer tensors are written straight into preallocated (L, ...) arrays
    by a small thread pool (numpy's dequantization releases the GIL).

    Args:
      gf: a parsed GGUF file.
      config: its architecture (from `config_from_gguf`).
      dtype: numpy dtype of the leaves (float32 when None; e.g.
        ml_dtypes.bfloat16). Dequantization itself runs in float32.
      progress: show a tqdm bar.
      workers: threads (default: min(4, CPU count)).

    Returns:
      The params pytree with numpy leaves; per-layer tensors stacked on a
      leading n_layers axis.

    Raises:
      GGUFError: unexpected, missing or misshapen tensors.
    """
    import concurrent.futures
    import threading

    dtype = np.dtype(np.float32 if dtype is None else dtype)
    n = config.n_layers
    plan = _plan(gf, config)
    permuted = gf.architecture in _PERMUTED_QK
    params: dict[str, Any] = {}
    filled: dict[tuple, set] = {}
    lock = threading.Lock()

    def slot(path: tuple, shape: tuple, layer: int | None) -> np.ndarray:
        """The array a tensor is written to (allocated on first use)."""
        with lock:
            node = params
            for key in path[:-1]:
                node = node.setdefault(key, {})
            full = shape if layer is None else (n, *shape)
            if path[-1] not in node:
                node[path[-1]] = _aligned_empty(full, dtype)
            arr = node[path[-1]]
            if arr.shape != full:
                raise GGUFError(f"{gf.path}: {'.'.join(path)} has shape {shape} in "
                                f"some blocks and {arr.shape[1:]} in others")
            done = filled.setdefault(path, set())
            if layer in done:
                raise GGUFError(f"{gf.path}: duplicate tensor for {'.'.join(path)}")
            done.add(layer)
            return arr if layer is None else arr[layer]

    def load(name: str) -> None:
        path, layer, kind = plan[name]
        w = gf.tensor(name, np.float32)
        part = name.split(".", 2)[-1]
        if permuted and part in ("attn_q.weight", "attn_q.bias"):
            w = _unpermute_rope(w, config.n_heads)
        elif permuted and part in ("attn_k.weight", "attn_k.bias"):
            w = _unpermute_rope(w, config.n_kv_heads)
        if kind.startswith("qkv"):
            # GPT-2's fused projection: (3*D, D) weight or (3*D,) bias.
            leaf = "kernel" if kind == "qkv_kernel" else "bias"
            for key, chunk in zip("qkv", np.split(w, 3, axis=0)):
                chunk = chunk.T if leaf == "kernel" else chunk
                slot(("layers", key, leaf), chunk.shape, layer)[...] = chunk
            return
        w = w.T if kind == "kernel" else w  # (out, in) -> (in, out)
        slot(path, w.shape, layer)[...] = w

    workers = workers or min(4, os.cpu_count() or 1)
    # Largest first so the pool's tail is short.
    names = sorted(plan, key=lambda nm: -gf.tensors[nm].nbytes)
    with concurrent.futures.ThreadPoolExecutor(workers) as pool, \
            _progress.bar(len(names), desc=f"dequantizing {gf.path.name}",
                          progress=progress, leave=False) as bar:
        futures = [pool.submit(load, nm) for nm in names]
        for fut in concurrent.futures.as_completed(futures):
            fut.result()
            bar.update()

    for path, layers in filled.items():
        if None not in layers and len(layers) != n:
            missing = sorted(set(range(n)) - layers)
            raise GGUFError(f"{gf.path}: {'.'.join(path[1:])} is missing for blocks "
                            f"{missing[:8]}")
    check_layout(config, params, source=str(gf.path), error=GGUFError)
    return params
