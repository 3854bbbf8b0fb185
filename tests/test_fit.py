"""The fit driver: stopping, inits, validation, degenerate data, checkpoints, files."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

import snmf_jax as sj
from snmf_jax import factorize as F
from snmf_jax.factorize import _checkpoint
from snmf_jax.factorize import _inits
from snmf_jax.factorize import _solver


def _data(n=120, d=40, k=5, seed=0):
    rng = np.random.default_rng(seed)
    codes = rng.exponential(size=(n, k))
    feats = np.zeros((k, d))
    for row in feats:  # planted features: 4 neurons each, as sparsity=0.1 keeps
        row[rng.choice(d, 4, replace=False)] = rng.standard_normal(4) * 3
    return (codes @ feats + 0.05 * rng.standard_normal((n, d))).astype(np.float32)


def test_fit_shapes_sparsity_and_monotone_best():
    x = _data()
    res = sj.fit(x, rank=5, sparsity=0.1, seed=0, max_iter=200, progress=False)
    assert res.features.shape == (5, 40) and res.codes.shape == (120, 5)
    assert res.codes.min() >= 0
    assert np.all((res.features != 0).sum(1) == math.ceil(0.1 * 40))
    assert res.n_iter == len(res.losses) <= 200
    assert res.loss == pytest.approx(float(_solver.dense_loss(jnp.asarray(x), res.codes, res.features)),
                                     rel=1e-4)
    # The fit explains most of the variance of planted low-rank data.
    assert res.loss < 0.1 * float(np.sum(x * x))


def test_patience_none_runs_exactly_max_iter():
    res = sj.fit(_data(), rank=4, max_iter=37, patience=None, progress=False, chunk_size=10)
    assert res.n_iter == 37 and not res.converged


def test_early_stopping_rule():
    x = _data()
    res = sj.fit(x, rank=5, max_iter=5000, patience=5, tol=1e-3, progress=False)
    assert res.converged and res.n_iter < 5000
    # The last `patience` iterations did not beat the best by more than tol.
    best = res.losses[res.best_iter - 1]
    assert res.n_iter - res.best_iter == 5
    assert np.all(res.losses[res.best_iter:] >= best * (1 - 1e-3))


@pytest.mark.parametrize("init", ["svd", "kmeans"])
def test_inits_reach_a_good_fit(init):
    x = _data()
    res = sj.fit(x, rank=5, sparsity=0.3, init=init, max_iter=100, progress=False)
    rand = sj.fit(x, rank=5, sparsity=0.3, init="random", max_iter=100, progress=False)
    assert np.isfinite(res.losses).all()
    assert res.loss < 2 * rand.loss


def test_svd_init_matches_truncated_svd():
    x = jnp.asarray(_data(n=300, d=200))
    import jax
    codes, feats = _inits.svd_init(x, 3, jax.random.PRNGKey(0))  # randomized path
    _, s, _ = np.linalg.svd(np.asarray(x), full_matrices=False)
    np.testing.assert_allclose(np.linalg.norm(feats, axis=1) ** 2, s[:3], rtol=1e-3)
    assert codes.min() >= np.float32(1e-6)


def test_random_codes_independent_of_split():
    import jax
    key = jax.random.PRNGKey(3)
    whole = _inits.random_codes(key, 0, 9000, 4)
    parts = jnp.concatenate([_inits.random_codes(key, 0, 4000, 4), _inits.random_codes(key, 4000, 9000, 4)])
    np.testing.assert_array_equal(whole, parts)
    assert whole.min() >= np.float32(1e-6) and float(whole.max()) < 1


def test_same_seed_same_result():
    x = _data()
    a = sj.fit(x, rank=4, seed=7, max_iter=30, progress=False)
    b = sj.fit(x, rank=4, seed=7, max_iter=30, progress=False)
    np.testing.assert_array_equal(a.features, b.features)
    np.testing.assert_array_equal(a.losses, b.losses)


@pytest.mark.parametrize("kwargs, match", [
    (dict(rank=0), r"rank must be in \[1, min\(n_tokens, d_mlp\)\] = \[1, 40\]"),
    (dict(rank=41), r"got 41"),
    (dict(rank=3, sparsity=0.0), r"sparsity .* must be in \(0, 1\]; got 0.0"),
    (dict(rank=3, sparsity=1.5), r"got 1.5"),
    (dict(rank=3, init="pca"), r"init must be one of"),
    (dict(rank=3, patience=0), r"patience must be None or an int >= 1"),
    (dict(rank=3, tol_mode="rel"), r"tol_mode"),
    (dict(rank=3, codes_init=np.ones((120, 4))), r"codes_init must have shape .* \(120, 3\); got \(120, 4\)"),
    (dict(rank=3, codes_init=-np.ones((120, 3))), r"codes_init must be nonnegative; 360 entries"),
])
def test_bad_settings_are_named(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        sj.fit(_data(), progress=False, **kwargs)


def test_bad_data_is_named():
    x = _data()
    x[5, 3] = np.nan
    x[17, 0] = np.inf
    with pytest.raises(ValueError, match=r"X has 2 non-finite value\(s\) \(NaN: 1, Inf: 1\) in 2 row"
                                         r"\(s\); first at \(row, column\) \(5, 3\), \(17, 0\)"):
        sj.fit(x, rank=3, progress=False)
    with pytest.raises(ValueError, match=r"X must be 2-D .* got shape \(10,\)"):
        sj.fit(np.ones(10), rank=1, progress=False)
    with pytest.raises(ValueError, match=r"X is empty"):
        sj.fit(np.ones((0, 4)), rank=1, progress=False)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["zero_rows_cols", "constant", "full_rank", "dying"])
def test_degenerate_data_never_nan(name):
    rng = np.random.default_rng(0)
    n, d = 30, 12
    x = rng.standard_normal((n, d)).astype(np.float32)
    rank, codes = 4, None
    if name == "zero_rows_cols":
        x[::3] = 0
        x[:, ::4] = 0
    elif name == "constant":
        x = np.full((n, d), 2.5, np.float32)
    elif name == "full_rank":
        rank = min(n, d)
    elif name == "dying":
        codes = rng.uniform(size=(n, rank)).astype(np.float32)
        codes[:, 1] = 0  # a feature whose codes are dead from the start
        codes[:, 2] = 1e-30
    res = sj.fit(x, rank=rank, sparsity=0.5, codes_init=codes, max_iter=20000,
                 patience=None, progress=False, chunk_size=5000)
    assert res.n_iter == 20000
    assert np.isfinite(res.losses).all(), name
    assert np.isfinite(res.features).all() and np.isfinite(res.codes).all()
    assert res.codes.min() >= 0


def test_all_zero_data():
    res = sj.fit(np.zeros((10, 6), np.float32), rank=2, max_iter=50, patience=None, progress=False)
    assert np.all(res.losses == 0) and np.isfinite(res.features).all()


def test_save_load_roundtrip_bit_exact(tmp_path):
    res = sj.fit(_data(), rank=4, max_iter=20, progress=False, metadata={"layer": 3})
    res.save(tmp_path / "run")
    back = sj.SNMFResult.load(tmp_path / "run")
    for field in ("features", "codes", "losses"):
        a, b = getattr(res, field), getattr(back, field)
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes()
    assert back.settings == res.settings and back.metadata == {"layer": 3}
    assert back.best_iter == res.best_iter and back.converged == res.converged
    assert (tmp_path / "run" / "snmf.json").exists()
    assert not [p for p in (tmp_path / "run").iterdir() if p.name.endswith(".tmp")]


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no SNMF result at"):
        sj.SNMFResult.load(tmp_path)


def test_checkpoint_resume_equals_uninterrupted(tmp_path):
    tmp_path = tmp_path / "new" / "dir"  # created on demand
    x = _data()
    kw = dict(rank=4, max_iter=60, patience=None, progress=False, chunk_size=10)
    full = sj.fit(x, **kw)

    class Stop(Exception):
        pass

    def interrupt(step, loss):
        if step >= 30:
            raise Stop

    with pytest.raises(Stop):
        sj.fit(x, checkpoint_dir=tmp_path, checkpoint_every=20, callback=interrupt, **kw)
    resumed = sj.fit(x, checkpoint_dir=tmp_path, checkpoint_every=20, **kw)
    np.testing.assert_array_equal(resumed.losses, full.losses)
    np.testing.assert_array_equal(resumed.features, full.features)
    np.testing.assert_array_equal(resumed.codes, full.codes)


def test_checkpoint_for_other_data_or_settings_is_refused(tmp_path):
    x = _data()
    sj.fit(x, rank=4, max_iter=10, checkpoint_dir=tmp_path, checkpoint_every=5, progress=False)
    before = (tmp_path / _checkpoint.CHECKPOINT_FILE).read_bytes()
    with pytest.raises(ValueError, match="written for different data"):
        sj.fit(x + 1, rank=4, max_iter=10, checkpoint_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match=r"different settings \(rank: checkpoint 4 vs now 3"):
        sj.fit(x, rank=3, max_iter=10, checkpoint_dir=tmp_path, progress=False)
    # A refused resume leaves the saved state untouched.
    assert (tmp_path / _checkpoint.CHECKPOINT_FILE).read_bytes() == before


def test_fits_pin_blas_to_one_thread_and_restore_it():
    # OpenBLAS threads busy-wait after each solve and starve XLA's GEMMs on
    # CPU; every driver runs its iterations with BLAS pinned (see _threads).
    from threadpoolctl import threadpool_info, threadpool_limits

    def blas_threads():
        return {i["filepath"]: i["num_threads"] for i in threadpool_info()
                if i["user_api"] == "blas"}

    x = _data()
    jnp.linalg.solve(jnp.eye(2), jnp.ones(2)).block_until_ready()  # jaxlib's LAPACK is loaded
    seen = []
    with threadpool_limits(limits=2, user_api="blas"):
        before = blas_threads()
        assert before and set(before.values()) == {2}
        sj.fit(x, rank=3, max_iter=4, patience=None, chunk_size=2, progress=False,
               callback=lambda step, loss: seen.append(blas_threads()))
        sj.fit_streaming(x, rank=3, max_iter=2, patience=None, progress=False,
                         callback=lambda step, loss: seen.append(blas_threads()))
        assert blas_threads() == before
    # One callback per iteration: 4 in memory, 2 streamed.
    assert len(seen) == 6 and all(set(s.values()) == {1} for s in seen)
    with F.limit_blas_threads(None), threadpool_limits(limits=2, user_api="blas"):
        assert set(blas_threads().values()) == {2}


@pytest.mark.parametrize("change", ["reordered rows", "one value", "swapped columns"])
def test_checkpoint_for_changed_data_is_refused_naming_content(tmp_path, change):
    x = _data()
    sj.fit(x, rank=4, max_iter=6, checkpoint_dir=tmp_path, checkpoint_every=3, progress=False)
    y = x.copy()
    if change == "reordered rows":
        y[[0, 1]] = y[[1, 0]]  # same column sums, same sampled rows as before
    elif change == "one value":
        y[57, 3] += 1e-3
    else:
        y[:, [5, 6]] = y[:, [6, 5]]
    with pytest.raises(ValueError, match=r"written for different data \(content differs"):
        sj.fit(y, rank=4, max_iter=6, checkpoint_dir=tmp_path, progress=False)


def test_checkpoint_and_result_files_are_verified(tmp_path):
    x = _data()
    res = sj.fit(x, rank=4, max_iter=6, checkpoint_dir=tmp_path / "ck", progress=False)
    res.save(tmp_path / "res")
    for path in (tmp_path / "ck" / _checkpoint.CHECKPOINT_FILE, tmp_path / "res" / "snmf.safetensors"):
        data = bytearray(path.read_bytes())
        data[-5] ^= 0xFF  # flip bits of the last array's bytes
        path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"snmf_checkpoint.safetensors: the arrays do not match"):
        sj.fit(x, rank=4, max_iter=6, checkpoint_dir=tmp_path / "ck", progress=False)
    with pytest.raises(ValueError, match=r"snmf.safetensors: the arrays do not match"):
        sj.SNMFResult.load(tmp_path / "res")


def test_checkpoint_dir_that_is_a_file_fails_before_any_work(tmp_path):
    f = tmp_path / "not-a-dir"
    f.write_text("x")
    calls = []
    for fn in (sj.fit, sj.fit_streaming):
        with pytest.raises(ValueError, match="checkpoint_dir .* is not a directory"):
            fn(_data(), rank=3, checkpoint_dir=f, progress=False,
               callback=lambda s, l: calls.append(s))
    assert not calls and f.read_text() == "x"


def test_overflowing_data_or_settings_raise_instead_of_returning_zeros():
    x = _data() * np.float32(1e18)  # finite, but its squares overflow float32
    # Fitted at unit scale and scaled back (issue 22), so not zeros: the unit-scale fit.
    ref = sj.fit(_data(), rank=3, max_iter=5, progress=False)
    res = sj.fit(x, rank=3, max_iter=5, progress=False)
    assert res.loss == pytest.approx(ref.loss * 1e36, rel=1e-3)
    try:  # near float32's limit: a finite fit, or an error naming the cure
        assert np.isfinite(sj.fit(_data() * np.float32(1e37), rank=3, max_iter=5,
                                  progress=False).features).all()
    except FloatingPointError as e:
        assert "rescale X" in str(e)
    for bad in (dict(reg=float("nan")), dict(mu_eps=float("inf")), dict(tol=float("nan")),
                dict(reg=-1.0)):
        with pytest.raises(ValueError, match=next(iter(bad))):
            sj.fit(_data(), rank=3, progress=False, **bad)


def test_callbacks_once_per_iteration_in_order_in_every_fit():
    x = _data()
    for fit, kw in ((sj.fit, dict(chunk_size=4)), (sj.fit_streaming, dict(chunk_size=4))):
        seen = []
        res = fit(x, rank=3, max_iter=10, patience=None, progress=False,
                  callback=lambda s, l: seen.append((s, l)), **kw)
        assert [s for s, _ in seen] == list(range(1, 11))
        np.testing.assert_array_equal([l for _, l in seen], res.losses)


def test_options_are_one_type_shared_by_the_fits_and_the_cli():
    import argparse
    import dataclasses
    from snmf_jax.cli import _options as cli_options
    opts = F.FitConfig(rank=3, sparsity=0.2, max_iter=7, patience=None)
    a = sj.fit(_data(), options=opts, progress=False)
    b = sj.fit(_data(), 3, sparsity=0.2, max_iter=7, patience=None, progress=False)
    np.testing.assert_array_equal(a.losses, b.losses)
    np.testing.assert_array_equal(a.codes, b.codes)
    np.testing.assert_array_equal(a.features, b.features)
    with pytest.raises(TypeError, match=r"unexpected keyword argument\(s\) \['sparsty'\]"):
        sj.fit(_data(), 3, sparsty=0.2)
    # The CLI flags are the fields, with the same defaults.
    p = argparse.ArgumentParser()
    cli_options.add_dataclass_arguments(p, F.FitConfig)
    args = p.parse_args(["--rank", "5"])
    assert cli_options.from_args(F.FitConfig, args) == F.FitConfig(rank=5)
    for f in dataclasses.fields(F.FitConfig):
        if f.name != "rank":
            assert p.get_default(f.name) == f.default, f.name
    assert cli_options.from_args(
        F.FitConfig, p.parse_args(["--rank", "5", "--patience", "0"])).patience is None
