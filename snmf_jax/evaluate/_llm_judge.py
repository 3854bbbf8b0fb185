"""The LLM judge: concept (0-2) and fluency (0-2) ratings, and feature descriptions.

Prompts are plain text files with {placeholders} (snmf_jax/evaluate/prompts/:
concept.txt {concept} {text}; fluency.txt {text}; describe_input.txt
{contexts}; describe_output.txt {tokens}). concept.txt and fluency.txt are
the official scorers' prompts verbatim (experiments/causal/
output_score_llm_judge.py and input_score_llm_judge.py use the same two;
their {sentence_fragment} is our {text}). Pass `prompts_dir=` to use your
own; a missing file falls back to ours.

Descriptions: a string goes into {concept} as it is; example texts or tokens
(`_describe.as_description`) are written out as a numbered list of passages
or a quoted token list (`Description.for_llm`), so the LLM judge takes the
same descriptions as the offline judge. `LLMSteeringJudge` gives it the judge
protocol (arrays of 0–2 scores) and, by default, first has the LLM describe a
list in one sentence, as the official pipeline does.

Rating protocol: temperature 0; the reply should end with "Rating: [[n]]"; the
last such rating counts (the official scorer takes the first "Rating: n" or
"Rating: [[n]]"; the prompt asks for one rating after the explanation, so
they agree unless a reply rates twice) (a line "Rating: n", a bare number as the whole
reply, or a line holding only a whole number are accepted too). A reply with
no valid rating is asked again once, with the reply and a reminder of the
format added to the conversation (at temperature 0 the same request would get
the same reply; the official scorer repeats the identical request); a
second failure scores 0, as in the official scorer.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np

from snmf_jax.evaluate._describe import Description, as_description
from snmf_jax.evaluate._llm_client import LLMClient

PROMPTS_DIR = Path(__file__).resolve().parent / "prompts"
PLACEHOLDERS = {"concept": ("{concept}", "{text}"), "fluency": ("{text}",),
                "describe_input": ("{contexts}",), "describe_output": ("{tokens}",)}

RETRY = ("Your answer did not end with a rating. Reply with the rating only, in exactly "
         "this form: Rating: [[n]]")

_RATING = re.compile(r"Rating\s*:?\s*\[\[\s*(\d+(?:\.\d+)?)\s*\]\]", re.IGNORECASE)
_BRACKETS = re.compile(r"\[\[\s*(\d+(?:\.\d+)?)\s*\]\]")
_LINE = re.compile(r"^\s*Rating\s*:\s*(\d+(?:\.\d+)?)\s*\.?\s*$", re.IGNORECASE | re.MULTILINE)
_BARE = re.compile(r"^\s*(?:Rating\s*:?\s*)?(\d+(?:\.\d+)?)\s*\.?\s*$", re.IGNORECASE)
_BARE_LINE = re.compile(r"^\s*(\d+)\s*\.?\s*$", re.MULTILINE)
_DESCRIPTION = re.compile(r"Description\s*:\s*(.+)", re.IGNORECASE)


def parse_rating(reply: str, max_rating: int = 2) -> float | None:
    """The last "Rating: [[n]]" in a reply (else the last "[[n]]", else the last
    line that is only "Rating: n", else a reply that is only a number, else the
    last line that is only a whole number), if 0 <= n <= max_rating; otherwise
    None. (Small local models drop the brackets: SmolLM2-135M-Instruct under
    llama.cpp answered "Rating: 1", or "1" on a line before its reasons.)"""
    for pattern in (_RATING, _BRACKETS, _LINE):
        found = pattern.findall(reply or "")
        if found:
            value = float(found[-1])
            return value if 0 <= value <= max_rating else None
    m = _BARE.match(reply or "")
    found = [m.group(1)] if m else _BARE_LINE.findall(reply or "")
    if found:
        value = float(found[-1])
        return value if 0 <= value <= max_rating else None
    return None


def parse_description(reply: str) -> str:
    """The text after the last "Description:", else the reply's first non-empty line."""
    found = _DESCRIPTION.findall(reply or "")
    if found:
        return found[-1].strip().strip('"').strip()
    lines = [x.strip() for x in (reply or "").splitlines() if x.strip()]
    return lines[0] if lines else ""


class Rating(NamedTuple):
    """One judged text.

    Attributes:
      score: the rating (0 after two unparseable replies, or in a dry run).
      parsed: whether a valid rating was found.
      attempts: requests made for it (1 or 2).
      reply: the last reply (its justification included).
    """

    score: float
    parsed: bool
    attempts: int
    reply: str


def load_prompts(prompts_dir: str | os.PathLike | None = None) -> dict[str, str]:
    """The four templates, from `prompts_dir` where present, else ours.

    Raises:
      ValueError: a template lacks one of its placeholders.
    """
    out = {}
    for name, needed in PLACEHOLDERS.items():
        path = Path(prompts_dir) / f"{name}.txt" if prompts_dir is not None else None
        if path is None or not path.is_file():
            path = PROMPTS_DIR / f"{name}.txt"
        text = path.read_text(encoding="utf-8").rstrip("\n")  # sent as the official ones end
        missing = [p for p in needed if p not in text]
        if missing:
            raise ValueError(f"prompt template {str(path)!r} lacks placeholder(s) {missing}")
        out[name] = text
    return out


