"""Sharded fit (jax.shard_map over a token mesh): parity with the single-device
fit, zero padding, checkpoint/resume. The `devices(8)` tests run in a child
pytest with 8 simulated CPU devices (`test_on_simulated_devices`; see
conftest.py), so other tests keep one device."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

import snmf_jax as sj
from snmf_jax.factorize import _inits, _rows_mesh, _solver
from snmf_jax.testing import low_rank_data

from conftest import run_on_simulated_devices

KW = dict(sparsity=0.25, max_iter=30, patience=None, progress=False)


def _data(n, d=24, seed=0):
    return low_rank_data(n, d, seed=seed)


def _same(a, b, tol=1e-5):
    """Whole results agree: losses, the features' support and values, codes, best iterate."""
    assert a.losses.shape == b.losses.shape
    np.testing.assert_allclose(b.losses, a.losses, rtol=tol)
    np.testing.assert_array_equal(a.features != 0, b.features != 0)
    np.testing.assert_allclose(b.features, a.features, rtol=1e-3,
                               atol=1e-3 * np.abs(a.features).max())
    assert a.codes.shape == b.codes.shape
    np.testing.assert_allclose(b.codes, a.codes, rtol=0, atol=1e-3 * np.abs(a.codes).max())
    assert a.best_iter == b.best_iter


def _mesh(n=8):
    return Mesh(np.array(jax.devices()[:n]), ("tokens",))


@pytest.mark.slow
def test_on_simulated_devices():
    """The `devices(8)` tests below, in a child pytest with 8 CPU devices."""
    run_on_simulated_devices(__file__, 8)


@pytest.mark.devices(8)
@pytest.mark.parametrize("n, init", [(203, "random"), (203, "kmeans"), (203, "svd"),
                                     (200, "random")])
def test_sharded_matches_single_device_on_8_devices(n, init):
    x = _data(n)  # 203 is not divisible by 8: 5 padding rows
    a = sj.fit(x, 4, init=init, **KW)
    b = sj.fit(x, 4, init=init, mesh=_mesh(), **KW)
    _same(a, b)
    assert b.settings["devices"] == 8


@pytest.mark.devices(8)
def test_sharded_input_fits_sharded_without_mesh():
    x = _data(200)
    xs = jax.device_put(x, NamedSharding(_mesh(), P("tokens")))
    c = sj.fit(xs, 4, **KW)
    assert c.settings.get("devices") == 8
    _same(sj.fit(x, 4, **KW), c)


@pytest.mark.devices(8)
def test_sharded_checkpoint_resume_on_8_devices(tmp_path):
    x = _data(203, seed=1)
    mesh = _mesh()
    full = sj.fit(x, 4, mesh=mesh, **{**KW, "max_iter": 40})
    first = sj.fit(x, 4, mesh=mesh, checkpoint_dir=tmp_path / "a", checkpoint_every=10,
                   **{**KW, "max_iter": 20})
    assert first.n_iter == 20
    # Resume to 40 on 8 devices: the identical trajectory.
    again = sj.fit(x, 4, mesh=mesh, checkpoint_dir=tmp_path / "a", checkpoint_every=10,
                   **{**KW, "max_iter": 40})
    np.testing.assert_array_equal(again.losses, full.losses)
    np.testing.assert_array_equal(again.codes, full.codes)
    np.testing.assert_array_equal(again.features, full.features)


@pytest.mark.devices(8)
def test_checkpoint_resumes_on_another_mesh_and_refuses_other_data(tmp_path):
    x = _data(203, seed=1)
    full = sj.fit(x, 4, mesh=_mesh(), **{**KW, "max_iter": 40})
    sj.fit(x, 4, mesh=_mesh(), checkpoint_dir=tmp_path, **{**KW, "max_iter": 20})
    # The checkpoint holds unpadded codes, so another mesh resumes it.
    other = sj.fit(x, 4, mesh=_mesh(3), checkpoint_dir=tmp_path, **{**KW, "max_iter": 40})
    np.testing.assert_array_equal(other.losses[:20], full.losses[:20])
    np.testing.assert_allclose(other.losses, full.losses, rtol=1e-5)
    with pytest.raises(ValueError, match="different settings"):
        sj.fit(x, 4, mesh=_mesh(), checkpoint_dir=tmp_path, **{**KW, "sparsity": 0.5})
    with pytest.raises(ValueError, match=r"different data \(content differs"):
        sj.fit(x[::-1].copy(), 4, mesh=_mesh(), checkpoint_dir=tmp_path, **KW)


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
    assert per_token == set(_rows_mesh.ROW_FIELDS)


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
        proj, feats = jax.jit(lambda x: _inits.svd_plan(reduce_over(x), 300, 40, rank, key,
                                                        jnp.float32))(x)
        codes = _inits.svd_codes(x, proj)
        top = min(rank, 6)  # the data has rank 6 (+ noise)
        err = np.abs(np.asarray(codes[:, :top] - ref_codes[:, :top])).max()
        assert err <= 1e-3 * np.abs(np.asarray(ref_codes)).max(), (rank, err)
        np.testing.assert_allclose(feats[:top], ref_feats[:top], rtol=1e-3, atol=1e-3)
    ref_codes, ref_cent = jax.jit(_inits.kmeans_init, static_argnums=1)(x, 5, key)
    cent0 = x[_inits.kmeans_seed_rows(key, 300, 5)]
    cent = jax.jit(lambda x, c: _inits.kmeans_plan(reduce_over(x), c))(x, cent0)
    np.testing.assert_allclose(cent, ref_cent, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(_inits.kmeans_codes(x, cent), ref_codes)


def test_row_layout_positions():
    lay = _rows_mesh.RowLayout(counts=(5, 0, 3), rows_per_device=2, devices_per_process=3)
    assert lay.n == 8 and lay.block == 6 and lay.padded == 18
    np.testing.assert_array_equal(lay.padded_position(np.arange(8)),
                                  [0, 1, 2, 3, 4, 12, 13, 14])
    assert [lay.offset(p) for p in range(3)] == [0, 5, 5]


def test_errors_name_the_argument():
    x = np.ones((10, 4), np.float32)
    with pytest.raises(TypeError, match="mesh must be a jax.sharding.Mesh"):
        sj.factorize.fit_sharded(x, 2, mesh="tokens")
    mesh = Mesh(np.array(jax.devices()[:1]), ("tokens",))
    bad = x.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        sj.fit(bad, 2, mesh=mesh, progress=False)
    with pytest.raises(ValueError, match="rank must be in"):
        sj.fit(x, 7, mesh=mesh, progress=False)
    with pytest.raises(ValueError, match="codes_init must have shape"):
        sj.fit(x, 2, mesh=mesh, codes_init=np.ones((9, 2)), progress=False)
