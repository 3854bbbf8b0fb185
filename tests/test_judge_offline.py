"""Offline judge: MiniLM parity with transformers, calibration tools, concept and
fluency scores."""

import numpy as np
import pytest

from snmf_jax.evaluate._calibrate import Logistic, fit_logistic, roc_auc
from snmf_jax.evaluate._offline_judge import (ConceptJudge, FluencyJudge, corrupt,
                                              harmonic_mean, text_features)


# --- calibration tools -------------------------------------------------------

def test_roc_auc_matches_pair_count():
    rng = np.random.default_rng(0)
    s = np.round(rng.normal(size=60), 1)  # with ties
    y = rng.random(60) < 0.4
    pos, neg = s[y], s[~y]
    ref = np.mean((pos[:, None] > neg[None]) + 0.5 * (pos[:, None] == neg[None]))
    assert roc_auc(s, y) == pytest.approx(ref)
    with pytest.raises(ValueError, match="both classes"):
        roc_auc(s, np.ones(60, bool))


def test_logistic_recovers_generating_model():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20000, 2))
    p = 1 / (1 + np.exp(-(1.5 * X[:, 0] - 0.5 * X[:, 1] + 0.3)))
    y = rng.random(20000) < p
    m = fit_logistic(X, y, l2=0.0, balanced=False)
    np.testing.assert_allclose(m.w / m.scale, [1.5, -0.5], atol=0.08)
    # calibrated: predicted probabilities match observed frequencies per decile
    q = m.prob(X)
    bins = np.quantile(q, np.linspace(0, 1, 11))
    which = np.clip(np.searchsorted(bins, q) - 1, 0, 9)
    for b in range(10):
        assert abs(q[which == b].mean() - y[which == b].mean()) < 0.03
    again = Logistic.from_json(m.to_json())
    np.testing.assert_allclose(again.prob(X[:5]), m.prob(X[:5]))


def test_harmonic_mean_zero_when_either_zero():
    np.testing.assert_allclose(harmonic_mean([0, 1, 2, 1], [1, 0, 2, 0.5]), [0, 0, 2, 2 / 3])


@pytest.mark.parametrize("c, f, match", [
    ([1.0, np.nan], [1.0, 1.0], "concept scores must be finite"),
    ([1.0, 1.0], [np.inf, 1.0], "fluency scores must be finite"),
    ([2.5, 1.0], [1.0, 1.0], r"concept scores must lie in \[0, 2\]"),
    ([1.0, 1.0], [1.0, -0.1], r"fluency scores must lie in \[0, 2\]"),
])
def test_harmonic_mean_refuses_nan_and_off_scale(c, f, match):
    with pytest.raises(ValueError, match=match):
        harmonic_mean(c, f)


# --- fluency features -----------------------------------------------------------

def test_features_punish_repetition():
    nat = "The committee will meet on Tuesday to discuss the new budget for schools."
    loop = "the budget the budget the budget the budget the budget the budget"
    f = text_features([nat, loop], frozenset(nat.lower().replace(".", "").split()))
    assert f[0, 1] == 1.0 and f[1, 1] < 0.3  # distinct bigrams
    assert f[1, 2] > f[0, 2]  # top-word share
    assert f[1, 3] < f[0, 3]  # compresses better


def test_corrupt_kinds_cycle():
    texts = [f"sentence number {i} is about a cat on a mat" for i in range(10)]
    bad, kinds = corrupt(texts)
    assert set(kinds) == {"shuffle", "soup", "loop", "stutter", "tail_loop"}
    assert all(b != t for b, t in zip(bad, texts))


# --- MiniLM ---------------------------------------------------------------------

minilm = pytest.importorskip("snmf_jax.evaluate._minilm")


def _minilm_dir():
    try:
        return minilm.minilm_dir()
    except FileNotFoundError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def embedder():
    _minilm_dir()
    return minilm.SentenceEmbedder(batch_size=8)


TEXTS = ["The cat sat on the mat.", "a",
         "I think that the stock market will fall because interest rates keep rising.",
         "Paris is the capital of France. " * 60]  # truncated at 256 tokens


@pytest.mark.slow
def test_minilm_parity_with_transformers(embedder):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    path = str(_minilm_dir())
    ref_model = transformers.BertModel.from_pretrained(path).eval()
    tok = transformers.AutoTokenizer.from_pretrained(path)
    b = tok(TEXTS, padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.no_grad():
        h = ref_model(**b).last_hidden_state
    m = b["attention_mask"][..., None].float()
    ref = torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1).numpy()
    got = embedder.embed(TEXTS)
    assert got.shape == (4, 384)
    cos = np.sum(got * ref, 1)
    assert np.all(cos >= 0.9999), cos
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, rtol=1e-5)
    # same ids as transformers' tokenizer, truncation included
    assert embedder.tokenize(TEXTS)[3] == tok(TEXTS[3], truncation=True, max_length=256)["input_ids"]


def test_embed_rejects_a_bare_string(embedder):
    with pytest.raises(TypeError, match="list of strings"):
        embedder.embed("hello")


@pytest.mark.slow
def test_concept_judge_separates_held_out_sentences(embedder):
    from snmf_jax.activations import load_concepts
    ds = load_concepts(["cooking", "astronomy", "finance", "weekdays", "birds"])
    groups = {}
    for t, l in zip(ds.texts, ds.labels):
        groups.setdefault(ds.label_names[l], []).append(t)
    cal = {c: v[:8] for c, v in groups.items()}
    held = {c: v[8:] for c, v in groups.items()}
    judge = ConceptJudge(embedder, cal)
    auroc = judge.auroc(held)
    assert min(auroc.values()) > 0.9, auroc
    p = judge.score(held["cooking"], "cooking")
    q = judge.score(held["astronomy"], "cooking")
    assert p.mean() > 0.5 > q.mean()
    with pytest.raises(ValueError, match="unknown concept"):
        judge.score(["x"], "zebra")
    with pytest.raises(ValueError, match=">= 2 concepts"):
        ConceptJudge(embedder, {"a": ["x", "y"]})


def test_fluency_judge_without_lm():
    from snmf_jax.activations import load_concepts
    texts = list(load_concepts().texts)
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(texts))
    judge = FluencyJudge([texts[i] for i in idx[:200]])
    rep = judge.report([texts[i] for i in idx[200:]])
    assert rep.natural_mean > 0.5 > rep.corrupt_mean
    # repetition is caught even without an LM
    assert rep.auroc_by_kind["loop"] > 0.95 and rep.auroc_by_kind["stutter"] > 0.95
    with pytest.raises(ValueError, match=">= 10"):
        FluencyJudge(["one text"])
