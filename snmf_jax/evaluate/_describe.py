"""Concept descriptions as the judges take them, and their lexical evidence.

A description is what a text is judged against. It comes in three forms,
told apart by one documented rule (`as_description`):

- a string: a phrase, as an LLM describer writes it ("cooking and recipes",
  "the article 'A' in various contexts"). Words in quotes ('A', "the",
  `of`) are the phrase's *lexical targets* and its kind is "lexical";
  otherwise its content words are the targets and its kind is "text";
- a sequence of strings whose median item has more than two words:
  example texts (a feature's top-activating contexts), kind "examples";
  targets are the content words shared by at least two of them;
- a sequence of shorter strings: tokens (a feature's promoted or suppressed
  vocabulary), kind "tokens"; targets are the tokens themselves.

Lexical evidence of a text for a description (`lexical_features`):
coverage = distinct targets found in the text / min(3, number of targets),
capped at 1 (three different target words count as full coverage, so a
75-token vocabulary list is not diluted); density = share of the text's
words that are targets (punctuation marks count as words only when one is a
target). Words match after lowercasing and stripping one
common English suffix (-s, -es, -ed, -ing, -ly) and then a final e, so
"cooks" matches "cooking" and "recipe" matches "recipes".
"""

from __future__ import annotations

import re
from typing import NamedTuple, Sequence

import numpy as np

_WORD = re.compile(r"[A-Za-z']+|[0-9]+|[^\sA-Za-z0-9]")
# A quote opens after a non-word character and closes before one, so the
# apostrophes of "don't" or "the feature's" never pair up.
_QUOTED = re.compile(r"(?<!\w)'([^'\n]{1,30}?)'(?!\w)|\"([^\"\n]{1,30})\"|`([^`\n]{1,30})`|"
                     r"‘([^’\n]{1,30})’|“([^”\n]{1,30})”")

STOPWORDS = frozenset("""
a an the and or but if then than so as of at by for from in into on onto out over to up
with without about above after again against all am any are aren't be because been before
being below between both can can't could did didn't do does doesn't doing don't down during
each few further had hadn't has hasn't have haven't having he he'd he'll he's her here hers
herself him himself his how i i'd i'll i'm i've is isn't it it's its itself just let's me
more most my myself no nor not now off once only other ought our ours ourselves own same
she she'd she'll she's should shouldn't some such that that's their theirs them themselves
there there's these they they'd they'll they're they've this those through too under until
very was wasn't we we'd we'll we're we've were weren't what what's when where which while
who whom why will won't would wouldn't you you'd you'll you're you've your yours yourself
also into its many much one ones thing things think like well even still really get got
make made way may might must shall upon within various context contexts word words token
tokens use used using usage references reference related concept concepts text texts
""".split())

KINDS = ("text", "lexical", "examples", "tokens")


class Description(NamedTuple):
    """A normalised description.

    Attributes:
      kind: "text", "lexical", "examples" or "tokens" (see the module docstring).
      items: the description's strings (one for a phrase).
      targets: the lexical targets, as matching stems (sorted).
    """

    kind: str
    items: tuple[str, ...]
    targets: tuple[str, ...]

    def embed_texts(self) -> list[str]:
        """The strings whose unit mean embedding stands for the description: the
        phrase, each example, or the tokens joined into one string."""
        if self.kind == "tokens":
            return [", ".join(dict.fromkeys(t.strip() for t in self.items if t.strip()))
                    or " ".join(self.items)]
        return list(self.items)

    def for_llm(self) -> str:
        """The description as one string for an LLM judge's {concept} slot."""
        if self.kind in ("text", "lexical"):
            return self.items[0]
        if self.kind == "tokens":
            shown = ", ".join(repr(t) for t in self.items)
            return f"the tokens {shown} (text that uses these words or their meaning)"
        body = "\n".join(f"{i + 1}. {t}" for i, t in enumerate(self.items))
        return f"what the following example passages have in common:\n{body}"


def words(text: str) -> list[str]:
    """Lowercased words, numbers and single punctuation marks of a text."""
    return _WORD.findall(text.lower())


def stem(word: str) -> str:
    """The word without one common English suffix (kept when the rest would be < 3
    letters), then without a final e (words of >= 4 letters)."""
    for suffix in ("ing", "es", "ed", "ly", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[:-len(suffix)]
            break
    # "recipe"/"recipes", "bake"/"baked"/"baking" share a stem without the final e
    return word[:-1] if word.endswith("e") and len(word) >= 4 else word


def _content(ws: Sequence[str]) -> list[str]:
    return [w for w in ws if w.isalnum() and w not in STOPWORDS and len(w) > 1]


def as_description(description) -> Description:
    """Normalises a description (str, or a sequence of example texts or tokens).

    Raises:
      ValueError: the description is empty or not strings.
    """
    if isinstance(description, Description):
        return description
    if isinstance(description, str):
        if not description.strip():
            raise ValueError("description: got an empty string")
        quoted = [next(g for g in m if g) for m in _QUOTED.findall(description)]
        if quoted:
            tg = {stem(w) for q in quoted for w in words(q) if w.strip()}
            return Description("lexical", (description,), tuple(sorted(tg)))
        tg = {stem(w) for w in _content(words(description))}
        return Description("text", (description,), tuple(sorted(tg)))
    try:
        items = tuple(description)
    except TypeError:
        raise ValueError(f"description: expected a string or a sequence of strings; got "
                         f"{type(description).__name__}") from None
    if not items or not all(isinstance(t, str) for t in items):
        raise ValueError("description: expected a non-empty sequence of strings")
    if not any(t.strip() for t in items):
        raise ValueError("description: every item is blank")
    if float(np.median([len(t.split()) for t in items])) > 2:
        sets = [set(stem(w) for w in _content(words(t))) for t in items]
        count: dict[str, int] = {}
        for s in sets:
            for w in s:
                count[w] = count.get(w, 0) + 1
        need = 2 if len(items) > 1 else 1
        return Description("examples", items, tuple(sorted(w for w, c in count.items()
                                                           if c >= need)))
    tg = set()
    for t in items:
        ws = words(t.strip())
        tg.update(stem(w) for w in ws if w.strip())
    return Description("tokens", items, tuple(sorted(tg)))


def lexical_features(texts: Sequence[str], description) -> np.ndarray:
    """(n, 2) [coverage, density] of each text's words against the description's targets."""
    d = as_description(description)
    targets = set(d.targets)
    out = np.zeros((len(texts), 2))
    if not targets:
        return out
    full = min(3, len(targets))
    for i, t in enumerate(texts):
        # punctuation marks count as words only where one is a target
        st = [x for x in (stem(w) for w in words(t)) if x[0].isalnum() or x in targets]
        if not st:
            continue
        hits = [w in targets for w in st]
        out[i, 0] = min(1.0, len({w for w, h in zip(st, hits) if h}) / full)
        out[i, 1] = sum(hits) / len(st)
    return out
