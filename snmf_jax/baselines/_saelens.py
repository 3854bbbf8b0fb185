"""Sparse autoencoders in SAELens' folder layout, both ways, without torch.

A SAELens folder (what `sae_lens.SAE.save_model` writes and
`SAE.load_from_disk` reads) holds

    cfg.json                  {"d_in", "d_sae", "dtype", "device",
                               "apply_b_dec_to_input", "normalize_activations",
                               "reshape_activations", "architecture",
                               "k" and "rescale_acts_by_decoder_norm" (topk),
                               "metadata": {"sae_lens_version", "hook_name",
                                            "model_name", ...}}
    sae_weights.safetensors   W_enc (d_in, d_sae), b_enc (d_sae,),
                              W_dec (d_sae, d_in), b_dec (d_in,),
                              threshold (d_sae,) for jumprelu

Configs written before SAELens 6 (flat "hook_name"/"hook_point",
"activation_fn": "topk" with "activation_fn_kwargs": {"k": ...}) load too.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from snmf_jax._io import read_json, reading_safetensors, write_json, write_safetensors
from snmf_jax.baselines._sae import SAEConfig, SparseAutoencoder, check_params

CFG_FILENAME = "cfg.json"
WEIGHTS_FILENAME = "sae_weights.safetensors"
# The layout version we write: SAELens reads configs without a 6.x version
# through its pre-6 converter, which would drop our nested metadata.
_LAYOUT_VERSION = "6.0.0"


def save_sae(sae: SparseAutoencoder, path: str | os.PathLike, *,
             metadata: Mapping[str, Any] | None = None) -> Path:
    """Writes `sae` as a SAELens folder (atomically, file by file).

    Args:
      sae: the autoencoder.
      path: the folder (created if needed).
      metadata: extra keys for cfg.json's "metadata" (e.g. context_size,
        dataset_path); hook_name and model_name come from the SAE's config.

    Returns:
      The folder.
    """
    cfg = sae.config
    if cfg.dtype not in ("float32", "float16", "float64"):
        raise ValueError(f"save_sae: dtype must be float32, float16 or float64 to save; got "
                         f"{cfg.dtype!r} (load it with dtype='float32' first)")
    path = Path(path)
    params = {k: np.ascontiguousarray(np.asarray(v, dtype=np.dtype(cfg.dtype)))
              for k, v in sae.params().items()}
    write_safetensors(path / WEIGHTS_FILENAME, params)
    meta = {"sae_lens_version": _LAYOUT_VERSION, "sae_lens_training_version": None,
            "hook_name": cfg.hook_name or None, "model_name": cfg.model_name or None,
            "trained_with": "snmf-jax", **dict(metadata or {})}
    out = {"d_in": cfg.d_in, "d_sae": cfg.d_sae, "dtype": cfg.dtype, "device": "cpu",
           "apply_b_dec_to_input": cfg.apply_b_dec_to_input,
           "normalize_activations": "none", "reshape_activations": "none",
           "architecture": cfg.architecture, "metadata": meta}
    if cfg.architecture == "topk":
        # Our decoder rows are unit norm, so rescaling by them would be a no-op.
        out.update(k=cfg.k, rescale_acts_by_decoder_norm=False)
    write_json(path / CFG_FILENAME, out)
    return path


def _read_weights(path: Path) -> dict[str, np.ndarray]:
    from safetensors import safe_open
    out = {}
    try:
        with safe_open(str(path), framework="numpy") as f:
            for k in f.keys():
                out[k] = f.get_tensor(k)
    except TypeError:  # bfloat16 has no numpy dtype: go through JAX
        with safe_open(str(path), framework="flax") as f:
            for k in f.keys():
                out[k] = np.asarray(f.get_tensor(k).astype("float32"))
    return out


def _normalise_cfg(raw: dict) -> dict:
    """SAELens >= 6 config dict from any SAELens cfg.json."""
    cfg = dict(raw)
    meta = dict(cfg.get("metadata") or {})
    for old, new in (("hook_point", "hook_name"),):
        if old in cfg and "hook_name" not in cfg:
            cfg["hook_name"] = cfg[old]
    for key in ("hook_name", "model_name"):
        if key in cfg and key not in meta:
            meta[key] = cfg[key]
    arch = cfg.get("architecture")
    if arch is None:
        fn = cfg.get("activation_fn", cfg.get("activation_fn_str", "relu"))
        arch = "topk" if fn == "topk" else "standard"
    if arch == "topk" and "k" not in cfg:
        cfg["k"] = (cfg.get("activation_fn_kwargs") or {}).get("k")
    norm = cfg.get("normalize_activations", "none")
    if isinstance(norm, bool) or norm is None:
        norm = "expected_average_only_in" if norm else "none"
    cfg.update(architecture=arch, normalize_activations=norm, metadata=meta)
    return cfg


def load_sae(path: str | os.PathLike, *, dtype: str = "float32") -> SparseAutoencoder:
    """Loads a SAELens folder (saved by SAELens or by `save_sae`).

    A TopK SAE saved with rescale_acts_by_decoder_norm=True has its decoder
    norms folded into the encoder (exactly the same latents and output).

    Args:
      path: folder with cfg.json and sae_weights.safetensors.
      dtype: dtype of the loaded weights.

    Returns:
      A `SparseAutoencoder`.

    Raises:
      FileNotFoundError: a file is missing.
      ValueError: an architecture or input normalisation we do not implement,
        or weights whose shapes disagree with the config.
    """
    path = Path(path)
    for name in (CFG_FILENAME, WEIGHTS_FILENAME):
        if not (path / name).is_file():
            raise FileNotFoundError(f"load_sae: {str(path / name)!r} not found "
                                    "(expected a SAELens folder)")
    raw = read_json(path / CFG_FILENAME)  # invalid JSON fails naming the file
    missing = [k for k in ("d_in", "d_sae") if not isinstance(raw, dict) or k not in raw]
    if missing:
        raise ValueError(f"load_sae: {path / CFG_FILENAME} must be a JSON object with "
                         f"{missing}; got {str(raw)[:60]!r}")
    cfg = _normalise_cfg(raw)
    arch = cfg["architecture"]
    if arch not in ("standard", "topk", "jumprelu"):
        raise ValueError(f"load_sae: architecture {arch!r} is not supported; expected "
                         "'standard', 'topk' or 'jumprelu'")
    if cfg["normalize_activations"] != "none":
        raise ValueError(
            f"load_sae: normalize_activations={cfg['normalize_activations']!r} is not "
            "supported; fold the normalisation into the weights in SAELens first "
            "(e.g. sae.fold_activation_norm_scaling_factor) and save again")
    with reading_safetensors(path / WEIGHTS_FILENAME):  # truncated: fails naming the file
        w = {k: v.astype(np.float32) for k, v in _read_weights(path / WEIGHTS_FILENAME).items()}
    try:
        check_params(w, SAEConfig(d_in=int(cfg["d_in"]), d_sae=int(cfg["d_sae"]),
                                  architecture=arch, k=int(cfg.get("k") or 1)))
    except ValueError as e:
        raise ValueError(f"load_sae: {path / WEIGHTS_FILENAME}: {e}") from None
    if arch == "topk" and cfg.get("rescale_acts_by_decoder_norm", False):
        norms = np.maximum(np.linalg.norm(w["W_dec"], axis=1), 1e-8)  # (d_sae,)
        w["W_enc"] = w["W_enc"] * norms[None, :]
        w["b_enc"] = w["b_enc"] * norms
        w["W_dec"] = w["W_dec"] / norms[:, None]
    meta = cfg["metadata"]
    config = SAEConfig(
        d_in=int(cfg["d_in"]), d_sae=int(cfg["d_sae"]), architecture=arch,
        k=int(cfg.get("k") or 1), apply_b_dec_to_input=bool(cfg.get("apply_b_dec_to_input", True)),
        hook_name=str(meta.get("hook_name") or ""), model_name=str(meta.get("model_name") or ""),
        dtype=dtype)
    return SparseAutoencoder(config, params=w)
