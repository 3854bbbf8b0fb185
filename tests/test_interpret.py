import dataclasses

import numpy as np

from snmf_jax import interpret


def test_top_rows_sorted_and_correct():
    rng = np.random.default_rng(0)
    codes = rng.uniform(size=(50, 4))
    rows = interpret.top_rows(codes, 5)
    for j in range(4):
        np.testing.assert_array_equal(rows[j], np.argsort(-codes[:, j])[:5])


def test_summary_labels_and_vocab():
    codes = np.zeros((6, 2))
    codes[:3, 0] = [3, 2, 1]
    codes[3:, 1] = [1, 2, 3]
    labels = np.array([0, 0, 1, 1, 1, 1])
    logits = np.array([[0.0, 5.0, -5.0], [1.0, -1.0, 0.0]])
    s = interpret.summarize_features(codes, labels=labels, label_names=["a", "b"],
                                     logits=logits, decode=lambda t: "xyz"[t], k=3,
                                     n_tokens=1)
    assert s[0].label == "a" and abs(s[0].purity - 2 / 3) < 1e-9
    assert s[1].label == "b" and s[1].purity == 1.0
    assert s[0].promoted == ("y",) and s[0].suppressed == ("z",)
    np.testing.assert_array_equal(s[1].top_rows, [5, 4, 3])


def test_vocab_projection_matches_manual():
    from snmf_jax.models import ModelConfig
    rng = np.random.default_rng(1)
    params = {"embed": rng.standard_normal((7, 3)),
              "layers": {"down": {"kernel": rng.standard_normal((2, 5, 3))}}}
    config = ModelConfig(family="llama", vocab_size=7, d_model=3, n_layers=2, n_heads=1,
                         n_kv_heads=1, head_dim=3, d_mlp=5, tie_embeddings=True)
    feats = rng.standard_normal((2, 5))
    out = interpret.vocab_projection(params, config, feats, layer=1)
    np.testing.assert_allclose(out, feats @ params["layers"]["down"]["kernel"][1] @ params["embed"].T,
                               rtol=1e-4, atol=1e-5)
    # Untied: the unembedding kernel is used, not the embedding.
    params["unembed"] = {"kernel": rng.standard_normal((3, 7))}
    untied = dataclasses.replace(config, tie_embeddings=False)
    out = interpret.vocab_projection(params, untied, feats, layer=1)
    np.testing.assert_allclose(out, feats @ params["layers"]["down"]["kernel"][1]
                               @ params["unembed"]["kernel"], rtol=1e-4, atol=1e-5)
