"""The plan of an export: tokens with character offsets, length buckets, batches.

Decided before the first forward pass, so that a rerun makes the very same
batches and can resume (see `_export`).
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import NamedTuple, Sequence

import numpy as np

from snmf_jax import _digest


# ---------------------------------------------------------------------------
# Tokenization with character offsets.


_TOKENIZE_SLICE = 2048


def _backend(tokenizer):
    """The `tokenizers.Tokenizer` behind a tokenizer, or None."""
    import tokenizers
    if isinstance(tokenizer, tokenizers.Tokenizer):
        return tokenizer
    backend = getattr(tokenizer, "backend", None)
    return backend if isinstance(backend, tokenizers.Tokenizer) else None


def _offsets_by_search(tokenizer, text: str, ids: Sequence[int]) -> np.ndarray:
    """Character spans of tokens found by decoding each one and searching."""
    spans = np.zeros((len(ids), 2), np.int32)
    cursor = 0
    for i, t in enumerate(ids):
        piece = tokenizer.decode([int(t)])
        key = piece.strip() or piece
        pos = text.find(key, cursor) if key else -1
        if pos < 0 or pos - cursor > len(piece) + 8:
            spans[i] = (cursor, cursor)
        else:
            spans[i] = (pos, pos + len(key))
            cursor = pos + len(key)
    return spans


def tokenize_with_offsets(tokenizer, texts: Sequence[str], add_bos: bool = True
                          ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Token ids and character spans of each text.

    The ids are exactly `tokenizer.encode(text, add_bos=add_bos)`: BOS is
    added only where the model's tokenizer adds it (Gemma yes, SmolLM2 no).
    Spans come from the wrapped `tokenizers.Tokenizer` (`tokenizer.backend`);
    without one, each decoded token is looked up in the text.

    Args:
      tokenizer: a `snmf_jax.models.Tokenizer` (or a bare `tokenizers.Tokenizer`).
      texts: the documents.
      add_bos: add the special tokens the tokenizer adds (its BOS).

    Returns:
      Per text (ids (T,) int32, offsets (T, 2) int32 [start, end) into the
      text; special tokens get an empty span).
    """
    texts = list(texts)
    backend = _backend(tokenizer)
    if backend is not None:
        out = []
        # Slices bound the Rust-side Encoding objects (~100 bytes per token).
        for k in range(0, len(texts), _TOKENIZE_SLICE):
            for e in backend.encode_batch(texts[k:k + _TOKENIZE_SLICE],
                                          add_special_tokens=add_bos):
                offs = np.asarray(e.offsets, np.int32).reshape(-1, 2)  # (T, 2)
                special = np.asarray(e.special_tokens_mask, bool)
                offs[special] = offs[special][:, :1]  # added specials: empty span
                out.append((np.asarray(e.ids, np.int32), offs))
        if backend is tokenizer or all(
                list(tokenizer.encode(texts[j], add_bos=add_bos)) == out[j][0].tolist()
                for j in range(min(len(texts), 4))):
            return out
    return [(np.asarray(ids, np.int32), _offsets_by_search(tokenizer, text, ids))
            for text, ids in zip(texts, tokenizer.encode_batch(texts, add_bos=add_bos))]


# ---------------------------------------------------------------------------
# Planning.


def length_buckets(max_length: int, min_bucket: int = 16) -> tuple[int, ...]:
    """Padded lengths: powers of two from `min_bucket` below `max_length`, then it.

    >>> length_buckets(100)
    (16, 32, 64, 100)
    """
    out, b = [], min_bucket
    while b < max_length:
        out.append(b)
        b *= 2
    out.append(max_length)
    return tuple(out)


class _Batch(NamedTuple):
    length: int              # padded length T of the bucket
    docs: tuple[int, ...]    # doc ids, at most batch_size
    row_start: int           # first export row of this batch
    rows: int                # rows this batch yields


@dataclasses.dataclass(frozen=True)
class _Plan:
    tokens: list             # per doc (ids, offsets), truncated
    first: np.ndarray        # per doc first kept position (1 drops its BOS)
    batches: tuple[_Batch, ...]
    n_rows: int
    buckets: tuple[int, ...]
    digest: str              # SHA-256 of every doc's token ids and first position


def _plan(tokenized, *, max_length: int, batch_size: int, drop_id: int | None,
          min_bucket: int) -> _Plan:
    """Truncates, buckets and batches the tokenized documents.

    Args:
      tokenized: per doc (ids, offsets).
      max_length: longest kept document (tokens).
      batch_size: documents per batch.
      drop_id: a document starting with this id (BOS) loses that row; None
        keeps every row.
      min_bucket: shortest padded length.
    """
    truncated, dropped = 0, 0
    tokens = []
    for ids, offs in tokenized:
        if len(ids) > max_length:
            truncated += 1
            dropped += len(ids) - max_length
            ids, offs = ids[:max_length], offs[:max_length]
        tokens.append((ids, offs))
    if truncated:
        warnings.warn(
            f"{truncated} document(s) longer than max_length={max_length} tokens were "
            f"truncated ({dropped} tokens dropped); raise max_length (at most the "
            "model's context) or split long documents to keep them", stacklevel=3)
    first = np.asarray([int(drop_id is not None and len(ids) > 0 and ids[0] == drop_id)
                        for ids, _ in tokens], np.int64)
    lengths = np.asarray([len(ids) for ids, _ in tokens], np.int64)
    buckets = length_buckets(max_length, min_bucket)
    bucket_of = np.searchsorted(np.asarray(buckets), lengths)
    order = sorted((int(bucket_of[i]), i) for i in range(len(tokens))
                   if lengths[i] > first[i])
    batches, row, k = [], 0, 0
    while k < len(order):
        bkt = order[k][0]
        docs = []
        while k < len(order) and order[k][0] == bkt and len(docs) < batch_size:
            docs.append(order[k][1])
            k += 1
        rows = int(sum(lengths[i] - first[i] for i in docs))
        batches.append(_Batch(buckets[bkt], tuple(docs), row, rows))
        row += rows
    digest = _digest.sha256_pieces(
        piece for (ids, _), f in zip(tokens, first)
        for piece in (np.asarray([len(ids), f], "<i8").tobytes(), ids.astype("<i4").tobytes()))
    return _Plan(tokens, first, tuple(batches), row, buckets, digest)
