"""Text datasets and the readers that build them from files or Python values.

A `TextDataset` is what `export_activations` consumes: documents (strings),
optionally one label per document, and free-form dataset-level metadata.

Readers:
- `read_concept_json`: the paper's concept files in both shapes, a list of
  ``{"prompt": ..., "label": ...}`` records or a dict ``label -> [sentences]``.
- `read_jsonl`: one JSON object per line with a text field (and optionally a
  label field).
- `read_text`: plain text, one document per line or per paragraph (blank-line
  separated).
- `from_texts`: a Python list of strings (and optional labels).
- `load_dataset`: dispatches on the argument (a dataset, a list, a path or the
  name ``"concepts"`` of the package's own dataset).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

from snmf_jax.activations._dataset import load_concepts
from snmf_jax.activations._text import TextDataset, from_texts


def _read_utf8(path: Path) -> str:
    """Reads a file as UTF-8, naming the file and byte offset on bad bytes."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ValueError(
            f"{path}: not valid UTF-8 at byte offset {e.start} (line {line}): "
            f"byte {data[e.start:e.start + 1]!r} ({e.reason}); re-encode the "
            "file as UTF-8") from None
    return text.removeprefix("\ufeff")  # a BOM is not part of the first document


def lines(text: str) -> list[str]:
    """Lines split at \\n, \\r\\n and \\r only. `str.splitlines` also splits at
    U+2028, U+0085, form feeds and others, which may sit inside one line of a
    text file or one JSON string of a .jsonl record."""
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def label_text(value: Any) -> str:
    """A JSON label as a label name: a string as it is, anything else as its
    JSON spelling (null stays "null", distinct from the string "None")."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _check_nonempty(texts: Sequence[str], path: Path) -> None:
    if not texts:
        raise ValueError(f"{path}: no documents found (the dataset is empty)")


def read_concept_json(path: str | os.PathLike, *, text_field: str | None = None,
                      label_field: str = "label") -> TextDataset:
    """Reads a concept dataset in either of the paper's two JSON shapes.

    - a list of records ``[{"prompt": str, "label": str}, ...]`` (the text
      field may also be called "text" or "sentence"; override with
      `text_field`), or
    - a dict ``{label: [sentence, ...], ...}``.

    Label names keep their exact spelling (some paper labels start with a
    space) and are ordered by first appearance.

    Args:
      path: the .json file.
      text_field: the text key of list records (default: the first of
        "prompt", "text", "sentence" present).
      label_field: the label key of list records.

    Returns:
      A labelled `TextDataset`.
    """
    path = Path(path)
    try:
        data = json.loads(_read_utf8(path))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON: {e}") from None
    texts: list[str] = []
    labels: list[str] = []
    if isinstance(data, dict):
        for label, sentences in data.items():
            if isinstance(sentences, str) or not isinstance(sentences, list):
                raise ValueError(
                    f"{path}: expected label -> list of sentences; label "
                    f"{label!r} maps to a {type(sentences).__name__}")
            for j, s in enumerate(sentences):
                if not isinstance(s, str):
                    raise ValueError(
                        f"{path}: label {label!r} sentence {j} is a "
                        f"{type(s).__name__}, expected a string")
                texts.append(s)
                labels.append(label)
        shape = "dict"
    elif isinstance(data, list):
        for i, rec in enumerate(data):
            if not isinstance(rec, dict):
                raise ValueError(
                    f"{path}: record {i} is a {type(rec).__name__}; expected an "
                    'object like {"prompt": ..., "label": ...}')
            field = text_field or next(
                (k for k in ("prompt", "text", "sentence") if k in rec), None)
            if field is None or field not in rec:
                raise ValueError(
                    f"{path}: record {i} has no text field "
                    f"{text_field or 'prompt/text/sentence'!r}; keys: {sorted(rec)}")
            if label_field not in rec:
                raise ValueError(
                    f"{path}: record {i} has no label field {label_field!r}; "
                    f"keys: {sorted(rec)}")
            if not isinstance(rec[field], str):
                raise ValueError(
                    f"{path}: record {i} field {field!r} is a "
                    f"{type(rec[field]).__name__}, expected a string")
            texts.append(rec[field])
            labels.append(label_text(rec[label_field]))
        shape = "records"
    else:
        raise ValueError(
            f"{path}: expected a JSON list of records or a dict label -> "
            f"sentences; got a {type(data).__name__}")
    _check_nonempty(texts, path)
    return from_texts(texts, labels, metadata={
        "source": str(path), "format": f"concept-json-{shape}"})


def read_jsonl(path: str | os.PathLike, *, text_field: str = "text",
               label_field: str | None = None) -> TextDataset:
    """Reads JSON Lines, one document per non-blank line.

    Args:
      path: the .jsonl file.
      text_field: key of the document text in each object.
      label_field: key of a label (any JSON scalar, used as a string), or None.

    Returns:
      A `TextDataset`, labelled when `label_field` is given.
    """
    path = Path(path)
    texts: list[str] = []
    labels: list[str] = []
    for lineno, line in enumerate(lines(_read_utf8(path)), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{lineno}: not valid JSON: {e}") from None
        if not isinstance(rec, dict) or text_field not in rec:
            keys = sorted(rec) if isinstance(rec, dict) else type(rec).__name__
            raise ValueError(
                f"{path}:{lineno}: expected an object with text field "
                f"{text_field!r}; got {keys}")
        if not isinstance(rec[text_field], str):
            raise ValueError(
                f"{path}:{lineno}: field {text_field!r} is a "
                f"{type(rec[text_field]).__name__}, expected a string")
        texts.append(rec[text_field])
        if label_field is not None:
            if label_field not in rec:
                raise ValueError(
                    f"{path}:{lineno}: no label field {label_field!r}; keys: "
                    f"{sorted(rec)}")
            labels.append(label_text(rec[label_field]))
    _check_nonempty(texts, path)
    return from_texts(texts, labels if label_field is not None else None,
                      metadata={"source": str(path), "format": "jsonl"})


def read_text(path: str | os.PathLike, *, split: str = "lines") -> TextDataset:
    """Reads a plain UTF-8 text file.

    Args:
      path: the file.
      split: "lines" (one document per non-blank line) or "paragraphs"
        (documents separated by one or more blank lines; a paragraph's lines
        are joined with a single newline).

    Returns:
      An unlabelled `TextDataset`. Leading/trailing whitespace of each
      document is stripped.
    """
    path = Path(path)
    text = _read_utf8(path)
    if split == "lines":
        docs = [ln.strip() for ln in lines(text)]
        docs = [d for d in docs if d]
    elif split == "paragraphs":
        docs, cur = [], []
        for ln in lines(text):
            if ln.strip():
                cur.append(ln.strip())
            elif cur:
                docs.append("\n".join(cur))
                cur = []
        if cur:
            docs.append("\n".join(cur))
    else:
        raise ValueError(
            f"split must be 'lines' or 'paragraphs'; got {split!r}")
    _check_nonempty(docs, path)
    return from_texts(docs, metadata={"source": str(path), "format": f"text-{split}"})


def load_dataset(source: Any, *, text_field: str | None = None,
                 label_field: str | None = None, split: str = "lines") -> TextDataset:
    """Turns anything dataset-like into a `TextDataset`.

    Args:
      source: a `TextDataset` (returned as is); a list/tuple of strings; the
        name "concepts" (the package's own labelled concept dataset); or a
        path: ``.json`` (concept JSON), ``.jsonl`` (JSON Lines), anything
        else is plain text.
      text_field: text key for .json records / .jsonl lines.
      label_field: label key (.json records default "label"; .jsonl default
        none).
      split: plain text: "lines" or "paragraphs".

    Returns:
      A `TextDataset`.
    """
    if isinstance(source, TextDataset):
        return source
    if isinstance(source, (list, tuple)):
        return from_texts(source)
    if isinstance(source, str) and source == "concepts" and not Path(source).exists():
        return load_concepts()
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(
                f"dataset {str(source)!r} is neither an existing file nor a "
                "known dataset name ('concepts')")
        suffix = path.suffix.lower()
        if suffix == ".json":
            return read_concept_json(path, text_field=text_field,
                                     label_field=label_field or "label")
        if suffix == ".jsonl":
            return read_jsonl(path, text_field=text_field or "text",
                              label_field=label_field)
        return read_text(path, split=split)
    raise TypeError(
        "dataset must be a TextDataset, a list of strings, a path or "
        f"'concepts'; got {type(source).__name__}")
