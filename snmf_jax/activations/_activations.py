"""`Activations`: one layer's activations and their provenance, in memory."""

from __future__ import annotations

import dataclasses

import numpy as np


def token_text(text: str, span: np.ndarray, token_id: int) -> str:
    s, e = int(span[0]), int(span[1])
    return text[s:e] if e > s else f"<special {token_id}>"


def context_text(text: str, span: np.ndarray, window: int | None,
             marker: tuple[str, str]) -> str:
    s, e = int(span[0]), int(span[1])
    lo, hi = (0, len(text)) if window is None else (max(0, s - window),
                                                     min(len(text), e + window))
    left = ("…" if lo > 0 else "") + text[lo:s]
    right = text[e:hi] + ("…" if hi < len(text) else "")
    return f"{left}{marker[0]}{text[s:e]}{marker[1]}{right}"


@dataclasses.dataclass(frozen=True, eq=False)
class Activations:
    """Activations of one layer at one site, one row per token, in memory.

    Rows follow the export order: documents sorted by token length (stable),
    each document's tokens contiguous and in position order. `doc_ids` map a
    row back to its document.

    Attributes:
      X: (n, d) float32 activations.
      doc_ids: (n,) int32 document index into `texts`.
      positions: (n,) int32 token position in its document (BOS is 0).
      token_ids: (n,) int32 token id.
      offsets: (n, 2) int32 [start, end) character span of the token in its
        document's text (empty for special tokens such as BOS).
      texts: the documents.
      labels: (n,) int32 index into `label_names` (the document's label), or
        None for unlabelled data.
      label_names: label vocabulary, or None.
      layer: the layer the rows come from.
      site: "mlp_hidden", "mlp_out" or "resid_post".
      model_name: name of the model that produced them.
    """

    X: np.ndarray
    doc_ids: np.ndarray
    positions: np.ndarray
    token_ids: np.ndarray
    offsets: np.ndarray
    texts: tuple[str, ...]
    labels: np.ndarray | None = None
    label_names: tuple[str, ...] | None = None
    layer: int = 0
    site: str = "mlp_hidden"
    model_name: str = ""

    def __post_init__(self):
        n = self.X.shape[0]
        if self.X.ndim != 2:
            raise ValueError(f"Activations.X must be (n, d); got shape {self.X.shape}")
        for name in ("doc_ids", "positions", "token_ids", "labels"):
            a = getattr(self, name)
            if a is not None and a.shape != (n,):
                raise ValueError(
                    f"Activations.{name} must have shape ({n},); got {a.shape}")
        if self.offsets.shape != (n, 2):
            raise ValueError(
                f"Activations.offsets must have shape ({n}, 2); got {self.offsets.shape}")
        if (self.labels is None) != (self.label_names is None):
            raise ValueError("Activations.labels and label_names go together")

    @property
    def n(self) -> int:
        return self.X.shape[0]

    @property
    def d(self) -> int:
        return self.X.shape[1]

    def __len__(self) -> int:
        return self.X.shape[0]

    def token_text(self, i: int) -> str:
        """The text of row i's token (its span in the document)."""
        return token_text(self.texts[self.doc_ids[i]], self.offsets[i],
                           int(self.token_ids[i]))

    def context(self, i: int, window: int | None = 80,
                marker: tuple[str, str] = ("[[", "]]")) -> str:
        """Row i's document with its token marked, e.g. ``'a [[cat]] sat'``.

        Args:
          i: row index.
          window: characters kept on each side of the token (None: all);
            cut sides are shown with an ellipsis.
          marker: strings put before and after the token.
        """
        return context_text(self.texts[self.doc_ids[i]], self.offsets[i], window, marker)

    def label_of(self, i: int) -> str | None:
        """Row i's label name, or None for unlabelled data."""
        return None if self.labels is None else self.label_names[self.labels[i]]

    def select(self, rows: np.ndarray) -> "Activations":
        """A new `Activations` with the given rows (int indices or a bool mask)."""
        rows = np.asarray(rows)
        pick = lambda a: None if a is None else a[rows]
        return dataclasses.replace(
            self, X=self.X[rows], doc_ids=self.doc_ids[rows],
            positions=self.positions[rows], token_ids=self.token_ids[rows],
            offsets=self.offsets[rows], labels=pick(self.labels))


