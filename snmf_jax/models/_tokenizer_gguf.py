"""Rebuilding a `tokenizers.Tokenizer` from a GGUF file's metadata.

The pieces `Tokenizer.from_gguf` (in `_tokenizer`) assembles: the byte-level
BPE or SentencePiece-style model from llama.cpp's keys, the pre-tokenizer split
a file names, the BOS/EOS post-processor and the cache path of a built
tokenizer.json (see `_tokenizer`'s docstring for the construction).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from snmf_jax import _digest

# Bump when the GGUF -> tokenizer.json construction changes (invalidates caches).
_BUILD_VERSION = 1

_CONTROL, _USER_DEFINED = 3, 4  # llama.cpp token types

# Pre-tokenizer splits for byte-level vocabularies, by tokenizer.ggml.pre.
# Files not listed use GPT-2's own regex (ByteLevel's default).
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_PRE_SPLITS = {
    **dict.fromkeys(("llama3", "llama-v3", "llama-bpe", "falcon3", "smaug-bpe", "dbrx"),
                    _LLAMA3_SPLIT),
    **dict.fromkeys(("qwen2", "deepseek-r1-qwen"), _QWEN2_SPLIT),
}
# Control tokens that end a generation, as llama.cpp recognises them by text.
_END_OF_GENERATION = frozenset(("<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>",
                      "<|endoftext|>", "<|eom_id|>", "<EOT>"))


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character table."""
    bs = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
          + list(range(ord("®"), ord("ÿ") + 1)))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def _merges_from_vocab(vocab: Mapping[str, int],
                       scores: Mapping[str, float]) -> list[tuple[str, str]]:
    """BPE merges implied by a SentencePiece vocabulary.

    Every split of a token into two vocabulary tokens is a merge, ranked by the
    merged token's score (highest first), then by longer left piece, then
    by file order: transformers' `generate_merges`, so ids agree with it.

    Args:
      vocab: token -> id.
      scores: token -> merge priority, in file order (Gemma: minus the
        token's position; others: the SentencePiece score).

    Returns:
      (left, right) pairs, highest priority first.
    """
    merges = []
    for token, score in scores.items():
        local = [(token[:k], token[k:]) for k in range(1, len(token))
                 if token[:k] in vocab and token[k:] in vocab]
        local.sort(key=lambda lr: (vocab[lr[0]], vocab[lr[1]]))
        merges.extend((score, left, right) for left, right in local)
    merges.sort(key=lambda m: (m[0], len(m[1]), len(m[2])), reverse=True)
    return [(left, right) for _, left, right in merges]


def _metadata_of(source) -> tuple[Path | None, Mapping[str, Any]]:
    """(path, metadata) of a GGUF path, a GGUFFile or a gguf.GGUFReader."""
    from snmf_jax.models._gguf import GGUFFile, read_gguf

    if isinstance(source, GGUFFile):
        return source.path, source.metadata
    if isinstance(source, (str, os.PathLike)):
        gf = read_gguf(source)
        gf.close()  # the metadata is plain Python / numpy copies
        return gf.path, gf.metadata
    if hasattr(source, "fields"):  # gguf.GGUFReader
        md = {key: field.contents() for key, field in source.fields.items()
              if key.startswith(("tokenizer.", "general.architecture"))}
        filename = getattr(getattr(source, "data", None), "filename", None)
        return (Path(filename) if filename else None), md
    raise TypeError(f"path_or_reader must be a path, a GGUFFile or a gguf.GGUFReader; "
                    f"got {type(source).__name__}")


