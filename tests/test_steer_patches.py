"""Patches as data: where they act, what they equal, and that they never recompile."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from snmf_jax import steer as st
from snmf_jax.testing import tiny_model
from snmf_jax.steer import _patches


def tiny(seed=0):
    return tiny_model(seed=seed, tie_embeddings=True, name="tiny-llama")


TOKENS = jnp.array([[5, 6, 7, 8, 9, 10], [11, 12, 13, 14, 15, 16]], jnp.int32)


@pytest.fixture(scope="module")
def llama():
    return tiny()


def logits(model, patch=None, **kw):
    return np.asarray(st.steer(model, patch, **kw).forward(TOKENS).logits)


def test_mlp_hidden_patch_equals_down_projected_mlp_out_and_resid_patch(llama):
    rng = np.random.default_rng(0)
    v = rng.standard_normal(48).astype(np.float32)
    w = np.asarray(llama.params["layers"]["down"]["kernel"][1])  # (d_mlp, D)
    base = logits(llama)
    hid = logits(llama, st.make_patch(1, "mlp_hidden", v, scale=1.5))
    out = logits(llama, st.make_patch(1, "mlp_out", v @ w, scale=1.5))
    res = logits(llama, st.make_patch(1, "resid_post", v @ w, scale=1.5))
    assert np.abs(hid - base).max() > 1e-2  # the patch does something
    np.testing.assert_allclose(hid, out, atol=1e-5)
    np.testing.assert_allclose(hid, res, atol=1e-5)


def test_zero_patch_is_the_unpatched_model(llama):
    base = logits(llama)
    np.testing.assert_allclose(base, np.asarray(llama.forward(TOKENS).logits), atol=1e-6)
    ones = np.ones(48, np.float32)
    np.testing.assert_allclose(logits(llama, st.make_patch(1, "mlp_hidden", ones, scale=0.0)),
                               base, atol=1e-6)
    zero = st.make_patch(1, "mlp_out", np.zeros(32, np.float32), scale=3.0)
    np.testing.assert_allclose(logits(llama, zero), base, atol=1e-6)


def test_replace_mode_sets_the_site_to_the_vector(llama):
    v = np.linspace(-1, 1, 48).astype(np.float32)
    sm = st.steer(llama, st.make_patch(0, "mlp_hidden", v, scale=2.0, mode="replace"))
    h = np.asarray(sm.forward(TOKENS, capture=[(0, "mlp_hidden")]).captures[(0, "mlp_hidden")])
    np.testing.assert_allclose(h, np.broadcast_to(2.0 * v, h.shape), atol=1e-6)


def test_position_masks():
    m = _patches.position_mask("prompt", 4, prompt_len=5, offset=3)
    np.testing.assert_array_equal(m, [[1, 1, 0, 0]])
    m = _patches.position_mask("generated", 4, prompt_len=5, offset=3)
    np.testing.assert_array_equal(m, [[0, 0, 1, 1]])
    m = _patches.position_mask("all", 3, prompt_len=0, attention_mask=jnp.array([[0, 1, 1]]))
    np.testing.assert_array_equal(m, [[0, 1, 1]])
    with pytest.raises(ValueError, match="where must be one of"):
        _patches.position_mask("middle", 3, prompt_len=1)


def test_where_modes_in_forward(llama):
    rng = np.random.default_rng(1)
    patch = st.make_patch(0, "mlp_hidden", rng.standard_normal(48), scale=2.0)
    base = logits(llama)
    # prompt_len=3: the first 3 slots are prompt, the rest "generated".
    prompt = np.asarray(st.steer(llama, patch, where="prompt").forward(TOKENS, prompt_len=3).logits)
    gen = np.asarray(st.steer(llama, patch, where="generated").forward(TOKENS, prompt_len=3).logits)
    # Causal: a "generated"-only patch cannot change the first 3 positions.
    np.testing.assert_allclose(gen[:, :3], base[:, :3], atol=1e-6)
    assert np.abs(gen[:, 3:] - base[:, 3:]).max() > 1e-3
    assert np.abs(prompt[:, :3] - base[:, :3]).max() > 1e-3
    # Equivalent to an explicit mask on the contract's SitePatch.
    pos = jnp.asarray([[1, 1, 1, 0, 0, 0]] * 2, jnp.float32)
    explicit = {k: sp._replace(positions=pos) for k, sp in patch.items()}
    ref = np.asarray(llama.forward(TOKENS, patch=explicit).logits)
    np.testing.assert_allclose(prompt, ref, atol=1e-6)


def test_batched_patch_rows_and_vmap_match_single_patches(llama):
    rng = np.random.default_rng(2)
    vecs = rng.standard_normal((2, 48)).astype(np.float32)
    scales = np.array([0.5, -2.0], np.float32)
    singles = [st.make_patch(1, "mlp_hidden", vecs[i], scale=scales[i]) for i in range(2)]
    # Row i of the batch under patch i alone.
    expected = np.stack([logits(llama, p)[i] for i, p in enumerate(singles)])
    batched = st.make_patch(1, "mlp_hidden", vecs, scale=scales)
    np.testing.assert_allclose(logits(llama, batched), expected, atol=1e-5)
    # Stacked patches mapped with jax.vmap (each variant on its own row).
    stacked = _patches.stack_patches(singles)

    def row(p, tok):
        return st.patched_forward(llama.params, tok[None], p, config=llama.config).logits[0]

    mapped = jax.vmap(row, in_axes=(_patches.vmap_axes(stacked), 0))(stacked, TOKENS)
    np.testing.assert_allclose(np.asarray(mapped), expected, atol=1e-5)


def test_changing_vector_or_alpha_never_recompiles(llama):
    rng = np.random.default_rng(3)
    sm = st.steer(llama, st.make_patch(1, "mlp_hidden", rng.standard_normal(48), scale=1.0))
    sm.forward(TOKENS).logits.block_until_ready()
    size = st.patched_forward._cache_size()
    outs = []
    for i in range(4):
        p = st.make_patch(1, "mlp_hidden", rng.standard_normal(48), scale=0.5 * i - 1)
        outs.append(np.asarray(st.steer(llama, p).forward(TOKENS).logits))
        outs.append(np.asarray(sm.with_scale(float(i)).forward(TOKENS).logits))
    assert st.patched_forward._cache_size() == size
    assert np.abs(outs[0] - outs[2]).max() > 1e-4  # the runs really differ
    # New sites are new programs (a sanity check that the counter counts).
    st.steer(llama, st.make_patch(0, "resid_post", np.ones(32), scale=1.0)).forward(TOKENS)
    assert st.patched_forward._cache_size() == size + 1


def test_patch_builders_validate_inputs(llama):
    with pytest.raises(ValueError, match="width 48"):
        st.make_patch(0, "mlp_hidden", np.ones(32), config=llama.config)
    with pytest.raises(ValueError, match="site must be one of"):
        st.make_patch(0, "attn", np.ones(48))
    with pytest.raises(ValueError, match="mode must be 'add' or 'replace'"):
        st.make_patch(0, "mlp_hidden", np.ones(48), mode="mul")
    with pytest.raises(ValueError, match=r"layer must be in \[0, 2\)"):
        st.make_patch(5, "mlp_hidden", np.ones(48), config=llama.config)
    with pytest.raises(ValueError, match="scale has 2 entries but vector has 3 rows"):
        st.make_patch(0, "mlp_hidden", np.ones((3, 48)), scale=np.ones(2))
    with pytest.raises(ValueError, match="patch has 3 variants, so tokens must have 3 rows"):
        st.steer(llama, st.make_patch(0, "mlp_hidden", np.ones((3, 48)))).forward(TOKENS)
    with pytest.raises(ValueError, match="cannot stack add and replace"):
        _patches.stack_patches([st.make_patch(0, "mlp_hidden", np.ones(48)),
                          st.make_patch(0, "mlp_hidden", np.ones(48), mode="replace")])
    with pytest.raises(ValueError, match="appears in more than one patch"):
        p = st.make_patch(0, "mlp_hidden", np.ones(48))
        st.combine(p, p)


def test_repeat_rows_is_variant_major():
    p = st.make_patch(0, "mlp_hidden", np.arange(6.0).reshape(2, 3), scale=np.array([1.0, 2.0]))
    r = _patches.repeat_rows(p, 2, 3)[(0, "mlp_hidden")]
    np.testing.assert_array_equal(r.scale, [1, 1, 1, 2, 2, 2])
    np.testing.assert_array_equal(r.vector[3], [3, 4, 5])


def test_one_spelling_for_steering(llama):
    """`snmf_jax.steer` is a plain package; `steer.steer` builds the steered model."""
    import types
    import snmf_jax
    assert type(snmf_jax.steer) is types.ModuleType and not callable(snmf_jax.steer)
    patch = st.make_patch(1, "mlp_hidden", np.ones(48), scale=0.5)
    steered = snmf_jax.steer.steer(llama, patch, where="prompt")
    assert isinstance(steered, st.SteeredModel) and steered.where == "prompt"
    assert "variants=None" in repr(steered)
    for old in ("scale_patch", "patched_forward_impl", "next_token_logprobs"):
        assert not hasattr(st, old), old
    assert not hasattr(st.SteeredModel, "scaled")
