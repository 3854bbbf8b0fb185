"""Hostile inputs to steering: patches, the steered forward, generation settings.

Every case fails before any compilation or decoding, with one line naming the
argument, what was expected and what was found.
"""

import math

import jax
import numpy as np
import pytest

from snmf_jax import steer as st
from snmf_jax.steer import _generate
from snmf_jax.steer import _patches

V, DM, DH = 64, 32, 48  # the tiny_llama fixture's vocabulary, d_model, d_mlp (conftest)


def _one_line(e):
    assert "\n" not in str(e), str(e)
    return str(e)


def _vec(n=DH):
    return np.ones(n, np.float32)


# -- patches --------------------------------------------------------------------

@pytest.mark.parametrize("kw, match", [
    (dict(vector=np.full(DH, np.nan, np.float32)), "vector"),
    (dict(vector=np.full(DH, np.inf, np.float32)), "vector"),
    (dict(vector=np.ones((2, 2, DH), np.float32)), "vector"),
    (dict(vector=np.array(["a"] * DH)), "vector"),
    (dict(scale=math.nan), "scale"), (dict(scale=math.inf), "scale"),
    (dict(scale=np.array([1.0, np.nan])), "scale"),
    (dict(scale=np.ones((2, 2))), "scale"),
    (dict(mode="multiply"), "mode"),
])
def test_bad_site_patch(kw, match):
    kw = {"vector": _vec(), **kw}
    with pytest.raises((ValueError, TypeError), match=match) as e:
        _patches.site_patch(kw.pop("vector"), **kw)
    _one_line(e.value)


@pytest.mark.parametrize("layer, site, vec, match", [
    (2, "mlp_hidden", _vec(), "layer"), (-1, "mlp_hidden", _vec(), "layer"),
    (0, "attn", _vec(), "site"), (0, "mlp_hidden", _vec(DM), "width"),
    (0, "resid_post", _vec(DH), "width"), (1.5, "mlp_hidden", _vec(), "layer"),
    ("0", "mlp_hidden", _vec(), "layer"),
])
def test_bad_patch_site_against_the_model(tiny_llama, layer, site, vec, match):
    with pytest.raises((ValueError, TypeError), match=match) as e:
        st.make_patch(layer, site, vec, config=tiny_llama.config)
    _one_line(e.value)


def test_with_scale_refuses_nonfinite(tiny_llama):
    p = st.make_patch(0, "mlp_hidden", _vec(), config=tiny_llama.config)
    for bad in (math.nan, math.inf, np.array([1.0, np.nan])):
        with pytest.raises(ValueError, match="scale"):
            st.with_scale(p, bad)


def test_patch_edited_to_nan_after_construction_is_refused_by_steer(tiny_llama):
    p = st.make_patch(0, "mlp_hidden", _vec(), config=tiny_llama.config)
    sp = p[(0, "mlp_hidden")]
    bad = {(0, "mlp_hidden"): sp._replace(vector=sp.vector * np.nan)}
    with pytest.raises(ValueError, match="non-finite") as e:
        st.steer(tiny_llama, bad)
    _one_line(e.value)
    with pytest.raises(ValueError, match="non-finite"):
        st.generate(tiny_llama, [[2, 5]], bad, max_new_tokens=2, stop_ids=())


def test_inconsistent_variants(tiny_llama):
    a = st.make_patch(0, "mlp_hidden", np.ones((2, DH)), config=tiny_llama.config)
    b = st.make_patch(1, "mlp_hidden", np.ones((3, DH)), config=tiny_llama.config)
    with pytest.raises(ValueError, match="variant"):
        _patches.check_patch(st.combine(a, b), tiny_llama.config)
    with pytest.raises(ValueError, match="more than one"):
        st.combine(a, a)


def test_patch_not_a_mapping(tiny_llama):
    with pytest.raises((ValueError, TypeError), match="patch") as e:
        st.steer(tiny_llama, [1, 2, 3])
    _one_line(e.value)


# -- the steered forward ------------------------------------------------------------

@pytest.mark.parametrize("tokens, match", [
    ([[2, 5, V]], "token"), ([[2, -1, 5]], "token"), ([[2.5, 3.0]], "token"),
    ([[2] * 65], "max_position"), (np.zeros((1, 0), np.int32), "token"),
    (np.zeros((1, 2, 3), np.int32), "shape"),
])
def test_steered_forward_refuses_tokens_it_cannot_serve(tiny_llama, tokens, match):
    sm = st.steer(tiny_llama, st.make_patch(0, "mlp_hidden", _vec(), config=tiny_llama.config))
    with pytest.raises(ValueError, match=match) as e:
        sm.forward(tokens)
    _one_line(e.value)


# -- generation settings ---------------------------------------------------------