def _build_from_gguf(md: Mapping[str, Any], where: str):
    """A `tokenizers.Tokenizer` equivalent to transformers' GGUF conversion."""
    from tokenizers import AddedToken, Regex, decoders, models, normalizers, pre_tokenizers
    from tokenizers import Tokenizer as Backend

    kind = md.get("tokenizer.ggml.model")
    tokens = md.get("tokenizer.ggml.tokens")
    if kind is None or tokens is None:
        raise ValueError(f"{where} has no tokenizer (tokenizer.ggml.model / "
                         f"tokenizer.ggml.tokens metadata are missing)")
    tokens = list(tokens)
    types = list(md.get("tokenizer.ggml.token_type", ()))
    arch = md.get("general.architecture", "")

    def special(key):
        i = md.get(f"tokenizer.ggml.{key}")
        return None if i is None else tokens[int(i)]

    if kind == "gpt2":
        spelling = _bytes_to_unicode()
        alphabet = set(spelling.values())
        vocab = {t if set(t) <= alphabet else "".join(spelling[b] for b in t.encode("utf-8")): i
                 for i, t in enumerate(tokens)}
        merges = [tuple(m.split(" ")) for m in md.get("tokenizer.ggml.merges", ())]
        backend = Backend(models.BPE(vocab=vocab, merges=merges, dropout=None,
                                     continuing_subword_prefix="", end_of_word_suffix="",
                                     fuse_unk=False))
        split = _PRE_SPLITS.get(md.get("tokenizer.ggml.pre"))
        if split is None:
            backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        else:
            backend.pre_tokenizer = pre_tokenizers.Sequence([
                pre_tokenizers.Split(Regex(split), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
        backend.decoder = decoders.ByteLevel()
        control_ok = lambda t: set(t) <= alphabet  # others are llama.cpp mislabels
    elif kind == "llama":
        unk = special("unknown_token_id") or "<unk>"
        if arch in ("gemma", "gemma2", "gemma3"):
            # Runs of spaces are stored as spaces; the normalizer sees "▁"s.
            tokens = ["\u2581" * len(t) if " " in t and not t.strip() else t for t in tokens]
            vocab = {t: i for i, t in enumerate(tokens)}
            # Gemma's scores do not follow its merge order; file order does.
            merges = _merges_from_vocab(vocab, {t: -i for i, t in enumerate(tokens)})
            backend = Backend(models.BPE(vocab=vocab, merges=merges, fuse_unk=True,
                                         unk_token=unk, dropout=None, byte_fallback=True))
            backend.normalizer = normalizers.Replace(" ", "\u2581")
            backend.pre_tokenizer = pre_tokenizers.Split(" ", behavior="merged_with_previous")
            steps = []
        else:
            vocab = {t: i for i, t in enumerate(tokens)}
            scores = md.get("tokenizer.ggml.scores")
            if scores is None:
                raise ValueError(f"{where}: a SentencePiece tokenizer needs "
                                 f"tokenizer.ggml.scores, which is missing")
            merges = _merges_from_vocab(vocab, dict(zip(tokens, map(float, scores))))
            backend = Backend(models.BPE(vocab=vocab, merges=merges, fuse_unk=True,
                                         unk_token=unk, dropout=None, byte_fallback=True))
            prefix = bool(md.get("tokenizer.ggml.add_space_prefix", True))
            backend.pre_tokenizer = pre_tokenizers.Metaspace(
                replacement="\u2581", prepend_scheme="first" if prefix else "never",
                split=False)
            steps = [decoders.Strip(content=" ", left=1)] if prefix else []
        backend.decoder = decoders.Sequence(
            [decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(), *steps])
        control_ok = lambda t: True
    else:
        raise ValueError(f"{where}: unsupported tokenizer.ggml.model {kind!r}; "
                         f"supported: 'gpt2' (byte-level BPE), 'llama' (SentencePiece)")

    named = [special(k) for k in ("bos_token_id", "eos_token_id", "unknown_token_id",
                                  "padding_token_id")]
    control = [t for t, ty in zip(tokens, types) if ty == _CONTROL and control_ok(t)]
    control += [t for t in named if t is not None and t not in control]
    backend.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in control])
    vocab = backend.get_vocab()
    user = [t for t, ty in zip(tokens, types) if ty == _USER_DEFINED and t in vocab]
    if user:
        backend.add_tokens([AddedToken(t, normalized=False, special=False) for t in user])
    return backend


def _post_processor(bos: str | None, bos_id: int | None, eos: str | None,
                    eos_id: int | None, add_bos: bool, add_eos: bool):
    from tokenizers import processors

    add_bos = add_bos and bos is not None
    add_eos = add_eos and eos is not None
    single = " ".join(([f"{bos}:0"] if add_bos else []) + ["$A:0"]
                      + ([f"{eos}:0"] if add_eos else []))
    pair = " ".join([single] + ([f"{bos}:1"] if add_bos else []) + ["$B:1"]
                    + ([f"{eos}:1"] if add_eos else []))
    specials = ([(bos, bos_id)] if add_bos else []) + ([(eos, eos_id)] if add_eos else [])
    return processors.TemplateProcessing(single=single, pair=pair, special_tokens=specials)


def _gguf_cache_path(path: Path | None) -> Path | None:
    """Cache file of the tokenizer built from the GGUF at `path` (keyed by its
    absolute path, size and modification time)."""
    from snmf_jax.models._presets import cache_dir

    if path is None or not path.is_file():
        return None
    st = path.stat()
    key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{_BUILD_VERSION}"
    digest = _digest.sha256_bytes(key.encode())[:16]
    return cache_dir() / "tokenizers" / f"{path.stem}-{digest}.json"
