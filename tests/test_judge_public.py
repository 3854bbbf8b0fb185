"""The public offline judge (`sj.evaluate.offline_judge`): its contract (shapes,
the 0–2 scale, description types), the description rules, and the validation set
(labelled, disjoint from every calibration text)."""

import json
import zlib

import numpy as np
import pytest

import snmf_jax as sj
from snmf_jax.evaluate._describe import as_description, lexical_features
from snmf_jax.evaluate._judge import (OfflineJudge, concept_calibration_set, package_concepts)
from snmf_jax.evaluate._judge_validation import (calibration_overlap, load_validation,
                                                 validation_report)


class HashEmbedder:
    """A deterministic bag-of-words embedder (unit rows), standing in for MiniLM."""

    def embed(self, texts):
        out = np.zeros((len(texts), 256))
        for i, t in enumerate(texts):
            for w in t.lower().split():
                out[i, zlib.crc32(w.strip(".,;:!?'\"").encode()) % 256] += 1.0
            out[i, 255] += 1e-3
        return out / np.linalg.norm(out, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def judge():
    return sj.evaluate.offline_judge(embedder=HashEmbedder())


ON = ["I think that we should leave now, because our train goes at six and we need our tickets.",
      "We painted our kitchen, and our neighbours helped us."]
OFF = ["I think that the lecture was interesting, especially the part about the desert.",
       "The old lighthouse still stands on the cliff above the harbour."]


# --- descriptions ---------------------------------------------------------------

def test_description_kinds_follow_the_documented_rule():
    assert as_description("cooking and recipes") == ("text", ("cooking and recipes",),
                                                     ("cook", "recip"))
    d = as_description("the article 'A' in various contexts")
    assert d.kind == "lexical" and d.targets == ("a",)
    # apostrophes are not quotes
    assert as_description("the feature's don't-care words").kind == "text"
    assert as_description([" dog", " dogs", "Puppy"]).kind == "tokens"
    ex = as_description(["The cat sat on the mat.", "A cat and a dog played.", "My dog ran."])
    assert ex.kind == "examples" and ex.targets == ("cat", "dog")  # shared by >= 2 examples
    for bad in ("", "  ", [], ["", " "], [1, 2], 3):
        with pytest.raises(ValueError, match="description"):
            as_description(bad)


def test_lexical_features_by_hand():
    d = "first-person plural pronouns such as 'we' and 'our'"
    f = lexical_features(["We sold our car and we walked.", "They left."], d)
    # targets {we, our}: both found -> coverage 2/min(3, 2) = 1; 3 of 7 words are targets
    np.testing.assert_allclose(f, [[1.0, 3 / 7], [0.0, 0.0]])


# --- the public judge's contract ------------------------------------------------------

def test_contract_shapes_scale_and_description_types(judge):
    assert isinstance(judge, OfflineJudge)
    texts = ON + OFF + ["", "we we we we we we"]
    for d in ("first-person plural pronouns such as 'we' and 'our'", "trains and tickets",
              [" we", " our", " us"], ON):
        c = judge.concept(texts, d)
        assert c.shape == (6,) and c.dtype == np.float64
        assert np.all(np.isfinite(c)) and c.min() >= 0 and c.max() <= 2
    f = judge.fluency(texts)
    assert f.shape == (6,) and f.min() >= 0 and f.max() <= 2
    assert judge.concept([], "x").shape == (0,) and judge.fluency([]).shape == (0,)
    with pytest.raises(TypeError, match="sequence of strings"):
        judge.concept("one text", "x")
    with pytest.raises(TypeError, match="sequence of strings"):
        judge.fluency("one text")


def test_lexical_and_token_descriptions_rank_on_topic_first(judge):
    for d in ("first-person plural pronouns such as 'we' and 'our'", [" we", " our"]):
        on, off = judge.concept(ON, d), judge.concept(OFF, d)
        assert on.min() > off.max(), (d, on, off)


def test_registered_names_and_loops(judge):
    named = judge.with_concepts({"pronouns": [" we", " our"]})
    np.testing.assert_allclose(named.concept(ON, "pronouns"), judge.concept(ON, [" we", " our"]))
    loops = judge.fluency(["the court the court the court the court the court the court"])
    assert loops[0] < judge.fluency(OFF).min()


def test_judge_without_lm_needs_no_model_and_steering_accepts_its_scale(judge):
    from snmf_jax.evaluate._steering import OfflineJudge as SteeringOfflineJudge
    assert SteeringOfflineJudge is OfflineJudge  # one definition
    assert judge.fluency_judge.logprob_fn is None


def test_with_a_model_fluency_uses_its_continuations_and_log_probs(tiny_llama):
    calls = []

    def logprob(texts):
        calls.append(len(texts))
        return np.array([-len(set(t)) / 10.0 for t in texts])  # any LM-like number

    j = sj.evaluate.offline_judge(tiny_llama, embedder=HashEmbedder(), n_unsteered=6,
                                  max_new_tokens=6, logprob_fn=logprob)
    assert j.fluency_judge.logprob_fn is logprob and calls  # calibrated with it
    assert j.fluency_judge.columns[0] == 0  # the log-prob feature is in use
    natural = j.calibration_texts()
    from snmf_jax.evaluate import _model_access as access
    gens = access.generate_texts(tiny_llama, "I think that", n=6, max_new_tokens=6, seed=999,
                                 top_k=30, top_p=1.0, temperature=1.0)
    assert set(gens) <= set(natural)  # its own unsteered continuations, official sampling
    f = j.fluency(OFF)
    assert f.shape == (2,) and 0 <= f.min() <= f.max() <= 2


# --- validation set -------------------------------------------------------------------

def test_validation_set_is_labelled_and_complete():
    items = load_validation()
    assert len(items) >= 200 and len({it["text"] for it in items}) == len(items)
    kinds = {it["kind"] for it in items}
    assert kinds == {"on_topic", "off_topic", "injected", "loop_on_topic", "loop_off_topic",
                     "salad_on_topic", "salad_off_topic"}
    assert {as_description(it["description"]).kind for it in items} == {
        "text", "lexical", "examples", "tokens"}
    assert all(it["concept"] in (0, 1, 2) and it["fluency"] in (0, 1, 2) for it in items)


def test_calibration_and_validation_do_not_overlap(judge):
    items = load_validation()
    cal = judge.calibration_texts()
    # calibration texts: the concept set's sentences and descriptions, fluency's
    # natural texts and corruptions
    sentences = {t for c in package_concepts() for t in c["sentences"]}
    assert sentences <= set(cal)
    assert {t for t, _, _ in concept_calibration_set()} <= sentences
    assert calibration_overlap(cal, items) == []
    # the check itself can fail: a shared text (other case and spacing) is caught
    planted = [{"text": "  " + next(iter(sentences)).upper()}]
    assert calibration_overlap(cal, planted) == [planted[0]["text"]]


def test_validation_report_counts_and_ranges(judge):
    items = load_validation()[:40]
    rep = validation_report(judge, items)
    assert rep["n"] == 40 and 0 <= rep["concept"]["auroc"] <= 1
    assert sum(v["n"] for v in rep["mean_by_kind"].values()) == 40
    json.dumps(rep)  # JSON-ready


minilm = pytest.importorskip("snmf_jax.evaluate._minilm")


@pytest.mark.slow
def test_default_judge_on_the_validation_set():
    try:
        minilm.minilm_dir()
    except FileNotFoundError as e:
        pytest.skip(str(e))
    judge = sj.evaluate.offline_judge()
    rep = validation_report(judge)
    assert rep["concept"]["auroc"] > 0.95, rep["concept"]
    assert min(rep["concept"]["auroc_by_description_kind"].values()) > 0.9, rep["concept"]
    assert rep["fluency"]["auroc_loops"] > 0.95, rep["fluency"]
    lex = [it for it in load_validation() if it["group"] == "article_a"]
    s = judge.concept([it["text"] for it in lex], lex[0]["description"])
    on = [x for x, it in zip(s, lex) if it["kind"] == "on_topic"]
    off = [x for x, it in zip(s, lex) if it["kind"] == "off_topic"]
    assert min(on) > max(off)