def _fill(template: str, **values: str) -> str:
    # plain replacement: user texts may contain braces, so no str.format
    for k, v in values.items():
        template = template.replace("{" + k + "}", v)
    return template


class LLMJudge:
    """Concept and fluency ratings and feature descriptions through an `LLMClient`.

    Args:
      client: the chat client (its config sets temperature, retries, concurrency, dry run).
      prompts_dir: a folder with replacement templates (see `load_prompts`).
      attempts: requests per text before a score of 0.
    """

    def __init__(self, client: LLMClient, *, prompts_dir: str | os.PathLike | None = None,
                 attempts: int = 2):
        self.client = client
        self.prompts = load_prompts(prompts_dir)
        self.attempts = int(attempts)

    def _rate(self, prompt: str) -> Rating:
        messages = [{"role": "user", "content": prompt}]
        reply = ""
        for attempt in range(1, self.attempts + 1):
            reply = self.client.chat(messages)
            if self.client.config.dry_run:
                return Rating(0.0, False, attempt, "")
            score = parse_rating(reply)
            if score is not None:
                return Rating(score, True, attempt, reply)
            # At temperature 0 the same request gets the same reply: ask again
            # with the unparseable answer in the conversation and a reminder.
            messages = [{"role": "user", "content": prompt},
                        {"role": "assistant", "content": reply or "(no answer)"},
                        {"role": "user", "content": RETRY}]
        return Rating(0.0, False, self.attempts, reply)

    def concept(self, texts: Sequence[str], concept) -> list[Rating]:
        """Concept-presence ratings (0-2) of texts for one description (a string,
        or a sequence of example texts or tokens)."""
        concept = as_description(concept).for_llm()
        prompts = [_fill(self.prompts["concept"], concept=concept, text=t) for t in texts]
        return self.client.map(self._rate, prompts)

    def fluency(self, texts: Sequence[str]) -> list[Rating]:
        """Fluency ratings (0-2) of texts."""
        prompts = [_fill(self.prompts["fluency"], text=t) for t in texts]
        return self.client.map(self._rate, prompts)

    def describe_input(self, contexts: Sequence[str]) -> str:
        """Input-centric description from a feature's top-activating contexts
        (mark the peak token with << >> in each context)."""
        body = "\n".join(f"{i + 1}. {c}" for i, c in enumerate(contexts))
        return parse_description(self.client.chat(
            [{"role": "user", "content": _fill(self.prompts["describe_input"], contexts=body)}]))

    def describe_output(self, tokens: Sequence[str]) -> str:
        """Output-centric description from the tokens a feature promotes
        (its vocabulary projection, strongest first)."""
        body = ", ".join(repr(t) for t in tokens)
        return parse_description(self.client.chat(
            [{"role": "user", "content": _fill(self.prompts["describe_output"], tokens=body)}]))

    def describe_features(self, contexts: Sequence[Sequence[str]] | None = None,
                          tokens: Sequence[Sequence[str]] | None = None) -> list[dict]:
        """Both descriptions for many features (concurrently):
        [{"input": ..., "output": ...}, ...], a key only where its data was given."""
        n = len(contexts if contexts is not None else tokens or [])
        jobs = []
        for i in range(n):
            if contexts is not None:
                jobs.append((i, "input", contexts[i]))
            if tokens is not None:
                jobs.append((i, "output", tokens[i]))
        results = self.client.map(
            lambda j: (j[0], j[1], (self.describe_input if j[1] == "input"
                                    else self.describe_output)(j[2])), jobs)
        out: list[dict] = [{} for _ in range(n)]
        for i, kind, text in results:
            out[i][kind] = text
        return out


@dataclasses.dataclass(frozen=True, eq=False)
class LLMSteeringJudge:
    """An `LLMJudge` under the judge protocol of `offline_judge`: `concept(texts,
    description)` and `fluency(texts)` return (n,) float64 ratings on 0–2.

    A description given as a list is first turned into one sentence by the LLM,
    as the official pipeline does, and each list is described once. Whether a
    list is a feature's vocabulary tokens (`describe_output`) or its
    top-activating contexts (`describe_input`) is decided by the same rule the
    offline judge uses (`as_description(...).kind`), so both judges read a
    description the same way. With `describe_lists=False` a list is written
    out for the judge as it is (`Description.for_llm`).
    """

    judge: LLMJudge
    describe_lists: bool = True
    _cache: dict = dataclasses.field(default_factory=dict, repr=False)

    def describe(self, description) -> str | Description:
        """The description the judge is asked about (a string is kept as it is)."""
        d = as_description(description)
        if d.kind in ("text", "lexical") or not self.describe_lists:
            return d
        if d.items not in self._cache:
            self._cache[d.items] = (self.judge.describe_output(list(d.items))
                                    if d.kind == "tokens" else
                                    self.judge.describe_input(list(d.items)))
        return self._cache[d.items]

    def concept(self, texts: Sequence[str], description) -> np.ndarray:
        return np.array([r.score for r in self.judge.concept(list(texts),
                                                             self.describe(description))],
                        np.float64)

    def fluency(self, texts: Sequence[str]) -> np.ndarray:
        return np.array([r.score for r in self.judge.fluency(list(texts))], np.float64)
