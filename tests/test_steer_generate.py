"""Generation: cached = uncached, padding, stop tokens, and sampling filters.

Compilation dominates the cost of these tests, so they share a few programs:
every call uses 2 prompts x 2 variants and 4 new tokens, greedy or one
sampling configuration (top-k and top-p both on).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from snmf_jax import steer as st
from snmf_jax.models import Model
from snmf_jax.steer._generate import encode_prompts
from snmf_jax.testing import CharTokenizer, tiny_model
from snmf_jax.steer import _generate
from snmf_jax.steer import _sampling

TEMPLATE = "<user>{content}<assistant>"


@pytest.fixture(scope="module")
def model():
    # Decoded text is the ids joined by spaces, so a test can read back which
    # tokens were generated; peaked next-token distributions (logits x3).
    return tiny_model(tokenizer=CharTokenizer(chat_template=TEMPLATE, decode_ids=True),
                      logit_scale=3.0)


PROMPTS = [[2, 5, 6, 7, 8], [2, 9, 10]]
NEW = 4
SAMPLING = dict(temperature=1.0, top_k=20, top_p=0.9)


@pytest.fixture(scope="module")
def patch():
    rng = np.random.default_rng(0)
    dirs = st.Directions.from_vectors(rng.standard_normal((2, 48)), layer=0, site="mlp_hidden")
    return dirs.patch(np.array([3.0, -3.0]))


def gen(model, patch, **kw):
    kw = {"max_new_tokens": NEW, "stop_ids": (), **kw}
    return st.generate(model, kw.pop("prompts", PROMPTS), patch, **kw)


@pytest.mark.parametrize("where", ["all", "prompt", "generated"])
def test_cached_generation_equals_full_forward_generation(model, patch, where):
    cached = gen(model, patch, where=where)
    full = gen(model, patch, where=where, use_cache=False)
    assert cached.tokens.shape == (2, 2, 1, NEW)
    np.testing.assert_array_equal(cached.tokens, full.tokens)
    assert len(np.unique(cached.tokens)) > 2  # not a degenerate constant run


def test_sampled_generation_cached_equals_uncached(model, patch):
    a = gen(model, patch, seed=3, **SAMPLING)
    b = gen(model, patch, seed=3, use_cache=False, **SAMPLING)
    np.testing.assert_array_equal(a.tokens, b.tokens)
    c = gen(model, patch, seed=4, **SAMPLING)
    assert (a.tokens != c.tokens).any()  # the seed matters


def test_left_padded_batch_equals_each_prompt_alone(model, patch):
    both = gen(model, patch)  # padded to 8 tokens
    for j, prompt in enumerate(PROMPTS):
        alone = gen(model, patch, prompts=[prompt], pad_multiple=16)  # more padding
        np.testing.assert_array_equal(alone.tokens[:, 0], both.tokens[:, j])


def test_patch_changes_generation_and_where_generated_spares_the_first_token(model, patch):
    base = gen(model, st.with_scale(patch, 0.0)).tokens
    assert (gen(model, patch).tokens != base).any()
    gen_only = gen(model, patch, where="generated").tokens
    # The first new token is predicted from prompt positions only.
    np.testing.assert_array_equal(gen_only[..., 0], base[..., 0])
    assert (gen_only[..., 1:] != base[..., 1:]).any()


def test_stop_tokens_end_rows_and_pad_the_rest(model, patch):
    free = gen(model, patch).tokens
    row = free[0, 0, 0]
    stop = int(row[2])
    first = int(np.argmax(row == stop))
    out = gen(model, patch, stop_ids=(stop,))
    assert out.lengths[0, 0, 0] == first + 1
    np.testing.assert_array_equal(out.tokens[0, 0, 0, :first + 1], row[:first + 1])
    assert (out.tokens[0, 0, 0, first + 1:] == CharTokenizer.pad_id).all()
    # Every row stops at its own first stop token (rows are independent).
    hit = free == stop
    np.testing.assert_array_equal(out.lengths, np.where(hit.any(-1), hit.argmax(-1) + 1, NEW))
    assert out.texts[0][0][0].split() == [str(t) for t in row[:first]]  # stop token dropped


def test_top_k_1_and_tiny_top_p_sample_the_greedy_token(model, patch):
    greedy = gen(model, patch).tokens
    k1 = gen(model, patch, temperature=2.0, top_k=1, top_p=0.999999, seed=1).tokens
    p0 = gen(model, patch, temperature=2.0, top_k=64, top_p=1e-6, seed=2).tokens
    np.testing.assert_array_equal(k1, greedy)
    np.testing.assert_array_equal(p0, greedy)


def test_no_recompilation_across_alphas_and_seeds(model, patch):
    gen(model, patch, **SAMPLING)
    size = _generate.generate_tokens._cache_size()
    outs = [gen(model, st.with_scale(patch, np.array([3.0, -3.0]) * 0.5 * (i + 1)), seed=i,
                **SAMPLING).tokens
            for i in range(3)]
    assert _generate.generate_tokens._cache_size() == size
    assert (outs[0] != outs[2]).any()


def test_chat_template_wraps_text_prompts(model):
    tok = model.tokenizer
    assert encode_prompts(model, "hi", chat=True) == [
        tok.encode("<user>hi<assistant>", add_bos=False)]
    assert encode_prompts(model, ["hi", "yo"]) == [tok.encode("hi"), tok.encode("yo")]
    no_template = CharTokenizer(decode_ids=True)
    with pytest.raises(ValueError, match="has no chat template"):
        encode_prompts(Model(model.config, model.params, no_template), "hi", chat=True)
    with pytest.raises(ValueError, match="chat=True needs text prompts"):
        encode_prompts(model, PROMPTS, chat=True)


def test_generate_validates_arguments(model):
    with pytest.raises(ValueError, match="top_p must be in"):
        st.generate(model, PROMPTS, None, top_p=0.0)
    with pytest.raises(ValueError, match="where must be one of"):
        st.generate(model, PROMPTS, None, where="everywhere")
    with pytest.raises(ValueError, match="exceeds max_position"):
        st.generate(model, PROMPTS, None, max_new_tokens=100)
    with pytest.raises(ValueError, match="at least one token"):
        st.generate(model, [[]], None)


# ----------------------------------------------------------------- filters

@pytest.mark.parametrize("t,k,p", [(1.0, 30, 0.3), (0.7, 5, 1.0), (1.5, 17, 0.9), (1.0, 1, 0.5)])
def test_candidate_sampler_draws_the_filtered_distribution(t, k, p):
    """sample_logits(max_k=) (what generate uses) draws from exactly the
    distribution filter_logits defines over the whole vocabulary."""
    rng = np.random.default_rng(k)
    logits = rng.normal(size=(1, 500)).astype(np.float32) * 2.0
    logits[0, :6] = logits[0].max() - 0.5  # six tokens tied near the top
    logits = jnp.asarray(logits)
    want = np.asarray(jax.nn.softmax(_sampling.filter_logits(logits, temperature=t, top_k=k, top_p=p)))[0]
    keys = jax.random.split(jax.random.PRNGKey(0), 6000)
    draws = np.asarray(jax.jit(jax.vmap(lambda key: st.sample_logits(
        key, logits, temperature=t, top_k=k, top_p=p, max_k=32)[0]))(keys))
    assert set(draws.tolist()) <= set(np.flatnonzero(want > 0).tolist())
    freq = np.bincount(draws, minlength=500) / len(draws)
    np.testing.assert_allclose(freq, want, atol=0.025)


def test_candidate_sampler_keeps_ties_and_refuses_k_above_its_bound():
    x = jnp.asarray([[1.0, 2.0, 2.0, 0.0, -1.0]])
    keys = jax.random.split(jax.random.PRNGKey(1), 400)
    draws = np.asarray(jax.vmap(lambda key: st.sample_logits(
        key, x, top_k=2, top_p=1.0, use_top_p=False, max_k=4)[0])(keys))
    assert set(draws.tolist()) == {1, 2}  # the two tied at the 2nd value, nothing else
    one = np.asarray(jax.vmap(lambda key: st.sample_logits(
        key, x, top_k=1, top_p=1.0, max_k=4)[0])(keys))
    assert set(one.tolist()) == {1, 2}  # ties with the k-th are kept, as top_k_filter does
    with pytest.raises(ValueError, match="top_k must be in"):
        st.sample_logits(jax.random.PRNGKey(0), x, top_k=8, max_k=4)
    with pytest.raises(ValueError, match="top_k must be in"):
        st.sample_logits(jax.random.PRNGKey(0), x, top_k=0, max_k=4)


def test_top_k_filter_keeps_exactly_the_k_largest():
    x = jnp.asarray([[0.1, 3.0, -1.0, 2.0, 5.0, -7.0], [1.0, 1.0, 0.0, -2.0, 0.5, 0.2]])
    out = np.asarray(_sampling.top_k_filter(x, 3))
    np.testing.assert_array_equal(np.isfinite(out[0]), [0, 1, 0, 1, 1, 0])
    np.testing.assert_array_equal(out[0][np.isfinite(out[0])], [3.0, 2.0, 5.0])
    np.testing.assert_array_equal(np.isfinite(out[1]), [1, 1, 0, 0, 1, 0])
    per_row = np.asarray(_sampling.top_k_filter(x, jnp.asarray([1, 2])))
    assert np.isfinite(per_row).sum(1).tolist() == [1, 2]
    assert np.isfinite(np.asarray(_sampling.top_k_filter(x, 0))).all()  # 0: off
    assert np.isfinite(np.asarray(_sampling.top_k_filter(x, 99))).all()
    ties = np.asarray(_sampling.top_k_filter(jnp.asarray([1.0, 2.0, 2.0, 0.0]), 2))
    np.testing.assert_array_equal(np.isfinite(ties), [0, 1, 1, 0])


def test_top_p_filter_keeps_the_smallest_nucleus():
    probs = np.array([0.05, 0.5, 0.15, 0.3])
    x = jnp.log(jnp.asarray(probs, jnp.float32))
    keep = lambda p: np.isfinite(np.asarray(_sampling.top_p_filter(x, p))).astype(int).tolist()
    assert keep(0.4) == [0, 1, 0, 0]
    assert keep(0.79) == [0, 1, 0, 1]
    assert keep(0.81) == [0, 1, 1, 1]
    assert keep(0.96) == [1, 1, 1, 1]
    assert keep(1.0) == [1, 1, 1, 1]
    assert keep(1e-9) == [0, 1, 0, 0]  # the most likely token always survives


def test_sampling_support_respects_top_k_and_top_p():
    probs = np.array([0.3, 0.25, 0.2, 0.1, 0.08, 0.04, 0.02, 0.01])
    logits = jnp.log(jnp.asarray(probs, jnp.float32))[None]  # (1, V)
    keys = jax.random.split(jax.random.PRNGKey(0), 4000)

    @jax.jit
    def draw_all(temperature, top_k, top_p):
        return jax.vmap(lambda k: st.sample_logits(
            k, logits, temperature=temperature, top_k=top_k, top_p=top_p)[0])(keys)

    def support(t=1.0, k=0, p=1.0):
        out = np.asarray(draw_all(t, k, p))
        return set(out.tolist()), out

    assert support()[0] == set(range(8))  # without filters every token shows up
    k3, draws = support(k=3)
    assert k3 == {0, 1, 2}
    freq = np.bincount(draws, minlength=8)[:3] / len(draws)
    np.testing.assert_allclose(freq, probs[:3] / probs[:3].sum(), atol=0.03)
    assert support(p=0.7)[0] == {0, 1, 2}  # 0.3 + 0.25 + 0.2 = 0.75 >= 0.7
    assert support(p=0.8)[0] == {0, 1, 2, 3}
    assert support(k=2, p=0.99)[0] == {0, 1}
    # Temperature comes first: at T=0.25 the top two hold 87% of the mass.
    assert support(t=0.25, p=0.8)[0] == {0, 1}
