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

import json
import os
import warnings
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from snmf_jax import _checks, _io
from snmf_jax.models._tokenizer_gguf import (_CONTROL, _END_OF_GENERATION, _build_from_gguf,
                                             _gguf_cache_path, _metadata_of, _post_processor)


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
                    _io.atomic_write_bytes(cache_file, backend.to_str().encode())
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
