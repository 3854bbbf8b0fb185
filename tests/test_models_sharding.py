"""Models over a device mesh: logical-axis sharding of the weights and
data-parallel activation export, against one device.

The mesh tests need 8 devices. On a normal (single-device) run,
`test_mesh_tests_on_8_simulated_cpu_devices` reruns this module under pytest
in a subprocess with XLA_FLAGS=--xla_force_host_platform_device_count=8 (the
device count is fixed when jax starts), so the other tests keep one device;
their pytest report is printed and any failure is the assertion's own.
"""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from snmf_jax import models
from snmf_jax.activations import export_activations
from snmf_jax.models import init_params
from snmf_jax.testing import tiny_config, tiny_model, word_texts, word_tokenizer

N_DEVICES = 8
on_8_devices = pytest.mark.skipif(
    jax.device_count() < N_DEVICES,
    reason="runs in the 8-device subprocess of test_mesh_tests_on_8_simulated_cpu_devices")


def _config(family):
    # 8 query heads, 4 KV heads (GQA); vocab, heads, KV heads and MLP all divide by 4.
    return tiny_config(family, n_layers=3, n_heads=8, n_kv_heads=4,
                       tie_embeddings=family == "gemma3")


def _mesh(shape, names):
    devices = np.array(jax.devices()[:int(np.prod(shape))]).reshape(shape)
    return jax.sharding.Mesh(devices, names)


def test_every_weight_has_logical_axes_for_each_dimension():
    from flax import nnx
    state = init_params(_config("gemma3"), jax.random.key(0))
    specs = jax.tree.leaves(nnx.to_pure_dict(nnx.get_partition_spec(state)),
                            is_leaf=lambda x: isinstance(x, PartitionSpec))
    shapes = jax.tree.leaves(models.as_arrays(state))
    assert len(specs) == len(shapes)
    for spec, arr in zip(specs, shapes):
        assert len(spec) == arr.ndim and all(isinstance(a, str) for a in spec), (spec, arr.shape)


@on_8_devices
@pytest.mark.parametrize("family", ["llama", "gemma3", "gpt2"])
def test_forward_with_weights_sharded_over_data_model_mesh_equals_one_device(family):
    cfg = _config(family)
    state = init_params(cfg, jax.random.key(1))
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, cfg.vocab_size, (4, 12)).astype(np.int32)
    mask = np.ones((4, 12), np.int32)
    mask[1, :5] = 0  # a left-padded row
    capture = ((1, "mlp_hidden"), (2, "resid_post"))
    one = models.forward(state, jnp.asarray(tokens), config=cfg, attention_mask=mask,
                         capture=capture)

    mesh = _mesh((2, 4), ("data", "model"))
    sharded = models.shard_params(state, mesh)
    up = models.as_arrays(sharded)["layers"]["up"]["kernel"]
    assert up.sharding.spec == PartitionSpec(None, None, "model")  # (L, D, F): F split 4 ways
    assert len(up.addressable_shards) == N_DEVICES
    assert up.addressable_shards[0].data.shape == (3, 32, 12)
    rows = NamedSharding(models.auto_mesh(mesh), PartitionSpec("data"))
    out = jax.jit(models.forward, static_argnames=("config", "capture"))(
        sharded, jax.device_put(tokens, rows), config=cfg,
        attention_mask=jax.device_put(mask, rows), capture=capture)
    np.testing.assert_allclose(np.asarray(out.logits), np.asarray(one.logits),
                               rtol=1e-5, atol=1e-5)
    for key in capture:
        np.testing.assert_allclose(np.asarray(out.captures[key]), np.asarray(one.captures[key]),
                                   rtol=1e-5, atol=1e-5)


@on_8_devices
@pytest.mark.parametrize("shape,names", [((8,), ("data",)), ((2, 4), ("data", "model"))])
def test_export_over_a_mesh_equals_export_on_one_device(shape, names, tmp_path):
    tok = word_tokenizer()
    # 4 heads of width 4: heads and KV heads divide by the 4-way "model" axis.
    model = tiny_model(vocab_size=tok.vocab_size, d_model=16, n_layers=3, n_heads=4,
                       n_kv_heads=4, head_dim=4, d_mlp=24, max_position=32, bos_token_id=1,
                       pad_token_id=0, eos_token_ids=(), tie_embeddings=True, tokenizer=tok)
    texts = word_texts()
    kw = dict(batch_size=3, max_length=16, min_bucket=8, progress=False)  # 3 rows -> 8 per batch
    one = export_activations(model, texts, [0, 2], **kw)
    mesh = _mesh(shape, names)
    # Data parallel: each device runs whole rows, so values match to float
    # rounding of a smaller batch; a "model" axis also splits the sums of the
    # MLP and attention over 4 devices (reordered float additions).
    atol = 1e-6 if names == ("data",) else 1e-5
    many = export_activations(model, texts, [0, 2], mesh=mesh, **kw)
    for layer in (0, 2):
        a, b = one[layer], many[layer]
        assert a.X.shape == b.X.shape and a.X.shape[0] > 50
        for name in ("doc_ids", "positions", "token_ids", "offsets"):
            np.testing.assert_array_equal(getattr(b, name), getattr(a, name))
        np.testing.assert_allclose(b.X, a.X, rtol=1e-5, atol=atol)
    # The on-disk path takes the mesh too and writes the same rows.
    store = export_activations(model, texts, [2], mesh=mesh, out=tmp_path / "s", **kw)
    np.testing.assert_allclose(store.to_activations(2).X, one[2].X, rtol=1e-5, atol=atol)


@pytest.mark.slow
def test_mesh_tests_on_8_simulated_cpu_devices():
    if jax.device_count() >= N_DEVICES:
        pytest.skip("already on 8 devices: the mesh tests ran in this process")
    env = {**os.environ, "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": f"--xla_force_host_platform_device_count={N_DEVICES}"}
    here = os.path.dirname(os.path.abspath(__file__))
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider",
         os.path.abspath(__file__), "-k", "not test_mesh_tests_on_8"],
        capture_output=True, text=True, timeout=900, env=env, cwd=os.path.dirname(here))
    print(out.stdout[-6000:])
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-2000:]
    assert "6 passed" in out.stdout and "skipped" not in out.stdout, out.stdout[-2000:]
