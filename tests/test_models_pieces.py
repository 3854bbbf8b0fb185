"""The NNX module tree and the model pieces: one layout, pieces = forward, views."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from snmf_jax import models
from snmf_jax.models import Model, init_params
from snmf_jax.testing import tiny_config, tiny_model


def _config(family, tie_embeddings=True, **kw):
    return tiny_config(family, n_layers=3, tie_embeddings=tie_embeddings, **kw)


@pytest.fixture(scope="module", params=["llama", "gemma3", "gpt2"])
def model(request):
    return tiny_model(request.param, n_layers=3, tie_embeddings=request.param != "llama",
                      name=request.param)


TOKENS = np.random.default_rng(0).integers(0, 64, (2, 9)).astype(np.int32)


def test_params_are_the_module_state_with_stacked_layers(model):
    assert isinstance(model.params, nnx.State)
    module = model.module
    assert isinstance(module, models.Transformer)
    assert module.layers.up.kernel.shape == (3, 32, 48)
    # The module's own call (eager here) is the pure forward on its state.
    np.testing.assert_allclose(np.asarray(module(jnp.asarray(TOKENS)).logits),
                               np.asarray(model.forward(TOKENS).logits), rtol=1e-5, atol=1e-5)


def test_pieces_compose_to_the_forward(model):
    cap = ((0, "mlp_hidden"), (2, "resid_post"))
    full = model.forward(TOKENS, capture=cap)
    x = model.embed(TOKENS)
    x, caps_a, _ = model.run_blocks(x, stop=1, capture=cap[:1])
    x, caps_b, _ = model.run_blocks(x, start=1, capture=cap[1:])
    np.testing.assert_allclose(np.asarray(model.unembed(x)), np.asarray(full.logits),
                               rtol=1e-5, atol=1e-5)
    for key, value in {**caps_a, **caps_b}.items():
        np.testing.assert_allclose(np.asarray(value), np.asarray(full.captures[key]),
                                   rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"outside the blocks run, \[1, 3\)"):
        model.run_blocks(x, start=1, capture=((0, "mlp_out"),))


def test_mlp_output_map_is_what_the_block_adds(model):
    cap = ((1, "mlp_hidden"), (1, "mlp_out"))
    out = model.forward(TOKENS, capture=cap).captures
    np.testing.assert_allclose(np.asarray(model.mlp_output_map(out[cap[0]], layer=1)),
                               np.asarray(out[cap[1]]), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="hidden must end in d_mlp=48"):
        model.mlp_output_map(np.ones(5), layer=1)


def test_loaders_check_names_and_shapes_against_the_module_tree():
    cfg = _config("llama")
    good = models.as_arrays(init_params(cfg, jax.random.key(0)))
    assert models.layout(cfg)["layers.q.kernel"] == (3, 32, 32)
    bad = jax.tree.map(lambda a: a, good)
    bad["layers"]["up"]["kernel"] = bad["layers"]["up"]["kernel"][:, :, :40]
    del bad["layers"]["gate"]
    bad["layers"]["q"]["bias"] = jnp.zeros((3, 32))
    with pytest.raises(ValueError, match=r"layers\.gate\.kernel missing.*layers\.q\.bias "
                                         r"unexpected.*layers\.up\.kernel has shape "
                                         r"\(3, 32, 40\), expected \(3, 32, 48\)"):
        Model(cfg, bad)
    # With qkv_bias the same bias is part of the layout.
    biased = dataclasses.replace(cfg, qkv_bias=True)
    assert models.layout(biased)["layers.q.bias"] == (3, 32)


def test_a_loaded_model_renders_in_treescope(model):
    import treescope
    text = treescope.render_to_text(model)
    assert "Transformer" in text and "layers" in text and "kernel" in text
    assert "'mlp'" in text  # the logical axis annotations are shown
