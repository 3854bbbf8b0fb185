"""Feature -> steering direction, including Gemma's post-feedforward norm."""

import jax.numpy as jnp
import numpy as np
import pytest

from snmf_jax import steer as st
from snmf_jax.testing import tiny_model
from snmf_jax.steer import _directions


def tiny(family):
    # Gemma 3: sandwich norms, so a feature's direction passes its post-MLP norm.
    return tiny_model(family, tie_embeddings=True, name=family)


@pytest.fixture(scope="module")
def llama():
    return tiny("llama")


@pytest.fixture(scope="module")
def gemma():
    return tiny("gemma3")


PHI = np.random.default_rng(0).standard_normal((5, 48)).astype(np.float32)


def test_llama_feature_directions_are_unit_feature_rows(llama):
    d = st.feature_directions(llama, PHI, layer=1, indices=[3, 0])
    assert d.site == "mlp_hidden" and d.layer == 1 and d.ids == (3, 0)
    np.testing.assert_allclose(d.vectors, PHI[[3, 0]] / np.linalg.norm(PHI[[3, 0]], axis=1,
                                                                        keepdims=True), rtol=1e-6)
    patch = d.patch(np.array([2.0, -1.0]))[(1, "mlp_hidden")]
    assert patch.vector.shape == (2, 48) and patch.scale.tolist() == [2.0, -1.0]
    single = d.select(1).patch(0.5)[(1, "mlp_hidden")]
    assert single.vector.shape == (48,) and float(single.scale) == 0.5


def test_gemma_directions_go_through_down_projection_and_post_norm(gemma):
    d = st.feature_directions(gemma, PHI, layer=1)
    assert d.site == "mlp_out"  # auto: Gemma has a post-feedforward norm
    w = np.asarray(gemma.params["layers"]["down"]["kernel"][1])
    scale = np.asarray(gemma.params["layers"]["post_mlp_norm"]["scale"][1])
    unit = PHI / np.linalg.norm(PHI, axis=1, keepdims=True)
    y = unit @ w
    normed = y / np.sqrt(np.mean(y ** 2, axis=1, keepdims=True) + 1e-6) * scale
    expected = normed / np.linalg.norm(normed, axis=1, keepdims=True)
    np.testing.assert_allclose(d.vectors, expected, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(d.vectors, axis=1), 1.0, rtol=1e-5)
    # Semantics: a huge push along the feature at mlp_hidden makes the
    # (post-normed) MLP output point along the mlp_out direction.
    tok = jnp.asarray([[3, 4, 5, 6]])
    patch = st.make_patch(1, "mlp_hidden", unit[2], scale=1e5)
    out = np.asarray(st.steer(gemma, patch).forward(tok, capture=[(1, "mlp_out")])
                     .captures[(1, "mlp_out")][0])
    cos = out @ d.vectors[2] / np.linalg.norm(out, axis=1)
    np.testing.assert_allclose(cos, 1.0, atol=1e-4)
    # Explicit site choice is honoured.
    assert st.feature_directions(gemma, PHI, layer=1, site="mlp_hidden").site == "mlp_hidden"


def test_hidden_preimage_is_the_least_norm_solution(llama):
    target = np.random.default_rng(1).standard_normal(32).astype(np.float32)
    v = _directions.hidden_preimage(llama.params, llama.config, 0, target)
    w = np.asarray(llama.params["layers"]["down"]["kernel"][0], np.float64)  # (48, 32)
    np.testing.assert_allclose(v @ w, target, atol=1e-4)
    # Least norm: v lies in the row space of W^T (the column space of W).
    coef, *_ = np.linalg.lstsq(w, v, rcond=None)
    np.testing.assert_allclose(w @ coef, v, atol=1e-4)


def test_generic_directions_and_validation(llama):
    raw = np.array([[3.0, 4.0] + [0.0] * 30])
    d = st.Directions.from_vectors(raw, layer=0, site="resid_post", config=llama.config)
    np.testing.assert_allclose(d.vectors[0, :2], [0.6, 0.8])
    assert st.Directions.from_vectors(raw, layer=0, site="mlp_out", normalize=False).vectors[0, 0] == 3.0
    with pytest.raises(ValueError, match="width 48 at 'mlp_hidden'"):
        st.Directions.from_vectors(raw, layer=0, site="mlp_hidden", config=llama.config)
    with pytest.raises(ValueError, match="NaN or Inf"):
        st.Directions.from_vectors(np.full(32, np.nan), layer=0, site="mlp_out")
    with pytest.raises(ValueError, match="features must be"):
        st.feature_directions(llama, np.ones((2, 10)), layer=0)
    with pytest.raises(ValueError, match=r"feature indices must be in \[0, 5\)"):
        st.feature_directions(llama, PHI, layer=0, indices=[7])
    with pytest.raises(ValueError, match=r"layer must be in \[0, 2\)"):
        st.feature_directions(llama, PHI, layer=2)
