"""KL calibration: hits its targets, reports unreachable ones, batches without recompiling."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from snmf_jax import steer as st
from snmf_jax.testing import tiny_model
from snmf_jax.steer import _calibrate

PROMPT = [2, 5, 6, 7, 8]
TARGETS = (0.05, 0.2, 0.5, 1000.0)  # the last one is out of reach of any alpha
RTOL = 0.02


@pytest.fixture(scope="module")
def model():
    return tiny_model(seed=1, logit_scale=3.0)


@pytest.fixture(scope="module")
def dirs():
    rng = np.random.default_rng(0)
    # Layer 1: the search shares the block before it across rows (share_prefix).
    return st.Directions.from_vectors(rng.standard_normal((3, 48)), layer=1, site="mlp_hidden",
                         ids=(7, 8, 9))


@pytest.fixture(scope="module")
def both(model, dirs):
    return st.calibrate_both(model, dirs, targets=TARGETS, prompt=PROMPT, rtol=RTOL,
                             progress=False)


def kl_at(model, direction, scale):
    """KL(p_base || p_steered) recomputed from scratch with a one-vector patch."""
    tok = jnp.asarray([PROMPT])
    base = jax.nn.log_softmax(model.forward(tok).logits[0, -1])
    patch = st.make_patch(1, "mlp_hidden", direction, scale=scale)
    steered = jax.nn.log_softmax(st.steer(model, patch).forward(tok).logits[0, -1])
    return float(jnp.sum(jnp.exp(base) * (base - steered)))


def test_calibrated_alpha_hits_each_reachable_target(model, dirs, both):
    for cal in both:
        assert cal.alphas.shape == cal.kl.shape == cal.reachable.shape == (3, 4)
        assert cal.ids == (7, 8, 9) and cal.targets == TARGETS
        np.testing.assert_array_equal(cal.reachable[:, :3], True)
        for f in range(3):
            for t in range(3):
                kl = kl_at(model, dirs.vectors[f], cal.sign * cal.alphas[f, t])
                assert kl == pytest.approx(TARGETS[t], rel=RTOL + 1e-3)
                assert cal.kl[f, t] == pytest.approx(kl, rel=1e-3)
        # Larger targets need larger alphas.
        assert (np.diff(cal.alphas[:, :3], axis=1) > 0).all()


def test_unreachable_targets_are_reported_with_the_best_kl(model, dirs, both):
    for cal in both:
        assert not cal.reachable[:, 3].any()
        assert (cal.kl[:, 3] < 1000.0).all()
        # The best KL reached is at least the largest reachable target's.
        assert (cal.kl[:, 3] >= cal.kl[:, 2] * (1 - RTOL)).all()
        f = 0
        assert kl_at(model, dirs.vectors[f], cal.sign * cal.alphas[f, 3]) == pytest.approx(
            cal.kl[f, 3], rel=1e-3)
    assert "unreachable=3" in repr(both[0])


def test_signs_are_calibrated_separately(both):
    pos, neg = both
    assert pos.sign == 1 and neg.sign == -1
    assert (pos.alphas > 0).all() and (neg.alphas > 0).all()
    assert np.abs(pos.alphas[:, :3] / neg.alphas[:, :3] - 1).max() > 0.05
    np.testing.assert_allclose(neg.scales(0.2), -neg.alphas[:, 1])
    patch = pos.patch(st.Directions.from_vectors(np.ones((3, 48)), layer=1, site="mlp_hidden"), 0.5)
    np.testing.assert_allclose(patch[(1, "mlp_hidden")].scale, pos.alphas[:, 2])


def test_batched_search_matches_per_feature_search_and_chunking(model, dirs, both):
    one = st.calibrate(model, dirs.select(1), targets=TARGETS, prompt=PROMPT, rtol=RTOL,
                       progress=False)
    np.testing.assert_allclose(one.alphas[0], both[0].alphas[1], rtol=1e-3)
    assert one.ids == (8,)
    chunked = st.calibrate_both(model, dirs, targets=TARGETS, prompt=PROMPT, rtol=RTOL,
                                max_rows=12, progress=False)
    for a, b in zip(chunked, both):
        np.testing.assert_allclose(a.alphas, b.alphas, rtol=1e-3)


def test_new_directions_reuse_the_compiled_search(model, dirs, both):
    size = _calibrate.batched_kl._cache_size()
    rng = np.random.default_rng(5)
    other = st.Directions.from_vectors(rng.standard_normal((3, 48)), layer=1, site="mlp_hidden")
    res = st.calibrate_both(model, other, targets=TARGETS, prompt=PROMPT, rtol=RTOL,
                            progress=False)
    assert _calibrate.batched_kl._cache_size() == size
    assert np.abs(res[0].alphas[:, :3] / both[0].alphas[:, :3] - 1).max() > 0.01


def test_search_state_brackets_then_bisects_in_log_space():
    s = st._calibrate.SearchState(np.array([1.0]), 1.0, alpha_min=1e-3, alpha_max=100.0,
                                  growth=2.0)
    kl = lambda a: 0.01 * a ** 2  # target 1.0 at alpha = 10
    seen = []
    for _ in range(30):
        seen.append(float(s.alpha[0]))
        s.update(kl(s.alpha))
    assert seen[:5] == [1.0, 2.0, 4.0, 8.0, 16.0]  # geometric bracketing
    assert seen[5] == pytest.approx(np.sqrt(8.0 * 16.0))  # log-space midpoint
    assert s.best_alpha[0] == pytest.approx(10.0, rel=1e-4)
    assert s.reachable[0] and s.done(1e-3)[0]


def test_calibrate_validates_arguments(model, dirs):
    kw = dict(prompt=PROMPT, progress=False)
    with pytest.raises(ValueError, match="where='generated' does not change"):
        st.calibrate(model, dirs, where="generated", **kw)
    with pytest.raises(ValueError, match="targets must be positive"):
        st.calibrate(model, dirs, targets=(0.1, -1.0), **kw)
    with pytest.raises(ValueError, match="sign must be"):
        st.calibrate(model, dirs, sign=2, **kw)
    with pytest.raises(ValueError, match="do not fit the model"):
        st.calibrate(model, st.Directions.from_vectors(np.ones(32), layer=0, site="mlp_hidden"), **kw)
    with pytest.raises(ValueError, match="need 0 < alpha_min <= alpha_init <= alpha_max"):
        st.calibrate(model, dirs, alpha_init=10.0, alpha_max=1.0, **kw)


@pytest.mark.parametrize("family", ["gemma3", "gpt2"])  # llama: covered by the tests above
def test_shared_prefix_gives_the_same_kl_as_the_full_forward(family):
    """batched_kl from the stream entering the layer (the model's own embed/run_blocks)
    equals the KL of full patched forwards, one row at a time."""
    from snmf_jax import models
    # Gemma 3 with a window of 3 (< the prompt's 5 tokens) and head_dim's query scaling.
    extra = dict(sliding_window=3, query_pre_attn_scalar=None) if family == "gemma3" else {}
    tiny = tiny_model(family, seed=2, n_layers=3, n_kv_heads=4 if family == "gpt2" else 2,
                      tie_embeddings=family == "gemma3", **extra)
    cfg, params = tiny.config, tiny.params
    tok, mask = jnp.asarray([PROMPT]), jnp.ones((1, len(PROMPT)), jnp.int32)
    base = jax.nn.log_softmax(st.patched_forward(params, tok, None, config=cfg).logits[0, -1])
    vecs = jnp.asarray(np.random.default_rng(0).standard_normal((4, 48)), jnp.float32)
    scales = jnp.asarray([0.5, 1.0, 2.0, 4.0])
    ref = []
    for v, a in zip(vecs, scales):
        patch = st.make_patch(2, "mlp_hidden", v, scale=a)
        logp = jax.nn.log_softmax(st.patched_forward(params, tok, patch, config=cfg)
                                  .logits[0, -1])
        ref.append(float(jnp.sum(jnp.exp(base) * (base - logp))))
    assert min(ref) > 1e-4
    x = models.embed(params, tok, config=cfg)
    stream, _, _ = models.run_blocks(params, x, config=cfg, stop=2)  # (1, T, D)
    for s in (stream[0], None):
        kl = _calibrate.batched_kl(params, tok, mask, base, vecs, scales, s, config=cfg, layer=2,
                           site="mlp_hidden")
        np.testing.assert_allclose(np.asarray(kl), ref, rtol=1e-4, atol=1e-7)
