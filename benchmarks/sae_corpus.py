"""An offline corpus of general English for training SAEs.

Debian's WordNet glosses (`wordnet-base`) and fortune-cookie collections
(`fortunes`), both installed with apt like any other registry package and read
from /usr/share; nothing is fetched at run time. Documents:

- WordNet: each synset's gloss and usage examples (the text after " | " on a
  line of data.noun / data.verb / data.adj / data.adv), prefixed by its first
  lemma, six consecutive synsets to a document (~110 tokens);
- fortunes: each entry of every collection in /usr/share/games/fortunes
  (entries end at a "%" line), whitespace collapsed, >= 80 characters.

The two are shuffled together with a fixed seed, so a prefix of `documents()`
is a deterministic mix of both.

    python benchmarks/sae_corpus.py      # counts documents and words
"""

from __future__ import annotations

import random
from pathlib import Path

WORDNET = Path("/usr/share/wordnet")
FORTUNES = Path("/usr/share/games/fortunes")


def wordnet_documents(per_doc: int = 6) -> list[str]:
    """WordNet glosses, `per_doc` synsets to a document."""
    if not WORDNET.is_dir():
        raise FileNotFoundError(f"{WORDNET} not found: apt-get install wordnet-base")
    entries = []
    for pos in ("noun", "verb", "adj", "adv"):
        for line in (WORDNET / f"data.{pos}").read_text(encoding="latin-1").splitlines():
            if line.startswith("  ") or " | " not in line:
                continue  # the licence header / no gloss
            head, gloss = line.split(" | ", 1)
            lemma = head.split()[4].replace("_", " ")
            entries.append(f"{lemma}: {gloss.strip()}.")
    return [" ".join(entries[i:i + per_doc]) for i in range(0, len(entries), per_doc)]


def fortune_documents(min_chars: int = 80) -> list[str]:
    """Every fortune of /usr/share/games/fortunes, one to a document."""
    if not FORTUNES.is_dir():
        raise FileNotFoundError(f"{FORTUNES} not found: apt-get install fortunes")
    docs = []
    for f in sorted(FORTUNES.iterdir()):
        if not f.is_file() or f.suffix in (".dat", ".u8"):
            continue
        for entry in f.read_text(encoding="utf-8", errors="ignore").split("\n%\n"):
            text = " ".join(entry.replace("%", " ").split())
            if len(text) >= min_chars:
                docs.append(text)
    return docs


def documents(seed: int = 0) -> list[str]:
    """Both sources, shuffled together (deterministic for a seed)."""
    docs = wordnet_documents() + fortune_documents()
    random.Random(seed).shuffle(docs)
    return docs


if __name__ == "__main__":
    w, f = wordnet_documents(), fortune_documents()
    print(f"WordNet: {len(w)} documents, {sum(len(d.split()) for d in w)} words; "
          f"fortunes: {len(f)} documents, {sum(len(d.split()) for d in f)} words")
