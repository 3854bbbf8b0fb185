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

from snmf_jax import _checks
from snmf_jax._io import read_json, reading_safetensors, write_json, write_safetensors
from snmf_jax.baselines._architectures import ARCHITECTURES, architecture
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
           "architecture": cfg.architecture, "metadata": meta,
           **architecture(cfg.architecture).saelens_fields(cfg)}
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


# cfg.json fields we read, by the kind of value each must hold (None allowed
# where SAELens writes null). Other fields are SAELens' own and are ignored.
_KINDS = {"d_in": int, "d_sae": int, "k": int, "apply_b_dec_to_input": bool,
          "rescale_acts_by_decoder_norm": bool, "architecture": str, "dtype": str,
          "device": str, "reshape_activations": str, "activation_fn": str,
          "activation_fn_str": str, "activation_fn_kwargs": dict, "metadata": dict,
          "hook_name": str, "hook_point": str, "model_name": str}
_KIND_WORDS = {int: "an integer", bool: "true or false", str: "a string", dict: "an object"}
_NULLABLE = {"k", "hook_name", "hook_point", "model_name", "metadata", "activation_fn_kwargs"}


def _check_fields(raw: Mapping[str, Any], where: Path) -> None:
    """Each field we read holds its kind of value (JSON true/false for a bool,
    not "false"); one line naming the file and the field otherwise."""
    if not isinstance(raw, dict):
        raise ValueError(f"load_sae: {where} must be a JSON object; got {str(raw)[:60]!r}")
    missing = [k for k in ("d_in", "d_sae") if k not in raw]
    if missing:
        raise ValueError(f"load_sae: {where} must be a JSON object with {missing}; got "
                         f"{str(raw)[:60]!r}")
    meta = raw.get("metadata")
    fields = {**raw, **({f"metadata.{k}": v for k, v in meta.items()}
                        if isinstance(meta, dict) else {})}
    for key, value in fields.items():
        name = key.removeprefix("metadata.")
        kind = _KINDS.get(name)
        if kind is None or (value is None and name in _NULLABLE):
            continue
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            raise ValueError(f"load_sae: {where}: {key} must be {_KIND_WORDS[kind]}; got "
                             f"{value!r:.60}")
    for key in ("d_in", "d_sae"):
        _checks.integer(f"load_sae: {where}: {key}", raw[key], lo=1)
    norm = raw.get("normalize_activations", "none")
    if not (norm is None or isinstance(norm, (bool, str))):
        raise ValueError(f"load_sae: {where}: normalize_activations must be a string; got "
                         f"{str(norm)[:40]!r}")


def _normalise_cfg(raw: dict) -> dict:
    """SAELens >= 6 config dict from any SAELens cfg.json (fields already checked)."""
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
    norm = cfg.get("normalize_activations", "none")
    if isinstance(norm, bool) or norm is None:
        norm = "expected_average_only_in" if norm else "none"
    cfg.update(architecture=arch, normalize_activations=norm, metadata=meta)
    return cfg


def load_sae(path: str | os.PathLike, *, dtype: str = "float32") -> SparseAutoencoder:
    """Loads a SAELens folder (saved by SAELens or by `save_sae`).

    cfg.json is checked field by field (each field we read must hold its kind
    of value: `"false"` is not false). A TopK SAE saved with
    rescale_acts_by_decoder_norm=True has its decoder norms folded into the
    encoder (exactly the same latents and output).

    Args:
      path: folder with cfg.json and sae_weights.safetensors.
      dtype: dtype of the loaded weights.

    Returns:
      A `SparseAutoencoder`.

    Raises:
      FileNotFoundError: a file is missing.
      ValueError: a field of the wrong kind, an architecture or input
        normalisation we do not implement, or weights whose shapes disagree
        with the config; each names the file.
    """
    path = Path(path)
    for name in (CFG_FILENAME, WEIGHTS_FILENAME):
        if not (path / name).is_file():
            raise FileNotFoundError(f"load_sae: {str(path / name)!r} not found "
                                    "(expected a SAELens folder)")
    raw = read_json(path / CFG_FILENAME)  # invalid JSON fails naming the file
    _check_fields(raw, path / CFG_FILENAME)
    cfg = _normalise_cfg(raw)
    arch = cfg["architecture"]
    if arch not in ARCHITECTURES:
        raise ValueError(f"load_sae: {path / CFG_FILENAME}: architecture {arch!r} is not "
                         f"supported; expected one of {tuple(ARCHITECTURES)}")
    if cfg["normalize_activations"] != "none":
        raise ValueError(
            f"load_sae: normalize_activations={cfg['normalize_activations']!r} is not "
            "supported; fold the normalisation into the weights in SAELens first "
            "(e.g. sae.fold_activation_norm_scaling_factor) and save again")
    try:
        config = SAEConfig(**{
            "d_in": cfg["d_in"], "d_sae": cfg["d_sae"], "architecture": arch,
            "k": cfg.get("k") or 1, "dtype": dtype,
            "apply_b_dec_to_input": cfg.get("apply_b_dec_to_input", True),
            "hook_name": str(cfg["metadata"].get("hook_name") or ""),
            "model_name": str(cfg["metadata"].get("model_name") or ""),
            **architecture(arch).config_from_saelens(cfg)})
    except ValueError as e:
        raise ValueError(f"load_sae: {path / CFG_FILENAME}: {e}") from None
    with reading_safetensors(path / WEIGHTS_FILENAME):  # truncated: fails naming the file
        w = {k: v.astype(np.float32) for k, v in _read_weights(path / WEIGHTS_FILENAME).items()}
    try:
        check_params(w, config)
    except ValueError as e:
        raise ValueError(f"load_sae: {path / WEIGHTS_FILENAME}: {e}") from None
    w = architecture(arch).from_saelens(cfg, w)
    return SparseAutoencoder(config, params=w)
