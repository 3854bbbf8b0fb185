"""Sharded fit (jax.shard_map over a token mesh): parity with the single-device
fit, zero padding, checkpoint/resume. Multi-device checks run in a
subprocess with 8 simulated CPU devices so other tests keep one device."""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh

import snmf_jax as sj
from snmf_jax.factorize import _inits, _sharded, _solver

_PRELUDE = """
import os, sys, json, tempfile
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
os.environ["JAX_PLATFORMS"] = "cpu"
import jax, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import snmf_jax as sj
from snmf_jax.factorize import _sharded
assert jax.device_count() == 8, jax.devices()
MESH = Mesh(np.array(jax.devices()), ("tokens",))

def data(n, d=24, k=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, k)) @ rng.standard_normal((k, d)) + 0.05 * rng.standard_normal((n, d))
    return x.astype(np.float32)

def same(a, b, what, tol=1e-5):
    rel = np.abs(a.losses - b.losses) / np.abs(a.losses)
    assert a.losses.shape == b.losses.shape, (what, a.losses.shape, b.losses.shape)
    assert rel.max() <= tol, (what, rel.max())
    assert np.array_equal(a.features != 0, b.features != 0), (what, "WTA support differs")
    assert a.codes.shape == b.codes.shape, (what, a.codes.shape, b.codes.shape)
    assert np.abs(a.codes - b.codes).max() <= 1e-3 * np.abs(a.codes).max(), what
    assert a.best_iter == b.best_iter, (what, a.best_iter, b.best_iter)
"""

KW = dict(sparsity=0.25, max_iter=30, patience=None, progress=False)


def _run(body: str, timeout: int = 600) -> str:
    code = _PRELUDE + textwrap.dedent(body)
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=timeout, env=env)
    assert out.returncode == 0, out.stderr[-4000:]
    return out.stdout


@pytest.mark.slow
def test_sharded_matches_single_device_on_8_devices():
    out = _run(f"""
        KW = {KW!r}
        for n, inits in ((203, ("random", "kmeans", "svd")), (200, ("random",))):
            x = data(n)  # 203 is not divisible by 8: 5 padding rows
            for init in inits:
                a = sj.fit(x, 4, init=init, **KW)
                b = sj.fit(x, 4, init=init, mesh=MESH, **KW)
                same(a, b, (n, init))
                assert b.settings["devices"] == 8
        # A sharded X fits sharded without mesh=.
        x = data(203)
        xs = jax.device_put(x[:200], NamedSharding(MESH, P("tokens")))
        c = sj.fit(xs, 4, **KW)
        assert c.settings.get("devices") == 8, c.settings
        same(sj.fit(x[:200], 4, **KW), c, "sharded input")
        print("ok")
    """)
    assert out.strip().endswith("ok")


@pytest.mark.slow
def test_sharded_checkpoint_resume_on_8_devices():
    out = _run(f"""
        KW = {KW!r}
        x = data(203, seed=1)
        full = sj.fit(x, 4, mesh=MESH, **{{**KW, "max_iter": 40}})
        with tempfile.TemporaryDirectory() as d:
            first = sj.fit(x, 4, mesh=MESH, checkpoint_dir=d, checkpoint_every=10,
                           **{{**KW, "max_iter": 20}})
            assert first.n_iter == 20
            # Resume to 40 on 8 devices: the identical trajectory.
            again = sj.fit(x, 4, mesh=MESH, checkpoint_dir=d, checkpoint_every=10,
                           **{{**KW, "max_iter": 40}})
            np.testing.assert_array_equal(again.losses, full.losses)
            np.testing.assert_array_equal(again.codes, full.codes)
            np.testing.assert_array_equal(again.features, full.features)
        with tempfile.TemporaryDirectory() as d:
            sj.fit(x, 4, mesh=MESH, checkpoint_dir=d, **{{**KW, "max_iter": 20}})
            # The checkpoint holds unpadded codes, so another mesh resumes it.
            mesh3 = Mesh(np.array(jax.devices()[:3]), ("tokens",))
            other = sj.fit(x, 4, mesh=mesh3, checkpoint_dir=d, **{{**KW, "max_iter": 40}})
            np.testing.assert_array_equal(other.losses[:20], full.losses[:20])
            assert np.abs(other.losses - full.losses).max() <= 1e-5 * full.losses.min()
            try:
                sj.fit(x, 4, mesh=MESH, checkpoint_dir=d, **{{**KW, "sparsity": 0.5}})
            except ValueError as e:
                assert "other settings" in str(e), e
            else:
                raise AssertionError("resuming with other settings must fail")
        print("ok")
    """)
    assert out.strip().endswith("ok")


