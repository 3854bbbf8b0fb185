"""`load_model`: a preset name, a .gguf file, a Hugging Face folder or hub id.

Everything loads offline. Hub ids resolve through huggingface_hub's local
cache (downloading only when the network is allowed); without it the error
says how to fetch the folder and pass its path instead.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from snmf_jax import _chunks, _io
from snmf_jax.models._gguf import read_gguf
from snmf_jax.models._gguf_params import config_from_gguf, params_from_gguf
from snmf_jax.models._hf import config_from_hf
from snmf_jax.models._hf_params import params_from_hf
from snmf_jax.models._model import Model
from snmf_jax.models._presets import PRESETS
from snmf_jax.models._tokenizer import Tokenizer

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")

# safetensors dtype -> numpy dtype (BF16 / F8 through ml_dtypes, a jax dependency).
_ST_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
              "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8",
              "BOOL": "bool", "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2"}


def _np_dtype(name: str) -> np.dtype:
    try:
        return np.dtype(name)
    except TypeError:
        import ml_dtypes
        return np.dtype(getattr(ml_dtypes, name))


def read_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Memory-maps a .safetensors file into numpy arrays (any dtype, bf16 too).

    Args:
      path: the file.

    Returns:
      name -> read-only array backed by the file.

    Raises:
      ValueError: the file is truncated or not safetensors.
    """
    path = _io.regular_file(path)  # a FIFO among the shards would block the open
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ValueError(f"{path} is not a safetensors file: only {size} bytes")
        n = int.from_bytes(head, "little")
        if n > size - 8 or n > 100_000_000:
            raise ValueError(f"{path} is truncated or not a safetensors file (header "
                             f"length {n}, file size {size})")
        try:
            header = json.loads(f.read(n))
        except ValueError as e:
            raise ValueError(f"{path} is not a safetensors file: bad header ({e})") from None
    header.pop("__metadata__", None)
    data = np.memmap(path, np.uint8, mode="r") if size > 8 + n else np.zeros(0, np.uint8)
    out = {}
    for name, info in header.items():
        try:
            dtype = _np_dtype(_ST_DTYPES[info["dtype"]])
            begin, end = (8 + n + int(o) for o in info["data_offsets"])
            shape = tuple(int(s) for s in info["shape"])
        except (KeyError, TypeError, ValueError, AttributeError):
            raise ValueError(f"{path}: unsupported or malformed entry for tensor "
                             f"{name!r}: {info!r}") from None
        if end > size or end - begin != int(np.prod(shape, dtype=np.int64)) * dtype.itemsize:
            raise ValueError(f"{path} is truncated or corrupted: tensor {name!r} needs "
                             f"bytes {begin}..{end} of {size}")
        out[name] = data[begin:end].view(dtype).reshape(shape)
    return out


def _short(value: Any) -> str:
    """A JSON value for a one-line message, cut to 60 characters."""
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _hf_weights(folder: Path) -> dict[str, np.ndarray]:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        doc = _io.read_json(index)
        weight_map = doc.get("weight_map") if isinstance(doc, dict) else None
        if not isinstance(weight_map, dict):
            raise ValueError(f"{index}: expected an object whose \"weight_map\" maps tensor "
                             f"names to shard file names; got {_short(doc)}")
        bad = [(k, v) for k, v in weight_map.items() if not isinstance(v, str)]
        if bad:
            raise ValueError(f"{index}: weight_map must map tensor names to shard file "
                             f"names; got {_short(dict(bad[:1]))}")
        shards = sorted(set(weight_map.values()))
        files = [_chunks.listed_path(folder, s, index, "shard file name") for s in shards]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise FileNotFoundError(f"{folder}: shards listed in {index.name} are missing: "
                                    f"{', '.join(missing)}")
    elif (folder / "model.safetensors").is_file():
        files = [folder / "model.safetensors"]
    else:
        files = sorted(folder.glob("*.safetensors"))
    if not files:
        pickled = sorted(p.name for p in folder.glob("*.bin"))
        hint = (f" (found {', '.join(pickled)}: pickle-based checkpoints are not loaded; "
                f"re-save with save_pretrained(..., safe_serialization=True))"
                if pickled else "")
        raise FileNotFoundError(f"{folder} has no model.safetensors{hint}")
    state: dict[str, np.ndarray] = {}
    for f in files:
        state.update(read_safetensors(f))
    return state


def _load_hf_folder(folder: Path, dtype, tokenizer: bool, name: str):
    cfg_file = folder / "config.json"
    config_dict = _io.read_json(cfg_file)
    if not isinstance(config_dict, dict):
        raise ValueError(f"{cfg_file}: expected a JSON object; got {_short(config_dict)}")
    try:
        config = config_from_hf(config_dict)
    except ValueError as e:
        raise ValueError(f"cannot load {folder}: {e}") from None
    tok = None
    if tokenizer:
        if not (folder / "tokenizer.json").is_file():
            raise FileNotFoundError(
                f"{folder} has no tokenizer.json. Save one beside the weights "
                f"(AutoTokenizer.from_pretrained(...).save_pretrained('{folder}')), or "
                f"pass tokenizer=False to load the weights alone")
        tok = Tokenizer.from_file(folder / "tokenizer.json")
    params = params_from_hf(config, _hf_weights(folder), dtype)
    return Model(config=config, params=params, tokenizer=tok, name=name)


