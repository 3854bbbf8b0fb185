"""`TextDataset`: documents (optionally labelled) to run through a model."""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Iterable, Mapping, Sequence

from snmf_jax import _digest


@dataclasses.dataclass(frozen=True, eq=False)
class TextDataset:
    """Documents to run through a model, optionally labelled.

    Attributes:
      texts: the documents, in order; a document's index is its `doc_id`.
      labels: per document an index into `label_names`, or None (unlabelled).
      label_names: the label vocabulary, or None (unlabelled).
      metadata: dataset-level information (source path, format, concept
        hierarchy, ...); JSON-serialisable values.
    """

    texts: tuple[str, ...]
    labels: tuple[int, ...] | None = None
    label_names: tuple[str, ...] | None = None
    metadata: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        texts = tuple(self.texts)
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(
                    f"TextDataset.texts[{i}] must be a str; got "
                    f"{type(t).__name__}")
        object.__setattr__(self, "texts", texts)
        if (self.labels is None) != (self.label_names is None):
            raise ValueError(
                "TextDataset.labels and label_names must both be given or both "
                f"be None; got labels={'None' if self.labels is None else '...'}"
                f", label_names={'None' if self.label_names is None else '...'}")
        if self.labels is not None:
            labels = tuple(int(x) for x in self.labels)
            names = tuple(str(x) for x in self.label_names)
            if len(labels) != len(texts):
                raise ValueError(
                    f"TextDataset.labels has {len(labels)} entries; expected one "
                    f"per text ({len(texts)})")
            bad = [x for x in labels if not 0 <= x < len(names)]
            if bad:
                raise ValueError(
                    f"TextDataset.labels must index label_names (0..{len(names) - 1})"
                    f"; got {bad[0]}")
            object.__setattr__(self, "labels", labels)
            object.__setattr__(self, "label_names", names)
        object.__setattr__(self, "metadata", dict(self.metadata))

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def labelled(self) -> bool:
        return self.labels is not None

    def label_of(self, doc_id: int) -> str | None:
        """The label name of document `doc_id`, or None when unlabelled."""
        if self.labels is None:
            return None
        return self.label_names[self.labels[doc_id]]

    def fingerprint(self) -> str:
        """SHA-256 (hex) of the texts, labels and label names.

        Two datasets with the same fingerprint give the same export; metadata
        does not count.
        """
        def pieces():
            yield f"n={len(self.texts)}\n".encode()
            for t in self.texts:
                b = t.encode("utf-8", "surrogatepass")
                yield len(b).to_bytes(8, "little")  # length-framed: no two splits collide
                yield b
            if self.labels is not None:
                yield json.dumps([list(self.labels), list(self.label_names)],
                                 ensure_ascii=False).encode()
        return _digest.sha256_pieces(pieces())


def from_texts(texts: Iterable[str], labels: Sequence[str] | Sequence[int] | None = None,
               label_names: Sequence[str] | None = None,
               metadata: Mapping[str, Any] | None = None) -> TextDataset:
    """Builds a dataset from Python strings.

    Args:
      texts: the documents.
      labels: None, one label name (str) per text, or one int index into
        `label_names` per text.
      label_names: the label vocabulary when `labels` are ints. With string
        labels it defaults to the labels in order of first appearance.
      metadata: dataset-level metadata.

    Returns:
      A `TextDataset`.
    """
    if isinstance(texts, (str, bytes)):
        raise TypeError(
            "texts must be a sequence of strings, not a single "
            f"{type(texts).__name__}; wrap it in a list")
    texts = tuple(texts)
    meta = dict(metadata or {})
    if labels is None:
        if label_names is not None:
            raise ValueError("label_names given without labels")
        return TextDataset(texts, metadata=meta)
    labels = list(labels)
    if labels and all(isinstance(x, str) for x in labels):
        names = list(label_names) if label_names is not None else list(
            dict.fromkeys(labels))
        index = {n: i for i, n in enumerate(names)}
        missing = [x for x in labels if x not in index]
        if missing:
            raise ValueError(
                f"label {missing[0]!r} is not in label_names {names!r}")
        return TextDataset(texts, tuple(index[x] for x in labels), tuple(names), meta)
    if label_names is None:
        raise ValueError("integer labels need label_names")
    return TextDataset(texts, tuple(int(x) for x in labels), tuple(label_names), meta)
