"""SAELens interop, both ways, against the real sae_lens package: a folder saved by
one library loads in the other and encodes/decodes the same."""

import json

import numpy as np
import pytest
from flax import nnx

from snmf_jax.baselines import SAEConfig, SparseAutoencoder, load_sae, save_sae

sae_lens = pytest.importorskip("sae_lens")
torch = pytest.importorskip("torch")

D_IN, D_SAE = 12, 40


def _x(seed=0):
    return np.random.default_rng(seed).normal(size=(9, D_IN)).astype(np.float32)


def _randomize(sae_t):
    """Non-trivial biases / thresholds so a mix-up of conventions would show."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in sae_t.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.3 if name != "threshold" else 0.1))
        if hasattr(sae_t, "threshold"):
            sae_t.threshold.abs_()


def _theirs(arch, **kw):
    from sae_lens import (JumpReLUSAE, JumpReLUSAEConfig, StandardSAE, StandardSAEConfig,
                          TopKSAE, TopKSAEConfig)
    cls, cfg = {"standard": (StandardSAE, StandardSAEConfig),
                "topk": (TopKSAE, TopKSAEConfig),
                "jumprelu": (JumpReLUSAE, JumpReLUSAEConfig)}[arch]
    sae = cls(cfg(d_in=D_IN, d_sae=D_SAE, **kw))
    _randomize(sae)
    return sae


def _check_same(ours, theirs, x):
    with torch.no_grad():
        z_t = theirs.encode(torch.from_numpy(x)).numpy()
        xh_t = theirs.decode(torch.from_numpy(z_t)).numpy()
    z = np.asarray(ours.encode(x))
    np.testing.assert_allclose(z, z_t, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(ours.decode(z_t)), xh_t, rtol=1e-5, atol=1e-5)
    assert (z > 0).sum() > 0  # something fired: the comparison is not vacuous


@pytest.mark.parametrize("arch, kw", [
    ("standard", {}), ("topk", {"k": 5}),
    ("topk", {"k": 5, "rescale_acts_by_decoder_norm": True}), ("jumprelu", {}),
    ("standard", {"apply_b_dec_to_input": False})])
def test_saelens_to_ours(tmp_path, arch, kw):
    theirs = _theirs(arch, **kw)
    theirs.cfg.metadata.hook_name = "blocks.3.hook_mlp_out"
    theirs.save_model(tmp_path)
    ours = load_sae(tmp_path)
    assert ours.config.architecture == arch and ours.config.hook_name == "blocks.3.hook_mlp_out"
    _check_same(ours, theirs, _x())


@pytest.mark.parametrize("arch", ["standard", "topk", "jumprelu"])
def test_ours_to_saelens(tmp_path, arch):
    cfg = SAEConfig(d_in=D_IN, d_sae=D_SAE, architecture=arch, k=5, hook_name="L6.mlp_out",
                    model_name="smollm2-135m", jumprelu_init_threshold=0.05)
    ours = SparseAutoencoder(cfg, rngs=nnx.Rngs(0))
    p = ours.params()
    rng = np.random.default_rng(1)
    p["b_enc"] = rng.normal(size=D_SAE).astype(np.float32) * 0.3
    p["b_dec"] = rng.normal(size=D_IN).astype(np.float32) * 0.3
    ours.set_params(p)
    save_sae(ours, tmp_path, metadata={"context_size": 128})
    cfg_json = json.loads((tmp_path / "cfg.json").read_text())
    assert cfg_json["architecture"] == arch and cfg_json["metadata"]["context_size"] == 128
    theirs = sae_lens.SAE.load_from_disk(tmp_path)
    assert theirs.cfg.architecture() == arch
    assert theirs.cfg.metadata.hook_name == "L6.mlp_out"
    if arch == "topk":
        assert theirs.cfg.k == 5
    _check_same(ours, theirs, _x(2))
    # and back again, byte-for-byte the same weights
    again = load_sae(tmp_path)
    for k, v in ours.params().items():
        np.testing.assert_array_equal(np.asarray(again.params()[k]), np.asarray(v))


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="cfg.json"):
        load_sae(tmp_path)
    theirs = _theirs("standard")
    theirs.cfg.normalize_activations = "layer_norm"
    theirs.save_model(tmp_path)
    with pytest.raises(ValueError, match="normalize_activations='layer_norm'"):
        load_sae(tmp_path)


def test_pre_6_config_layout(tmp_path):
    """Older SAELens folders: flat hook_point, activation_fn 'topk' + kwargs, no architecture."""
    theirs = _theirs("topk", k=5)
    theirs.save_model(tmp_path)
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    old = {"d_in": D_IN, "d_sae": D_SAE, "dtype": "float32", "device": "cpu",
           "hook_point": "blocks.2.hook_resid_pre", "model_name": "gpt2",
           "activation_fn_str": "topk", "activation_fn_kwargs": {"k": cfg["k"]},
           "apply_b_dec_to_input": True, "normalize_activations": False}
    (tmp_path / "cfg.json").write_text(json.dumps(old))
    ours = load_sae(tmp_path)
    assert ours.config.architecture == "topk" and ours.config.k == 5
    assert ours.config.hook_name == "blocks.2.hook_resid_pre"
    _check_same(ours, sae_lens.SAE.load_from_disk(tmp_path), _x(3))
