"""The interpretation layer on small synthetic data and tiny random models."""

import dataclasses
import itertools

import jax
import numpy as np
import pytest

from snmf_jax import interpret
from snmf_jax.activations import Activations
from snmf_jax.testing import tiny_model
from snmf_jax.interpret import _vocab


def _tiny(family, **kw):
    # Tied embeddings and no sliding windows, unless a test asks for them.
    base = dict(vocab_size=40, d_model=16, n_heads=2, d_mlp=24, tie_embeddings=True,
                layer_types=(), sliding_window=None)
    return tiny_model(family, **(base | kw))


# -- the model's maps against the forward pass ---------------------------------

def _mlp_map(model, hidden, layer):
    return np.asarray(model.mlp_output_map(hidden, layer=layer, bias=False), np.float32)


def _to_logits(model, resid):
    return np.asarray(model.unembed(resid), np.float32)


@pytest.mark.parametrize("family,kw", [("llama", {}), ("gemma2", {"final_logit_softcap": 3.0}),
                                       ("gemma3", {}), ("gpt2", {"tie_embeddings": False})])
def test_model_maps_match_the_forward(family, kw):
    model = _tiny(family, **kw)
    tokens = np.array([[1, 5, 7, 9, 2]], np.int32)
    layer = 1
    out = model.forward(tokens, capture=((layer, "mlp_hidden"), (layer, "mlp_out"),
                                         (model.config.n_layers - 1, "resid_post")))
    cap = {k: np.asarray(v[0]) for k, v in out.captures.items()}
    want = cap[(layer, "mlp_out")]
    if family == "gpt2":  # the bias is an offset, left out of a direction's image
        want = want - np.asarray(model.params["layers"]["down"]["bias"][layer])
    np.testing.assert_allclose(_mlp_map(model, cap[(layer, "mlp_hidden")], layer), want,
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(_to_logits(model, cap[(1, "resid_post")]),
                               np.asarray(out.logits[0]), rtol=1e-4, atol=1e-4)


def test_vocab_projection_is_the_top_of_the_logits_of_each_sign():
    model = _tiny("gemma3")
    rng = np.random.default_rng(0)
    phi = rng.standard_normal((5, 24)).astype(np.float32)
    proj = interpret.vocab_projection(model, phi * 7.0, layer=1, k=6, batch=2)
    unit = phi / np.linalg.norm(phi, axis=1, keepdims=True)
    pos = _to_logits(model, _mlp_map(model, unit, 1))
    neg = _to_logits(model, _mlp_map(model, -unit, 1))
    for f in range(5):
        np.testing.assert_array_equal(proj.pos_ids[f], np.argsort(-pos[f], kind="stable")[:6])
        np.testing.assert_array_equal(proj.neg_ids[f], np.argsort(-neg[f], kind="stable")[:6])
        np.testing.assert_allclose(proj.pos_scores[f], np.sort(pos[f])[::-1][:6], rtol=1e-5)
    # A residual-stream direction skips the MLP map.
    r = rng.standard_normal((2, 16)).astype(np.float32)
    got = interpret.vocab_logits(model, r, site="resid")
    np.testing.assert_allclose(got, _to_logits(model, r / np.linalg.norm(r, axis=1)[:, None]),
                               rtol=1e-5, atol=1e-6)


def test_vocab_projection_rejects_bad_input():
    model = _tiny("llama")
    with pytest.raises(ValueError, match="vectors must be"):
        interpret.vocab_projection(model, np.ones((2, 16)), layer=0)
    with pytest.raises(ValueError, match="layer must be"):
        interpret.vocab_projection(model, np.ones((2, 24)))
    with pytest.raises(ValueError, match="NaN"):
        interpret.vocab_projection(model, np.full((1, 24), np.nan), layer=0)


# -- contexts -------------------------------------------------------------------

def _acts(doc_lengths, labels=None):
    texts, doc_ids, offs, toks = [], [], [], []
    for d, n in enumerate(doc_lengths):
        words = [f"w{d}_{j}" for j in range(n)]
        texts.append(" ".join(words))
        pos = 0
        for j, w in enumerate(words):
            offs.append((pos, pos + len(w)))
            pos += len(w) + 1
            doc_ids.append(d)
            toks.append(j % 7)
    n = len(doc_ids)
    lab = None if labels is None else np.asarray([labels[d] for d in doc_ids], np.int32)
    return Activations(X=np.zeros((n, 2), np.float32), doc_ids=np.asarray(doc_ids, np.int32),
                       positions=np.zeros(n, np.int32), token_ids=np.asarray(toks, np.int32),
                       offsets=np.asarray(offs, np.int32), texts=tuple(texts), labels=lab,
                       label_names=None if labels is None else ("a", "b"))


def test_top_rows_sorted_and_correct():
    rng = np.random.default_rng(0)
    codes = rng.uniform(size=(50, 4))
    rows = interpret.top_rows(codes, 5)
    for j in range(4):
        np.testing.assert_array_equal(rows[j], np.argsort(-codes[:, j])[:5])


def test_contexts_windows_stay_in_their_document():
    acts = _acts([10, 40, 5], labels=[0, 1, 0])
    rng = np.random.default_rng(1)
    codes = rng.uniform(size=(55, 3)).astype(np.float32)
    codes[:, 2] = 0.0
    codes[[3, 30], 2] = [2.0, 1.0]  # only two positive codes
    ctxs = interpret.top_contexts(codes, acts, k=6, window=4, dedup_window=None)
    for f in range(2):
        rows = [c.row for c in ctxs[f]]
        np.testing.assert_array_equal(rows, np.argsort(-codes[:, f], kind="stable")[:6])
        for c in ctxs[f]:
            d = acts.doc_ids[c.row]
            assert c.tokens[c.center].strip() == acts.token_text(c.row)
            assert all(t.strip().startswith(f"w{d}_") for t in c.tokens)  # one document
            assert len(c.tokens) <= 9 and c.values[c.center] == pytest.approx(c.value)
            assert c.label == ("a", "b", "a")[d]
    # Row 3 sits in a 10-token document: the window is cut at its start.
    assert [c.row for c in ctxs[2]] == [3, 30]  # codes <= 0 never count
    assert ctxs[2][0].center == 3 and len(ctxs[2][0].tokens) == 8
    assert "".join(ctxs[2][0].tokens) == "w0_0 w0_1 w0_2 w0_3 w0_4 w0_5 w0_6 w0_7"


def test_contexts_deduplicate_near_identical_windows():
    acts = _acts([10, 10, 10])
    acts = dataclasses.replace(acts, token_ids=np.tile(np.arange(10, dtype=np.int32), 3))
    codes = np.zeros((30, 1), np.float32)
    codes[[4, 14, 24, 7], 0] = [4.0, 3.0, 2.0, 1.0]  # rows 4, 14, 24: same tokens around
    ctxs = interpret.top_contexts(codes, acts, k=3, window=2, dedup_window=2)[0]
    assert [c.row for c in ctxs] == [4, 7]
    ctxs = interpret.top_contexts(codes, acts, k=3, window=2, dedup_window=None)[0]
    assert [c.row for c in ctxs] == [4, 14, 24]


def test_contexts_show_a_document_window_once():
    acts = _acts([10, 10])
    codes = np.zeros((20, 1), np.float32)
    codes[[4, 5, 6, 15], 0] = [4.0, 3.0, 2.0, 1.0]  # 5 is in 4's window, 6 just outside
    ctxs = interpret.top_contexts(codes, acts, k=4, window=1, dedup_window=0)[0]
    assert [c.row for c in ctxs] == [4, 6, 15]
    ctxs = interpret.top_contexts(codes, acts, k=4, window=1, dedup_window=None)[0]
    assert [c.row for c in ctxs] == [4, 5, 6, 15]


def test_summary_labels_and_vocab():
    codes = np.zeros((6, 2))
    codes[:3, 0] = [3, 2, 1]
    codes[3:, 1] = [1, 2, 3]
    labels = np.array([0, 0, 1, 1, 1, 1])
    proj = _vocab.VocabProjection(np.array([[1], [0]]), np.ones((2, 1)),
                                     np.array([[2], [1]]), np.ones((2, 1)))
    s = interpret.summarize_features(codes, labels=labels, label_names=["a", "b"],
                                     projection=proj, decode=lambda t: "xyz"[t], k=3,
                                     n_tokens=1)
    assert s[0].label == "a" and abs(s[0].purity - 2 / 3) < 1e-9
    assert s[1].label == "b" and s[1].purity == 1.0
    assert s[0].promoted == ("y",) and s[0].suppressed == ("z",)
    np.testing.assert_array_equal(s[1].top_rows, [5, 4, 3])


# -- neurons --------------------------------------------------------------------

def test_neuron_overlap_counts_and_jaccard():
    phi = np.zeros((3, 8), np.float32)
    phi[0, [0, 1, 2]] = [1, -2, 3]
    phi[1, [2, 3]] = [1, 1]
    phi[2, [0, 2, 3, 7]] = [-1, 1, 1, 1]
    c = interpret.neuron_overlap(phi)
    np.testing.assert_array_equal(c, [[3, 1, 2], [1, 2, 2], [2, 2, 4]])
    j = interpret.neuron_overlap(phi, kind="jaccard")
    np.testing.assert_allclose(j[0, 2], 2 / 5)
    np.testing.assert_allclose(np.diag(j), 1.0)
    ids, w = interpret.feature_neurons(phi)[0]
    np.testing.assert_array_equal(ids, [2, 1, 0])
    np.testing.assert_array_equal(w, [3, -2, 1])
    ids, counts = interpret.shared_neurons(phi, min_features=2)
    assert dict(zip(ids.tolist(), counts.tolist())) == {2: 3, 0: 2, 3: 2}


def test_shared_core_writes_the_family_exclusive_the_member():
    """Planted model: neuron j writes straight onto one token's unembedding."""
    model = _tiny("llama", n_layers=1, d_model=8, vocab_size=8, d_mlp=8)
    p = jax.tree_util.tree_map(np.asarray, model.params)
    p["embed"] = np.eye(8, dtype=np.float32)  # token t reads residual axis t
    p["final_norm"]["scale"] = np.ones(8, np.float32)
    p["layers"]["down"]["kernel"] = np.eye(8, dtype=np.float32)[None]  # neuron j -> axis j
    model = dataclasses.replace(model, params=p)
    phi = np.zeros((3, 8), np.float32)
    # Neurons 0, 1: the family's core (tokens 0, 1); 2, 3, 4: each member's own token.
    phi[0, [0, 1, 2]] = 1.0
    phi[1, [0, 1, 3]] = 1.0
    phi[2, [0, 1, 4]] = 1.0
    comp = interpret.group_composition(phi, [0, 1, 2])
    np.testing.assert_array_equal(comp.shared, [0, 1])
    assert {m: v.tolist() for m, v in comp.exclusive.items()} == {0: [2], 1: [3], 2: [4]}
    sets = {"family": [0, 1], "m0": [2], "m1": [3], "m2": [4]}
    for prompt in (None, [1, 5, 3, 7]):  # vocabulary projection; amplified in the forward
        eff = interpret.composition_effects(model, phi, comp, layer=0, token_sets=sets,
                                            prompt=prompt, alpha=50.0)
        assert np.all(eff.shared[:, 0] > eff.shared[:, 1:].max(axis=1))  # shared -> family
        for j in range(3):  # exclusive -> the member's own token, most
            assert np.argmax(eff.exclusive[j]) == j + 1
    with pytest.raises(ValueError, match="at least two"):
        interpret.group_composition(phi, [1])


# -- labels -----------------------------------------------------------------------

def test_label_association_matches_pairwise_auc_with_ties():
    rng = np.random.default_rng(3)
    codes = np.round(np.maximum(rng.standard_normal((60, 3)), 0), 1)  # many ties
    labels = rng.integers(0, 3, size=60)
    a = interpret.label_association(codes, labels, ["x", "y", "z"])
    for k, l in itertools.product(range(3), range(3)):
        pos, neg = codes[labels == l, k], codes[labels != l, k]
        want = ((pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum()) / (
            len(pos) * len(neg))
        assert a.auc[k, l] == pytest.approx(want, abs=1e-6)
        assert a.mean_code[k, l] == pytest.approx(pos.mean(), rel=1e-5)


def test_label_association_finds_planted_labels():
    rng = np.random.default_rng(4)
    n, n_lab = 400, 4
    labels = rng.integers(0, n_lab, size=n)
    codes = np.maximum(rng.standard_normal((n, 6)) * 0.3, 0)
    perm = [2, 0, 3, 1]  # feature k fires on label perm[k]; features 4, 5 are noise
    for k, l in enumerate(perm):
        codes[labels == l, k] += rng.uniform(1, 2, size=(labels == l).sum())
    a = interpret.label_association(codes, labels, ["w", "x", "y", "z"])
    for k, l in enumerate(perm):
        assert a.best_labels(k, 1)[0][0] == "wxyz"[l] and a.auc[k, l] > 0.95
        assert a.best_features("wxyz"[l], 1)[0][0] == k
    assert np.all(np.abs(a.auc[4:] - 0.5) < 0.15)
    with pytest.raises(ValueError, match="labels must have shape"):
        interpret.label_association(codes, labels[:5], ["w"])


def test_label_association_pools_documents_by_their_largest_code():
    # Four 5-token documents; feature 0 fires on ONE token of each "b" document.
    labels = np.repeat([0, 1, 0, 1], 5)
    docs = np.repeat([0, 1, 2, 3], 5)
    codes = np.full((20, 1), 0.1)
    codes[[7, 17], 0] = 5.0
    tok = interpret.label_association(codes, labels, ["a", "b"])
    doc = interpret.label_association(codes, labels, ["a", "b"], doc_ids=docs)
    assert tok.auc[0, 1] < 0.75 and doc.auc[0, 1] == 1.0
    assert doc.mean_code[0, 1] == pytest.approx(5.0)
    with pytest.raises(ValueError, match="mix labels"):
        interpret.label_association(codes, labels, ["a", "b"], doc_ids=np.zeros(20, int))