def test_padding_rows_stay_zero_and_add_nothing():
    """Zero rows with zero codes stay zero and leave CᵀC, CᵀX and the loss unchanged."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((13, 9)), jnp.float32)
    codes = _inits.random_codes(jax.random.PRNGKey(0), 0, 13, 3)
    xp = jnp.concatenate([x, jnp.zeros((3, 9))])
    cp = jnp.concatenate([codes, jnp.zeros((3, 3))])
    step = jax.jit(lambda x, s: _solver.update(x, s, _solver.SNMFConfig(rank=3, sparsity=0.5)))
    s, sp = _solver.init(x, codes), _solver.init(xp, cp)
    for _ in range(5):
        s, sp = step(x, s), step(xp, sp)
        assert np.all(np.asarray(sp.codes[13:]) == 0)
        np.testing.assert_allclose(sp.gram, s.gram, rtol=1e-6)
        np.testing.assert_allclose(sp.cross, s.cross, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(sp.loss, s.loss, rtol=1e-6)


def test_one_device_mesh_matches_fit():
    rng = np.random.default_rng(3)
    x = (rng.random((50, 3)) @ rng.standard_normal((3, 12))).astype(np.float32)
    mesh = Mesh(np.array(jax.devices()[:1]), ("tokens",))
    a = sj.fit(x, 3, sparsity=0.5, max_iter=15, patience=None, progress=False)
    b = sj.fit(x, 3, sparsity=0.5, max_iter=15, patience=None, progress=False, mesh=mesh)
    np.testing.assert_allclose(b.losses, a.losses, rtol=1e-6)
    np.testing.assert_allclose(b.codes, a.codes, rtol=1e-5, atol=1e-6)


def test_row_fields_are_the_per_token_fields():
    """ROW_FIELDS (sharded like X) must list exactly the solver fields with one row per token."""
    n, d, k = 7, 5, 2
    s = jax.eval_shape(lambda x, c: _solver.init(x, c),
                       jax.ShapeDtypeStruct((n, d), jnp.float32),
                       jax.ShapeDtypeStruct((n, k), jnp.float32))
    per_token = {f for f, v in s._asdict().items() if v.ndim >= 1 and v.shape[0] == n}
    assert per_token == set(_sharded.ROW_FIELDS)


@pytest.mark.slow
def test_blocked_svd_and_kmeans_match_in_memory_inits():
    rng = np.random.default_rng(4)
    x = jnp.asarray(rng.random((300, 6)) @ rng.standard_normal((6, 40))
                    + 0.01 * rng.standard_normal((300, 40)), jnp.float32)

    def reduce_over(x):
        blocks = [x[i:i + 128] for i in range(0, 300, 128)]

        def reduce(fn, params):
            outs = [fn(b, jnp.ones(b.shape[0]), params) for b in blocks]
            return jax.tree.map(lambda *a: sum(a), *outs)
        return reduce

    key = jax.random.PRNGKey(7)
    for rank in (4, 25):  # randomized sketch, and the exact-range case (min(n, d) <= 2K)
        ref_codes, ref_feats = jax.jit(_inits.svd_init, static_argnums=1)(x, rank, key)
        proj, feats = jax.jit(lambda x: _sharded.svd_plan(reduce_over(x), 300, 40, rank, key,
                                                          jnp.float32))(x)
        codes = _sharded.svd_codes(x, proj)
        top = min(rank, 6)  # the data has rank 6 (+ noise)
        err = np.abs(np.asarray(codes[:, :top] - ref_codes[:, :top])).max()
        assert err <= 1e-3 * np.abs(np.asarray(ref_codes)).max(), (rank, err)
        np.testing.assert_allclose(feats[:top], ref_feats[:top], rtol=1e-3, atol=1e-3)
    ref_codes, ref_cent = jax.jit(_inits.kmeans_init, static_argnums=1)(x, 5, key)
    cent0 = x[_sharded.kmeans_seed_rows(key, 300, 5)]
    cent = jax.jit(lambda x, c: _sharded.kmeans_plan(reduce_over(x), c))(x, cent0)
    np.testing.assert_allclose(cent, ref_cent, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(_sharded.kmeans_codes(x, cent), ref_codes)


def test_row_layout_positions():
    lay = _sharded.RowLayout(counts=(5, 0, 3), rows_per_device=2, devices_per_process=3)
    assert lay.n == 8 and lay.block == 6 and lay.padded == 18
    np.testing.assert_array_equal(lay.padded_position(np.arange(8)),
                                  [0, 1, 2, 3, 4, 12, 13, 14])
    assert [lay.offset(p) for p in range(3)] == [0, 5, 5]


def test_errors_name_the_argument():
    x = np.ones((10, 4), np.float32)
    with pytest.raises(TypeError, match="mesh must be a jax.sharding.Mesh"):
        _sharded.fit_sharded(x, 2, mesh="tokens")
    mesh = Mesh(np.array(jax.devices()[:1]), ("tokens",))
    bad = x.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        sj.fit(bad, 2, mesh=mesh, progress=False)
    with pytest.raises(ValueError, match="rank must be in"):
        sj.fit(x, 7, mesh=mesh, progress=False)
    with pytest.raises(ValueError, match="codes_init must have shape"):
        sj.fit(x, 2, mesh=mesh, codes_init=np.ones((9, 2)), progress=False)
