"""LLM judge and its HTTP client against a scripted loopback OpenAI-compatible server:
malformed replies, timeouts, 429, 500, the concurrency cap, dry runs, templates.
(The server and its `serve` fixture are in conftest.py.)"""

import pytest

from snmf_jax.evaluate._llm_client import LLMClient, LLMConfig, LLMError
from snmf_jax.evaluate._llm_judge import (LLMJudge, load_prompts, parse_description,
                                          parse_rating)


def _client(url, **kw):
    kw.setdefault("backoff", 0.01)
    kw.setdefault("timeout", 2.0)
    return LLMClient(LLMConfig(base_url=url, model="judge", api_key="", **kw))


def test_parse_rating():
    assert parse_rating("Fine.\nRating: [[2]]") == 2
    assert parse_rating("Rating: [[1]] ... on reflection Rating: [[0]]") == 0  # last wins
    assert parse_rating("I'd say [[1]]") == 1
    assert parse_rating(" 2 ") == 2 and parse_rating("1.") == 1
    assert parse_rating("Rating: [[3]]") is None  # out of range
    assert parse_rating("It is fluent.") is None
    assert parse_rating("There are 2 problems.") is None  # a number inside prose is no rating
    assert parse_rating("Text.\nRating: 1\nSentence: it is fine.") == 1  # brackets dropped
    assert parse_rating("Rating: 2 because it has 3 parts") is None  # not a rating line
    assert parse_rating("1\n\nThe text is clear.") == 1  # a number on a line of its own
    assert parse_rating("0.15\nThe concept does not appear.") is None  # not a whole number
    assert parse_description("blah\nDescription: days of the week") == "days of the week"


def test_good_reply_and_request_shape(serve):
    s = serve((200, "Clearly about cooking.\nRating: [[2]]", 0))
    judge = LLMJudge(_client(s.url))
    (r,) = judge.concept(["Stir the sauce."], "cooking")
    assert r == (2.0, True, 1, "Clearly about cooking.\nRating: [[2]]")
    req = s.requests[0]
    assert req["temperature"] == 0 and req["model"] == "judge"
    assert "cooking" in req["messages"][0]["content"]
    assert "Stir the sauce." in req["messages"][0]["content"]
    assert judge.client.stats.prompt_tokens == 11 and not judge.client.stats.estimated


def test_malformed_then_good_uses_second_attempt(serve):
    s = serve((200, "It reads well.", 0), (200, "Rating: [[1]]", 0))
    (r,) = LLMJudge(_client(s.url)).fluency(["Some text."])
    assert r.score == 1 and r.parsed and r.attempts == 2
    # the second request carries the first reply and a reminder of the format
    second = s.requests[1]["messages"]
    assert second[0] == s.requests[0]["messages"][0]
    assert second[1] == {"role": "assistant", "content": "It reads well."}
    assert second[2]["role"] == "user" and "Rating: [[n]]" in second[2]["content"]


def test_two_malformed_replies_score_zero(serve):
    s = serve((200, b"this is not json", 0), (200, "no rating here", 0))
    client = _client(s.url)
    (r,) = LLMJudge(client).fluency(["Some text."])
    assert r == (0.0, False, 2, "no rating here")
    assert len(s.requests) == 2 and client.stats.retries == 0


def test_429_and_500_are_retried(serve):
    s = serve((429, "", 0), (500, "", 0), (503, "", 0), (200, "Rating: [[2]]", 0))
    client = _client(s.url)
    (r,) = LLMJudge(client).fluency(["x"])
    assert r.score == 2 and r.attempts == 1
    assert client.stats.retries == 3 and client.stats.http_attempts == 4
    assert client.stats.requests == 1


def test_persistent_500_raises(serve):
    s = serve((500, "", 0))
    with pytest.raises(LLMError, match="failed after 3 attempts"):
        LLMJudge(_client(s.url, max_retries=2)).fluency(["x"])
    assert len(s.requests) == 3


def test_4xx_is_not_retried(serve):
    s = serve((401, "", 0))
    with pytest.raises(LLMError, match="HTTP 401"):
        LLMJudge(_client(s.url)).fluency(["x"])
    assert len(s.requests) == 1


def test_timeout_is_retried(serve):
    s = serve((200, "Rating: [[0]]", 1.5), (200, "Rating: [[1]]", 0))
    client = _client(s.url, timeout=0.3)
    (r,) = LLMJudge(client).fluency(["x"])
    assert r.score == 1 and client.stats.retries == 1


def test_concurrency_cap(serve):
    s = serve((200, "Rating: [[1]]", 0.15))
    client = _client(s.url, concurrency=2)
    out = LLMJudge(client).fluency([f"text {i}" for i in range(8)])
    assert [r.score for r in out] == [1.0] * 8
    assert 1 <= s.max_inflight <= 2


def test_order_is_kept_under_concurrency(serve):
    def echo(body):  # rate by the digit in the text
        content = body["messages"][0]["content"]
        return f"Rating: [[{int(content.split('item ')[1][0]) % 3}]]"
    s = serve((200, echo, 0.02))
    out = LLMJudge(_client(s.url, concurrency=3)).fluency([f"item {i}" for i in range(9)])
    assert [r.score for r in out] == [i % 3 for i in range(9)]