@pytest.mark.parametrize("kw, match", [
    (dict(max_new_tokens=0), "max_new_tokens"), (dict(max_new_tokens=2.5), "max_new_tokens"),
    (dict(max_new_tokens=True), "max_new_tokens"), (dict(max_new_tokens="4"), "max_new_tokens"),
    (dict(temperature=-1.0), "temperature"), (dict(temperature=math.nan), "temperature"),
    (dict(temperature=math.inf), "temperature"), (dict(temperature="hot"), "temperature"),
    (dict(top_k=-1), "top_k"), (dict(top_k=2.5), "top_k"), (dict(top_k=math.nan), "top_k"),
    (dict(top_p=0.0), "top_p"), (dict(top_p=1.5), "top_p"), (dict(top_p=math.nan), "top_p"),
    (dict(n_samples=0), "n_samples"), (dict(n_samples=1.5), "n_samples"),
    (dict(seed=1.5), "seed"), (dict(seed=None), "seed"),
    (dict(pad_multiple=0), "pad_multiple"),
    (dict(stop_ids=(V,)), "stop_ids"), (dict(stop_ids=(-3,)), "stop_ids"),
    (dict(stop_ids=("x",)), "stop_ids"),
    (dict(where="everywhere"), "where"),
    (dict(prompts=[[2, 5, V + 10]]), "prompts"), (dict(prompts=[[2, -7]]), "prompts"),
    (dict(prompts=[[2, 3.5]]), "prompts"), (dict(prompts=[]), "prompts"),
    (dict(prompts=[[]]), "token"), (dict(prompts=[[2, 5], "text"]), "prompts"),
    (dict(prompts=None), "prompts"), (dict(prompts=[[2] * 70]), "max_position"),
])
def test_bad_generation_settings(tiny_llama, kw, match):
    kw = {"max_new_tokens": 2, "stop_ids": (), **kw}
    prompts = kw.pop("prompts", [[2, 5, 6]])
    with pytest.raises((ValueError, TypeError), match=match) as e:
        st.generate(tiny_llama, prompts, None, **kw)
    _one_line(e.value)


@pytest.mark.parametrize("kw, match", [
    (dict(top_k=-2), "top_k"), (dict(top_p=math.nan), "top_p"), (dict(top_p=0.0), "top_p"),
    (dict(temperature=math.nan), "temperature"), (dict(temperature=-0.5), "temperature"),
])
def test_sample_logits_refuses_bad_settings(kw, match):
    logits = np.zeros((2, V), np.float32)
    with pytest.raises(ValueError, match=match) as e:
        st.sample_logits(jax.random.PRNGKey(0), logits, **kw)
    _one_line(e.value)


def test_sample_logits_refuses_nonfinite_logits():
    logits = np.zeros((2, V), np.float32)
    logits[1, 3] = np.nan
    with pytest.raises(ValueError, match="logits") as e:
        st.sample_logits(jax.random.PRNGKey(0), logits)
    _one_line(e.value)


def test_left_pad_refuses_bad_input():
    with pytest.raises(ValueError, match="multiple"):
        _generate.left_pad([[1, 2]], 0, multiple=0)
    with pytest.raises(ValueError, match="token"):
        _generate.left_pad([[1, 2], []], 0)


# -- directions and calibration (the open cases are in test_hostile_models) ----------

@pytest.mark.parametrize("kw, match", [
    (dict(targets=(math.nan,)), "targets"), (dict(targets=(-1.0,)), "targets"),
    (dict(targets=()), "targets"), (dict(max_steps=0), "max_steps"),
    (dict(alpha_max=-1.0), "alpha"),
])
def test_bad_calibration_settings(tiny_llama, kw, match):
    d = st.Directions.from_vectors(np.ones((1, DH)), layer=0, site="mlp_hidden",
                                  config=tiny_llama.config)
    with pytest.raises(ValueError, match=match) as e:
        st.calibrate(tiny_llama, d, progress=False, **kw)
    _one_line(e.value)


def test_bad_directions(tiny_llama):
    with pytest.raises(ValueError, match="NaN"):
        st.Directions.from_vectors(np.full((1, DH), np.nan), layer=0, site="mlp_hidden",
                      config=tiny_llama.config)
    with pytest.raises(ValueError, match="layer"):
        st.Directions.from_vectors(np.ones((1, DH)), layer=9, site="mlp_hidden",
                                   config=tiny_llama.config)
    with pytest.raises(ValueError, match="indices"):
        st.feature_directions(tiny_llama, np.ones((2, DH)), layer=0, indices=[9])


def test_directions_patch_refuses_nan_alphas(tiny_llama):
    d = st.Directions.from_vectors(np.ones((1, DH)), layer=0, site="mlp_hidden",
                                  config=tiny_llama.config)
    for alpha in (np.array([np.nan]), np.float32(np.inf)):
        with pytest.raises(ValueError, match="scale"):
            d.patch(alpha)
