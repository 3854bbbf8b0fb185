"""Named sites: captures return the site's activations, patches edit them."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from snmf_jax.models import Model, SitePatch, forward, init_params
from snmf_jax.models import _layers
from snmf_jax.testing import tiny_config

CONFIG = tiny_config(vocab_size=101, n_layers=3, tie_embeddings=True)
SITES_ALL = tuple((layer, site) for layer in range(3)
                  for site in ("mlp_hidden", "mlp_out", "resid_post"))
# LLVM -O0 compiles the tiny test programs ~3x faster; the HLO (and so the
# float semantics, which XLA keeps strict) is the same as in production.
FAST_COMPILE = {"xla_backend_optimization_level": 0}
_FORWARD = jax.jit(forward, static_argnames=("config", "capture"),
                   compiler_options=FAST_COMPILE)


@pytest.fixture(scope="module")
def setup():
    params = init_params(CONFIG, jax.random.key(0))
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, 101, size=(2, 10)), jnp.int32)
    base = _FORWARD(params, tokens, config=CONFIG, capture=SITES_ALL)
    return params, tokens, base


def _patch(site, layer, vector, scale=1.0, replace=0.0, positions=None):
    return {(layer, site): SitePatch(jnp.asarray(vector, jnp.float32), jnp.asarray(scale),
                                     jnp.asarray(replace), positions)}


def test_sites_are_consistent_with_the_weights(setup):
    """mlp_out = mlp_hidden @ W_down, and the logits are the unembedded final
    norm of the last resid_post."""
    params, tokens, base = setup
    layers = params["layers"]
    for layer in range(CONFIG.n_layers):
        hidden = base.captures[(layer, "mlp_hidden")]
        assert hidden.shape == (2, 10, CONFIG.d_mlp)
        np.testing.assert_allclose(np.asarray(hidden @ layers["down"]["kernel"][layer]),
                                   np.asarray(base.captures[(layer, "mlp_out")]),
                                   atol=1e-5, rtol=1e-5)
    last = base.captures[(CONFIG.n_layers - 1, "resid_post")]
    normed = _layers.rms_norm(last, params["final_norm"]["scale"], CONFIG.norm_eps,
                              scale_in_float32=False)
    np.testing.assert_allclose(np.asarray(normed @ params["embed"].T), np.asarray(base.logits),
                               atol=1e-5, rtol=1e-5)


def test_zero_patch_equals_no_patch(setup):
    params, tokens, base = setup
    zero = {}
    for layer, site in enumerate(("mlp_hidden", "mlp_out", "resid_post")):
        zero.update(_patch(site, layer, np.zeros(CONFIG.site_dim(site)), scale=3.0))
    out = _FORWARD(params, tokens, config=CONFIG, patch=zero, capture=SITES_ALL)
    np.testing.assert_array_equal(np.asarray(out.logits), np.asarray(base.logits))
    for key in SITES_ALL:
        np.testing.assert_array_equal(np.asarray(out.captures[key]),
                                      np.asarray(base.captures[key]))


def test_replace_patch_at_positions(setup):
    """Replacing mlp_hidden of layer 1 at position 6 shows in the capture,
    leaves earlier layers and earlier positions alone, and moves the rest."""
    params, tokens, base = setup
    vec = np.linspace(-1, 1, CONFIG.d_mlp)
    positions = np.zeros((2, 10), np.float32)
    positions[:, 6] = 1.0
    patch = _patch("mlp_hidden", 1, vec, scale=2.0, replace=1.0,
                   positions=jnp.asarray(positions))
    out = _FORWARD(params, tokens, config=CONFIG, patch=patch, capture=SITES_ALL)
    got = np.asarray(out.captures[(1, "mlp_hidden")])
    np.testing.assert_allclose(got[:, 6], np.broadcast_to(2.0 * vec, (2, CONFIG.d_mlp)),
                               atol=1e-6)
    np.testing.assert_array_equal(got[:, :6], np.asarray(base.captures[(1, "mlp_hidden")])[:, :6])
    for site in ("mlp_hidden", "mlp_out", "resid_post"):
        np.testing.assert_array_equal(np.asarray(out.captures[(0, site)]),
                                      np.asarray(base.captures[(0, site)]))
    np.testing.assert_allclose(np.asarray(out.logits[:, :6]), np.asarray(base.logits[:, :6]),
                               atol=1e-6)
    assert np.abs(np.asarray(out.logits[:, 6:]) - np.asarray(base.logits[:, 6:])).min() > 0
    assert np.abs(np.asarray(out.captures[(2, "resid_post")][:, 6])
                  - np.asarray(base.captures[(2, "resid_post")][:, 6])).max() > 1e-3


def test_additive_patch_on_residual(setup):
    """resid_post at layer 0 plus alpha * v: the capture is shifted exactly."""
    params, tokens, base = setup
    vec = np.random.default_rng(1).normal(size=CONFIG.d_model)
    out = _FORWARD(params, tokens, config=CONFIG, capture=SITES_ALL,
                   patch=_patch("resid_post", 0, vec, scale=0.5))
    np.testing.assert_allclose(np.asarray(out.captures[(0, "resid_post")]),
                               np.asarray(base.captures[(0, "resid_post")]) + 0.5 * vec,
                               atol=1e-6)


def test_new_vectors_and_scales_do_not_retrace(setup):
    params, tokens, _ = setup
    traces = []

    @functools.partial(jax.jit, compiler_options=FAST_COMPILE)
    def run(params, vec, scale):
        traces.append(1)
        return forward(params, tokens, config=CONFIG,
                       patch=_patch("mlp_out", 2, vec, scale=scale)).logits

    a = run(params, jnp.ones(CONFIG.d_model), 1.0)
    b = run(params, -jnp.ones(CONFIG.d_model), 2.0)
    assert len(traces) == 1 and not np.allclose(np.asarray(a), np.asarray(b))
    # vmap over alphas evaluates many steering strengths in one call.
    alphas = jnp.asarray([0.0, 1.0, 2.0])
    many = jax.vmap(lambda s: run(params, jnp.ones(CONFIG.d_model), s))(alphas)
    np.testing.assert_allclose(np.asarray(many[1]), np.asarray(a), atol=1e-5)


def test_model_forward_and_dtype(setup):
    _, tokens, _ = setup
    params = init_params(CONFIG, jax.random.key(3), jnp.bfloat16)
    model = Model(config=CONFIG, params=params, name="tiny")
    with pytest.raises(dataclasses.FrozenInstanceError):
        model.name = "other"
    out = model.forward(np.asarray(tokens), capture=[(1, "mlp_hidden")])
    assert out.logits.dtype == jnp.float32 and out.logits.shape == (2, 10, 101)
    assert out.captures[(1, "mlp_hidden")].dtype == jnp.bfloat16
    # Same shapes and capture as the fixture: reuses its compiled program.
    ref = _FORWARD(jax.tree.map(lambda x: x.astype(jnp.float32), params), tokens,
                   config=CONFIG, capture=SITES_ALL)
    np.testing.assert_allclose(np.asarray(out.logits), np.asarray(ref.logits), atol=0.1)
    assert np.abs(np.asarray(out.logits) - np.asarray(ref.logits)).max() > 0  # really bf16
    assert "tiny" in repr(model)


@pytest.mark.parametrize("kwargs, match", [
    (dict(capture=((3, "mlp_hidden"),)), r"0 <= layer < 3.*\(3, 'mlp_hidden'\)"),
    (dict(capture=((0, "attn"),)), r"site in \('mlp_hidden'.*\(0, 'attn'\)"),
    (dict(patch={(0, "mlp_hidden"): SitePatch(jnp.zeros(5), 1.0, 0.0)}),
     r"vector must end in the site width 48; got shape \(5,\)"),
    (dict(attention_mask=jnp.ones((2, 3))), r"attention_mask must have the shape"),
])
def test_bad_sites_fail_early(setup, kwargs, match):
    params, tokens, _ = setup
    with pytest.raises(ValueError, match=match):
        forward(params, tokens, config=CONFIG, **kwargs)


def test_bad_tokens_fail_early(setup):
    params, tokens, _ = setup
    with pytest.raises(ValueError, match=r"tokens must be \(B, T\); got shape \(10,\)"):
        forward(params, tokens[0], config=CONFIG)
    with pytest.raises(ValueError, match=r"params\['embed'\] must be"):
        forward(params, tokens, config=dataclasses.replace(CONFIG, vocab_size=7))
