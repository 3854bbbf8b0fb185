"""Tokenizers from a tokenizer.json or from a GGUF file's metadata.

A GGUF carries no tokenizer.json: it stores the vocabulary, merges (byte-level
BPE) or scores (SentencePiece) and special token ids under llama.cpp's keys.
`Tokenizer.from_gguf` rebuilds the equivalent `tokenizers.Tokenizer` the way
transformers' GGUF support does, so both give the same ids:

- tokenizer.ggml.model "gpt2": byte-level BPE with the file's merges (GPT-2,
  SmolLM2, Llama 3, Qwen 2), split by the pre-tokenizer regex the file names;
- tokenizer.ggml.model "llama": SentencePiece-style BPE with byte fallback.
  Gemma files list no merges; they are rebuilt from the vocabulary with the
  order of the tokens in the file as the merge priority. Building them for a
  262k vocabulary takes seconds, so the result is cached as a tokenizer.json
  in the cache folder (see `cache_dir`) and reused on the next load.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from snmf_jax import _checks, _io

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


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _gguf_cache_path(path: Path | None) -> Path | None:
    """Cache file of the tokenizer built from the GGUF at `path` (keyed by its
    absolute path, size and modification time)."""
    from snmf_jax.models._presets import cache_dir

    if path is None or not path.is_file():
        return None
    st = path.stat()
    key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{_BUILD_VERSION}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return cache_dir() / "tokenizers" / f"{path.stem}-{digest}.json"


class Tokenizer:
    """A `tokenizers.Tokenizer` with the model's special tokens and chat template.

    Attributes:
      backend: the wrapped `tokenizers.Tokenizer`.
      bos_id: beginning-of-sequence id, or None.
      eos_ids: ids that end a generation (the model's EOS first).
      pad_id: padding id, or None (use an EOS id to pad then).
      chat_template: jinja2 chat template, or None.
      adds_bos: whether `encode(..., add_bos=True)` prepends BOS (the
        model's own convention: Gemma yes, SmolLM2 no).
    """

    def __init__(self, backend, *, bos_id: int | None = None,
                 eos_ids: Iterable[int] = (), pad_id: int | None = None,
                 chat_template: str | None = None):
        self.backend = backend
        self.bos_id = None if bos_id is None else int(bos_id)
        self.eos_ids = tuple(dict.fromkeys(int(i) for i in eos_ids))
        self.pad_id = None if pad_id is None else int(pad_id)
        self.chat_template = chat_template or None
        with_bos = backend.encode("", add_special_tokens=True).ids
        self.adds_bos = self.bos_id is not None and self.bos_id in with_bos

    # -- construction -----------------------------------------------------

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "Tokenizer":
        """Loads a tokenizer.json (and the tokenizer_config.json,
        special_tokens_map.json, chat_template.jinja, generation_config.json and
        config.json beside it, when present, for special tokens and the chat
        template).

        Args:
          path: a tokenizer.json file, or the folder holding it.

        Returns:
          The Tokenizer.
        """
        from tokenizers import Tokenizer as Backend

        path = Path(path)
        if path.is_dir():
            path = path / "tokenizer.json"
        if not path.is_file():
            raise FileNotFoundError(
                f"tokenizer file not found: {path} (a Hugging Face folder needs a "
                f"tokenizer.json; slow sentencepiece/vocab.txt tokenizers are not "
                f"supported: save one with AutoTokenizer.from_pretrained(...)"
                f".save_pretrained(folder))")
        try:
            backend = Backend.from_file(str(path))
        except Exception as e:
            raise ValueError(f"{path} is not a valid tokenizer.json: {e}") from None
        folder = path.parent

        def read_json(name):
            # An invalid file is an error, not a warning: ignoring it would lose
            # the special tokens and the chat template without a word.
            f = folder / name
            if not f.is_file():
                return {}
            obj = _io.read_json(f)
            if not isinstance(obj, dict):
                raise ValueError(f"{f}: expected a JSON object; got {type(obj).__name__}")
            return obj

        tcfg = {**read_json("special_tokens_map.json"), **read_json("tokenizer_config.json")}
        gen, mcfg = read_json("generation_config.json"), read_json("config.json")

        def token_id(value):
            if isinstance(value, dict):
                value = value.get("content")
            return None if value is None else backend.token_to_id(str(value))

        def ids(value):
            if value is None:
                return []
            return [int(v) for v in (value if isinstance(value, list) else [value])]

        bos = token_id(tcfg.get("bos_token"))
        bos = bos if bos is not None else mcfg.get("bos_token_id")
        if ("add_bos_token" in tcfg or "add_eos_token" in tcfg
                or backend.post_processor is None):
            # As transformers does: explicit flags (default off) rebuild the template.
            eos_id = token_id(tcfg.get("eos_token"))
            backend.post_processor = _post_processor(
                None if bos is None else backend.id_to_token(bos), bos,
                None if eos_id is None else backend.id_to_token(eos_id), eos_id,
                bool(tcfg.get("add_bos_token", False)), bool(tcfg.get("add_eos_token", False)))
        eos = [token_id(tcfg.get("eos_token"))] + ids(gen.get("eos_token_id")) + ids(
            mcfg.get("eos_token_id"))
        pad = token_id(tcfg.get("pad_token"))
        template = tcfg.get("chat_template")
        if (folder / "chat_template.jinja").is_file():
            template = (folder / "chat_template.jinja").read_text(encoding="utf-8")
        if isinstance(template, list):  # [{"name": "default", "template": ...}, ...]
            named = {t.get("name"): t.get("template") for t in template}
            template = named.get("default") or next(iter(named.values()), None)
        return cls(backend, bos_id=bos, eos_ids=[e for e in eos if e is not None],
                   pad_id=pad, chat_template=template)

    @classmethod
    def from_gguf(cls, path_or_reader, *, cache: bool = True) -> "Tokenizer":
        """Builds the tokenizer a GGUF file describes.

        Args:
          path_or_reader: a .gguf path, a `GGUFFile` (from `read_gguf`) or a
            `gguf.GGUFReader`.
          cache: reuse / store the built tokenizer.json in
            `<cache_dir>/tokenizers/` (keyed by the file's path, size and
            modification time).

        Returns:
          The Tokenizer.
        """
        from tokenizers import Tokenizer as Backend

        path, md = _metadata_of(path_or_reader)
        where = str(path) if path else "the GGUF file"
        cache_file = _gguf_cache_path(path) if cache else None
        backend = None
        if cache_file is not None and cache_file.is_file():
            try:
                backend = Backend.from_file(str(cache_file))
            except Exception:  # a stale or foreign file: rebuild
                backend = None
        if backend is None:
            backend = _build_from_gguf(md, where)
            if cache_file is not None:
                try:
                    _atomic_write_text(cache_file, backend.to_str())
                except OSError as e:
                    warnings.warn(f"could not cache the tokenizer at {cache_file}: {e}")

        tokens = md["tokenizer.ggml.tokens"]

        def get_id(key):
            value = md.get(f"tokenizer.ggml.{key}")
            return None if value is None else int(value)

        bos, eos, pad = get_id("bos_token_id"), get_id("eos_token_id"), get_id("padding_token_id")
        # llama.cpp adds BOS to SentencePiece vocabularies unless told otherwise.
        default_bos = md.get("tokenizer.ggml.model") == "llama"
        add_bos = bool(md.get("tokenizer.ggml.add_bos_token", default_bos))
        add_eos = bool(md.get("tokenizer.ggml.add_eos_token", False))
        backend.post_processor = _post_processor(
            None if bos is None else tokens[bos], bos,
            None if eos is None else tokens[eos], eos, add_bos, add_eos)
        types = md.get("tokenizer.ggml.token_type")
        ends = [eos, get_id("eot_token_id"), get_id("eom_token_id")]
        if types is not None:
            ends += [i for i, t in enumerate(tokens)
                     if t in _END_OF_GENERATION and int(types[i]) == _CONTROL]
        return cls(backend, bos_id=bos, eos_ids=[e for e in ends if e is not None],
                   pad_id=pad, chat_template=md.get("tokenizer.chat_template"))

    # -- use ------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        """Number of token ids (including added tokens)."""
        return self.backend.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str, add_bos: bool = True) -> list[int]:
        """Token ids of `text`.

        Args:
          text: the string. Special tokens written in it (e.g. "<|im_start|>")
            become their ids.
          add_bos: add the special tokens the model's tokenizer adds (BOS for
            Gemma; nothing for SmolLM2, whose tokenizer adds none). See
            `adds_bos`.

        Returns:
          The ids.
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be a str; got {type(text).__name__}")
        return self.backend.encode(text, add_special_tokens=add_bos).ids

    def encode_batch(self, texts: Sequence[str], add_bos: bool = True) -> list[list[int]]:
        """`encode` for many strings (in parallel, in Rust)."""
        if isinstance(texts, str):
            raise TypeError("texts must be a sequence of strings, not one str")
        return [e.ids for e in self.backend.encode_batch(list(texts),
                                                        add_special_tokens=add_bos)]

    def decode(self, ids: Iterable[int], skip_special: bool = False) -> str:
        """The text of `ids` (special tokens dropped when skip_special)."""
        ids = _checks.token_ids("ids", list(ids), self.vocab_size)
        return self.backend.decode(ids.tolist(), skip_special_tokens=skip_special)

    def id_to_token(self, i: int) -> str:
        """The vocabulary string of id `i`."""
        token = self.backend.id_to_token(int(i))
        if token is None:
            raise IndexError(f"token id {i} is out of range [0, {self.vocab_size})")
        return token

    def token_to_id(self, token: str) -> int | None:
        """The id of a vocabulary string, or None."""
        return self.backend.token_to_id(token)

    def apply_chat_template(self, messages: Sequence[Mapping[str, str]],
                            add_generation_prompt: bool = True, **kwargs) -> str:
        """Renders a conversation with the model's chat template (jinja2).

        Encode the result with `add_bos=False` when the template writes BOS
        itself (Gemma's does).

        Args:
          messages: [{"role": "user" | "assistant" | "system", "content": str}, ...].
          add_generation_prompt: end with the assistant turn's opening.
          **kwargs: extra template variables.

        Returns:
          The prompt text.
        """
        if not self.chat_template:
            raise ValueError(
                "this tokenizer has no chat template (the model file does not define "
                "one; base models usually do not); format the prompt yourself")
        try:
            import jinja2
            import jinja2.ext  # a submodule: `import jinja2` alone may not load it
            from jinja2.sandbox import ImmutableSandboxedEnvironment
        except ImportError:
            raise ImportError("apply_chat_template needs jinja2: pip install jinja2") from None
        for i, m in enumerate(messages):
            if not isinstance(m, Mapping) or "role" not in m or "content" not in m:
                raise ValueError(f"messages[{i}] must be a mapping with 'role' and "
                                 f"'content'; got {m!r}")

        def raise_exception(message):
            raise jinja2.exceptions.TemplateError(message)

        def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
            return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent,
                              separators=separators, sort_keys=sort_keys)

        def strftime_now(fmt):
            import datetime
            return datetime.datetime.now().strftime(fmt)

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                            extensions=[jinja2.ext.loopcontrols])
        env.filters["tojson"] = tojson
        env.globals.update(raise_exception=raise_exception, strftime_now=strftime_now)
        special = lambda i: None if i is None else self.backend.id_to_token(i)
        variables = dict(bos_token=special(self.bos_id),
                         eos_token=special(self.eos_ids[0] if self.eos_ids else None),
                         pad_token=special(self.pad_id))
        variables.update(kwargs)
        return env.from_string(self.chat_template).render(
            messages=[dict(m) for m in messages],
            add_generation_prompt=add_generation_prompt, **variables)

    def __repr__(self) -> str:
        return (f"Tokenizer(vocab_size={self.vocab_size}, bos_id={self.bos_id}, "
                f"eos_ids={self.eos_ids}, pad_id={self.pad_id}, adds_bos={self.adds_bos}, "
                f"chat_template={'yes' if self.chat_template else 'no'})")
