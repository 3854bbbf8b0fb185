"""Stand-in tokenizers for tiny models: character-level ones (no files) and a
word-level `models.Tokenizer` (real `tokenizers` backend, in memory or on disk)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from snmf_jax.models import Tokenizer


class CharTokenizer:
    """Character-level stand-in for the `models.Tokenizer` contract.

    PAD 0, EOS 1, BOS 2; character c is id 3 + ord(c) % 60, so every id fits
    the tiny model's vocabulary of 64. Many characters share an id, so
    decoding is not the inverse of encoding (see `InvertibleTokenizer`).

    Args:
      chat_template: a `str.format` pattern with `{content}` (one user
        message), or None: no chat template.
      decode_ids: decode to the ids joined by spaces (tests that check which
        tokens were generated), instead of one letter per id.
    """

    bos_id, eos_ids, pad_id = 2, (1,), 0

    def __init__(self, chat_template: str | None = None, decode_ids: bool = False):
        self.chat_template = chat_template
        self.decode_ids = decode_ids

    def encode(self, text: str, add_bos: bool = True) -> list[int]:
        return ([self.bos_id] if add_bos else []) + [3 + ord(c) % 60 for c in text]

    def encode_batch(self, texts: Sequence[str], add_bos: bool = True) -> list[list[int]]:
        return [self.encode(t, add_bos) for t in texts]

    def decode(self, ids, skip_special: bool = False) -> str:
        if self.decode_ids:
            return " ".join(str(i) for i in ids)
        return "".join(chr(97 + i % 26) for i in ids)

    def apply_chat_template(self, messages, add_generation_prompt: bool = True) -> str:
        # No check for a missing template: callers must check `chat_template`
        # themselves (as models.Tokenizer's do), and tests see if they do not.
        return self.chat_template.format(content=messages[0]["content"])


class InvertibleTokenizer:
    """One id per character of `CHARS` (ids 3..39; others dropped, text
    lower-cased), so decoding inverts encoding and token offsets are recoverable."""

    CHARS = " abcdefghijklmnopqrstuvwxyz0123456789"
    bos_id, eos_ids, pad_id, chat_template = 2, (1,), 0, None

    def encode(self, text: str, add_bos: bool = True) -> list[int]:
        return ([2] if add_bos else []) + [3 + self.CHARS.index(c) for c in text.lower()
                                           if c in self.CHARS]

    def encode_batch(self, texts: Sequence[str], add_bos: bool = True) -> list[list[int]]:
        return [self.encode(t, add_bos) for t in texts]

    def decode(self, ids, skip_special: bool = False) -> str:
        return "".join(self.CHARS[i - 3] for i in ids if 3 <= i < 3 + len(self.CHARS))


WORDS = tuple("the a cat dog sat ran on under mat rug red blue green big small quick slow "
              "over fox jumps lazy bird sings tree house river flows past old mill".split())


def word_tokenizer(words: Sequence[str] = WORDS) -> Tokenizer:
    """A word-level `models.Tokenizer`: <pad> 0, <bos> 1 (prepended), <unk> 2,
    "." 3, then `words` in order; split on whitespace and punctuation."""
    from tokenizers import Tokenizer as Backend, models, pre_tokenizers, processors
    vocab = {"<pad>": 0, "<bos>": 1, "<unk>": 2, ".": 3}
    for w in words:
        vocab.setdefault(w, len(vocab))
    backend = Backend(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.add_special_tokens(["<pad>", "<bos>"])
    backend.post_processor = processors.TemplateProcessing(
        single="<bos> $A", special_tokens=[("<bos>", 1)])
    return Tokenizer(backend, bos_id=1, pad_id=0)


def word_texts(n: int = 22, seed: int = 0, words: Sequence[str] = WORDS) -> list[str]:
    """n random sentences of 2..13 of `words`, each ending in " ."."""
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(list(words), rng.integers(2, 14))) + " ." for _ in range(n)]


def write_word_level_json(folder: str | os.PathLike) -> Path:
    """Writes a 5-token tokenizer.json (<s> 0, </s> 1, "a" 2, "b" 3, [UNK] 4;
    no special-token files beside it) into `folder`, as a loader reads one.

    Returns:
      The file's path (`Tokenizer.from_file` takes it or the folder).
    """
    from tokenizers import Tokenizer as Backend, models, pre_tokenizers
    t = Backend(models.WordLevel({"<s>": 0, "</s>": 1, "a": 2, "b": 3, "[UNK]": 4},
                                 unk_token="[UNK]"))
    t.pre_tokenizer = pre_tokenizers.Whitespace()
    path = Path(folder) / "tokenizer.json"
    t.save(str(path))
    return path