def test_dry_run_counts_without_sending(serve):
    s = serve((200, "Rating: [[2]]", 0))
    client = _client(s.url, dry_run=True, max_tokens=50)
    judge = LLMJudge(client)
    out = judge.concept(["a" * 400, "b" * 40], "cooking")
    assert all(r.score == 0 and not r.parsed for r in out)
    assert s.requests == []
    assert client.stats.requests == 2 and client.stats.http_attempts == 0
    assert client.stats.completion_tokens == 100 and client.stats.prompt_tokens > 110
    assert client.stats.estimated


def test_replaceable_templates(serve, tmp_path):
    (tmp_path / "fluency.txt").write_text("MY RUBRIC for {text}. Answer Rating: [[n]]")
    s = serve((200, "2", 0))
    (r,) = LLMJudge(_client(s.url), prompts_dir=tmp_path).fluency(["hello"])
    assert r.score == 2
    assert s.requests[0]["messages"][0]["content"] == "MY RUBRIC for hello. Answer Rating: [[n]]"
    (tmp_path / "concept.txt").write_text("no placeholders")
    with pytest.raises(ValueError, match="lacks placeholder"):
        load_prompts(tmp_path)


def test_feature_descriptions(serve):
    def reply(body):
        c = body["messages"][0]["content"]
        return "Description: weekdays" if "<<" in c else "Thinking...\nDescription: food words"
    s = serve((200, reply, 0))
    judge = LLMJudge(_client(s.url))
    out = judge.describe_features(contexts=[["see you on <<Monday>>"], ["<<Tuesday>> then"]],
                                  tokens=[["bread", "cheese"], ["Monday"]])
    assert out == [{"input": "weekdays", "output": "food words"},
                   {"input": "weekdays", "output": "food words"}]
    assert len(s.requests) == 4


def test_config_errors():
    with pytest.raises(ValueError, match="base_url"):
        LLMConfig(base_url="127.0.0.1:8080")
    with pytest.raises(ValueError, match="concurrency"):
        LLMConfig(concurrency=0)


def test_official_rubric_and_description_types(serve):
    """The prompts are the official scorers' (experiments/causal/*_score_llm_judge.py),
    filled with a string as it is and with tokens / example texts written out; the
    steering adapter returns the 0–2 ratings as arrays."""
    import numpy as np
    from snmf_jax.evaluate._llm_judge import LLMSteeringJudge
    p = load_prompts()
    assert p["concept"].startswith("Please act as an impartial judge and evaluate whether the "
                                   "specified concept is presented in the sentence fragment")
    assert p["concept"].endswith("[Sentence Fragment Start]\n{text}\n[Sentence Fragment End]")
    assert "0 indicates the sentence is not fluent and highly unnatural" in p["fluency"]
    s = serve((200, "Clear. Rating: [[2]]", 0), (200, "Rating: [[1]]", 0),
              (200, "Rating: [[0]]", 0), (200, "Rating: [[1]]", 0))
    judge = LLMSteeringJudge(LLMJudge(_client(s.url, concurrency=1)), describe_lists=False)
    got = judge.concept(["x"], "the article 'A'")
    assert got.dtype == np.float64 and got.tolist() == [2.0]
    assert judge.concept(["y"], [" dog", " puppy"]).tolist() == [1.0]
    assert judge.concept(["z"], ["The dog barked at the door.", "A puppy chewed my shoe."]
                         ).tolist() == [0.0]
    assert judge.fluency(["w"]).tolist() == [1.0]
    sent = [r["messages"][0]["content"] for r in s.requests]
    assert "[Concept Start]\nthe article 'A'\n[Concept End]" in sent[0]
    assert "' dog', ' puppy'" in sent[1]
    assert "1. The dog barked at the door.\n2. A puppy chewed my shoe." in sent[2]
    assert sent[3].endswith("[Sentence Fragment Start]\nw\n[Sentence Fragment End]")


def test_lists_described_once_by_the_offline_judges_rule(serve):
    """A list is first described by the LLM (as the official pipeline does): the
    offline judge's rule (`as_description(...).kind`) picks the vocabulary
    describer for tokens and the context describer for passages, once per list."""
    from snmf_jax.evaluate._describe import as_description
    from snmf_jax.evaluate._llm_judge import LLMSteeringJudge
    tokens = [" dog", " puppy", " the big cat"]  # median 1 word: tokens for both judges
    contexts = ["The dog barked at the door.", "A puppy chewed my shoe."]
    assert as_description(tokens).kind == "tokens"
    assert as_description(contexts).kind == "examples"
    s = serve((200, "Description: dogs", 0), (200, "Rating: [[2]]", 0),
              (200, "Rating: [[1]]", 0), (200, "Description: pets at home", 0),
              (200, "Rating: [[0]]", 0))
    judge = LLMSteeringJudge(LLMJudge(_client(s.url, concurrency=1)))
    assert judge.concept(["a"], tokens).tolist() == [2.0]
    assert judge.concept(["b"], tokens).tolist() == [1.0]  # described once
    assert judge.concept(["c"], contexts).tolist() == [0.0]
    sent = [r["messages"][0]["content"] for r in s.requests]
    assert len(sent) == 5
    assert "' dog', ' puppy', ' the big cat'" in sent[0]
    assert "[Concept Start]\ndogs\n[Concept End]" in sent[1] and "[Concept Start]\ndogs" in sent[2]
    assert "1. The dog barked at the door.\n2. A puppy chewed my shoe." in sent[3]
    assert "[Concept Start]\npets at home\n[Concept End]" in sent[4]