def _load_gguf(path: Path, dtype, tokenizer: bool, name: str, progress: bool):
    gf = read_gguf(path)
    try:
        config = config_from_gguf(gf)
        tok = Tokenizer.from_gguf(gf) if tokenizer else None
        params = params_from_gguf(gf, config, np.dtype(dtype), progress=progress)
    finally:
        gf.close()
    # Zero-copy on CPU: the loader allocates 64-byte aligned buffers.
    params = jax.device_put(params)
    return Model(config=config, params=params, tokenizer=tok, name=name)


def _from_hub(repo_id: str, download: bool) -> Path:
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise FileNotFoundError(
            f"{repo_id!r} is not a preset ({', '.join(PRESETS)}) nor a local path, and "
            f"huggingface_hub is not installed to resolve it as a hub id") from None
    try:
        offline = {} if download else {"local_files_only": True}  # the cache alone
        return Path(snapshot_download(
            repo_id, allow_patterns=["*.json", "*.safetensors", "*.jinja"], **offline))
    except Exception as e:  # offline, not cached, gated, unknown repo, network
        if not download:
            raise FileNotFoundError(
                f"{repo_id!r} is not a preset ({', '.join(PRESETS)}), a local path nor in "
                f"the local Hugging Face cache, and a model named by a file is never "
                f"downloaded") from None
        raise FileNotFoundError(
            f"could not get the Hugging Face model {repo_id!r} ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else 'no detail'}). snmf-jax works "
            f"offline: download the folder where you have network access, e.g.\n"
            f"    huggingface-cli download {repo_id} --local-dir ./{repo_id.split('/')[-1]}\n"
            f"and pass its path: load_model('./{repo_id.split('/')[-1]}')") from None


def load_model(name_or_path: str | os.PathLike, dtype: Any = jnp.float32, *,
               tokenizer: bool = True, progress: bool = True, download: bool = True):
    """Loads a model with its weights and tokenizer.

    Args:
      name_or_path: one of
        - a preset name: "smollm2-135m", "gemma3-270m" (see `PRESETS`);
        - a .gguf file (llama.cpp; architectures llama, gemma2, gemma3, gpt2;
          any quantization, dequantized on load);
        - a Hugging Face folder: config.json, model.safetensors (or shards
          with model.safetensors.index.json) and tokenizer.json;
        - a Hugging Face hub id "org/name", resolved from the local hub cache
          (and downloaded only when huggingface_hub may use the network).
      dtype: dtype of the weights (float32 by default; jnp.bfloat16 halves
        the memory).
      tokenizer: also load the tokenizer (an error when there is none).
      progress: show progress bars.
      download: a hub id may be downloaded (when huggingface_hub may use the
        network). Pass False for a name read from a file (a store manifest,
        a result header): then only presets, local paths and the local hub
        cache resolve, and nothing reaches a network the user did not ask for.

    Returns:
      A `Model`.

    Raises:
      FileNotFoundError: unknown name, missing file, or a missing tokenizer.
      ModuleNotFoundError: a preset whose package is not installed (the
        message gives the pip command).
      ValueError: unsupported architecture, corrupted or truncated file.
    """
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(f"name_or_path must be a str or a path; got "
                        f"{type(name_or_path).__name__}")
    try:
        np.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype must be a floating dtype such as jnp.float32; got "
                        f"{dtype!r}") from None
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"dtype must be a floating dtype such as jnp.float32; got {dtype!r}")
    key = os.fspath(name_or_path)
    if key in PRESETS:
        return _load_gguf(PRESETS[key].path(), dtype, tokenizer, key, progress)
    path = Path(key).expanduser()
    if path.is_file():
        with open(path, "rb") as f:
            is_gguf = f.read(4) == b"GGUF"
        if is_gguf or path.suffix == ".gguf":
            return _load_gguf(path, dtype, tokenizer, str(path), progress)
        raise ValueError(f"{path} is neither a .gguf file nor a folder; pass a GGUF "
                         f"file, a Hugging Face folder or a preset "
                         f"({', '.join(PRESETS)})")
    if path.is_dir():
        if (path / "config.json").is_file():
            return _load_hf_folder(path, dtype, tokenizer, str(path))
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            return _load_gguf(ggufs[0], dtype, tokenizer, str(ggufs[0]), progress)
        raise FileNotFoundError(
            f"{path} has no config.json (a Hugging Face folder) and "
            f"{'several' if ggufs else 'no'} .gguf files; pass the file itself")
    if _HUB_ID.match(key) and path.suffix != ".gguf":
        return _load_hf_folder(_from_hub(key, download), dtype, tokenizer, key)
    if path.suffix == ".gguf" or os.sep in key or key.startswith((".", "~")):
        raise FileNotFoundError(f"no such file or folder: {path}")
    raise FileNotFoundError(
        f"unknown model {key!r}: not a preset ({', '.join(PRESETS)}), not an existing "
        f"file or folder, and not a hub id of the form 'org/name'")
