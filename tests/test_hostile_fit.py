"""Hostile inputs to the solver, the fits, checkpoints and results.

Each case is something a user (or a damaged disk) hands the package; each
must fail before any work with one line naming what was wrong, never return
a silently wrong answer.
"""

import json
import math

import numpy as np
import pytest

import snmf_jax as sj
from snmf_jax import _io
from snmf_jax import factorize as F
from snmf_jax.factorize import _checkpoint
from snmf_jax.factorize import _row_sources as _sources

KW = dict(sparsity=0.5, patience=None, progress=False, max_iter=3)


def _x(n=40, d=12, seed=0):
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


def _one_line(e):
    assert "\n" not in str(e), str(e)
    return str(e)


# -- data ----------------------------------------------------------------------

@pytest.mark.parametrize("x, match", [
    (np.zeros((40,), np.float32), "2-D"),
    (np.zeros((0, 12), np.float32), "empty"),
    (np.zeros((40, 0), np.float32), "empty"),
    (np.full((40, 12), np.nan, np.float32), "non-finite"),
    (np.where(np.eye(40, 12) > 0, np.inf, 1.0).astype(np.float32), "non-finite"),
    (np.array([["a"] * 12] * 40), "X"),
])
def test_bad_data_is_refused(x, match):
    with pytest.raises((ValueError, TypeError), match=match) as e:
        sj.fit(x, 3, **KW)
    _one_line(e.value)


def test_overflowing_data_is_an_error_not_zero_features():
    # 1e18 is fitted at unit scale and scaled back (issue 22); 1e37's features
    # cannot be scaled back into float32: an error naming the cure.
    assert np.abs(sj.fit(_x() * np.float32(1e18), 3, **KW).features).max() > 1e16
    try:
        assert np.isfinite(sj.fit(_x() * np.float32(1e37), 3, **KW).features).all()
    except FloatingPointError as e:
        assert "rescale" in str(e).lower()
        _one_line(e)


def test_all_zero_data_gives_no_nan():
    """Degenerate but finite data: a result, and a finite one, or an error."""
    try:
        r = sj.fit(np.zeros((40, 12), np.float32), 3, **KW)
    except (ValueError, FloatingPointError) as e:
        _one_line(e)
    else:
        assert np.isfinite(r.features).all() and np.isfinite(r.losses).all()


# -- settings ------------------------------------------------------------------

@pytest.mark.parametrize("kw, match", [
    (dict(rank=0), "rank"), (dict(rank=-1), "rank"), (dict(rank=13), "rank"),
    (dict(rank=2.5), "rank"), (dict(rank=True), "rank"), (dict(rank="3"), "rank"),
    (dict(sparsity=0), "sparsity"), (dict(sparsity=1.5), "sparsity"),
    (dict(sparsity=math.nan), "sparsity"), (dict(sparsity=math.inf), "sparsity"),
    (dict(reg=math.nan), "reg"), (dict(reg=math.inf), "reg"), (dict(reg=-1.0), "reg"),
    (dict(mu_eps=math.nan), "mu_eps"), (dict(mu_eps=0.0), "mu_eps"),
    (dict(tol=math.nan), "tol"), (dict(tol=-1.0), "tol"),
    (dict(max_iter=0), "max_iter"), (dict(max_iter=2.0), "max_iter"),
    (dict(patience=0), "patience"), (dict(seed=1.5), "seed"), (dict(seed=None), "seed"),
    (dict(init="nope"), "init"), (dict(tol_mode="x"), "tol_mode"),
    (dict(chunk_size=0), "chunk_size"), (dict(checkpoint_every=-3), "checkpoint_every"),
    (dict(bogus=1), "bogus"),
])
def test_bad_settings_are_refused(kw, match):
    kw = {"rank": 3, **KW, **kw}
    with pytest.raises((ValueError, TypeError), match=match) as e:
        sj.fit(_x(), **kw)
    _one_line(e.value)


@pytest.mark.parametrize("codes, match", [
    (np.ones((40, 2), np.float32), "shape"),
    (-np.ones((40, 3), np.float32), "nonnegative"),
    (np.full((40, 3), np.nan, np.float32), "non-finite"),
])
def test_bad_codes_init_is_refused(codes, match):
    with pytest.raises(ValueError, match=match):
        sj.fit(_x(), 3, codes_init=codes, **KW)


@pytest.mark.parametrize("codes, match", [
    (np.ones((40, 2), np.float32), "shape"),
    (-np.ones((40, 3), np.float32), "nonnegative"),
    (np.full((40, 3), np.nan, np.float32), "non-finite"),
])
def test_bad_codes_init_is_refused_by_the_streaming_fit(codes, match, tmp_path):
    with pytest.raises(ValueError, match=match):
        F.fit_streaming(_sources.ArraySource(_x(), 16), 3, codes_init=codes,
                        checkpoint_dir=tmp_path / "ck", **KW)


def test_streaming_chunk_with_nan_names_the_chunk(tmp_path):
    x = _x()
    x[30, 2] = np.nan
    with pytest.raises(ValueError, match="chunk 1") as e:
        F.fit_streaming(_sources.ArraySource(x, 16), 3, **KW)
    _one_line(e.value)


def test_streaming_overflow_is_an_error(tmp_path):
    # Refused after the first pass, naming the scale, before it can overflow.
    with pytest.raises(ValueError, match="largest .value. is 3.9e\\+18, outside"):
        F.fit_streaming(_sources.ArraySource(_x() * np.float32(1e18), 16), 3, **KW)


def test_streaming_source_that_lies_about_its_shape(tmp_path):
    class Liar(_sources.ArraySource):
        def chunk(self, i):
            return super().chunk(i)[:, :5]  # narrower than d
    with pytest.raises(ValueError, match="chunk 0") as e:
        F.fit_streaming(Liar(_x(), 16), 3, **KW)
    _one_line(e.value)


@pytest.mark.parametrize("ranks, match", [
    ([], "ranks"), ([0, 1], "ranks"), ([3, 5], "ranks"), ([2.5, 1], "ranks"),
    ([50, 2], "ranks"),
])
def test_hierarchy_bad_ranks(ranks, match):
    with pytest.raises((ValueError, TypeError), match=match):
        F.fit_hierarchical(_x(), ranks, sparsity=0.5, progress=False, max_iter=3)


@pytest.mark.parametrize("kw, match", [
    (dict(sparsity=[0.5, 0]), "sparsity"), (dict(restarts=0), "restarts"),
    (dict(upper_inits=("x",)), "upper_inits"), (dict(finetune_steps=-1), "finetune_steps"),
    (dict(finetune_lr=math.nan), "finetune_lr"), (dict(finetune_lr=0.0), "finetune_lr"),
    (dict(max_iter=0), "max_iter"), (dict(tol=math.nan), "tol"),
    (dict(patience=0), "patience"),
])
def test_hierarchy_bad_settings_fail_before_level_0(kw, match, monkeypatch):
    def no_fit(*a, **k):
        raise AssertionError("level 0 ran before the settings were checked")
    monkeypatch.setattr(F._hierarchy, "fit", no_fit, raising=False)
    kw = {"sparsity": 0.5, "progress": False, "max_iter": 3, **kw}
    with pytest.raises(ValueError, match=match):
        F.fit_hierarchical(_x(), [4, 2], **kw)


# -- checkpoints -----------------------------------------------------------------

def test_checkpoint_dir_that_is_a_file(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ValueError, match="not a directory"):
        sj.fit(_x(), 3, checkpoint_dir=f, **KW)
    with pytest.raises(ValueError, match="not a directory"):
        F.fit_streaming(_x(), 3, checkpoint_dir=f, **KW)
    assert f.read_text() == "x"


def test_checkpoint_for_one_changed_value_is_refused(tmp_path):
    x = _x()
    sj.fit(x, 3, checkpoint_dir=tmp_path, checkpoint_every=1, **KW)
    y = x.copy()
    y[17, 5] = np.nextafter(y[17, 5], np.float32(np.inf))  # one ulp: escapes any summary
    with pytest.raises(ValueError, match="different data"):
        sj.fit(y, 3, checkpoint_dir=tmp_path, checkpoint_every=1, **KW)


def _damage(path, how):
    data = bytearray(path.read_bytes())
    if how == "truncate":
        path.write_bytes(bytes(data[:len(data) // 2]))
    elif how == "flip":
        data[-5] ^= 0xFF
        path.write_bytes(bytes(data))
    elif how == "garbage":
        path.write_bytes(b"not a safetensors file at all")
    elif how == "empty":
        path.write_bytes(b"")


@pytest.mark.parametrize("how", ["truncate", "flip", "garbage", "empty"])
def test_damaged_checkpoint_fails_naming_the_file(tmp_path, how):
    x = _x()
    sj.fit(x, 3, checkpoint_dir=tmp_path, checkpoint_every=1, **KW)
    ck = tmp_path / _checkpoint.CHECKPOINT_FILE
    _damage(ck, how)
    with pytest.raises(ValueError) as e:
        sj.fit(x, 3, checkpoint_dir=tmp_path, checkpoint_every=1, **KW)
    assert str(ck) in _one_line(e.value)


def test_checkpoint_with_rewritten_header_is_refused(tmp_path):
    """Arrays swapped under a copied header: the recorded digest catches it."""
    x = _x()
    sj.fit(x, 3, checkpoint_dir=tmp_path, checkpoint_every=1, **KW)
    ck = tmp_path / _checkpoint.CHECKPOINT_FILE
    meta = _io.read_metadata(ck)
    arrays = _io.load_arrays(ck)
    arrays["best_features"] = arrays["best_features"] * 2
    _io.save_arrays(ck, arrays, meta)
    with pytest.raises(ValueError, match="corrupt"):
        sj.fit(x, 3, checkpoint_dir=tmp_path, checkpoint_every=1, **KW)


def test_streaming_checkpoint_for_another_layer_is_refused(tmp_path):
    x0, x1 = _x(seed=1), _x(seed=2)
    w = sj.activations.StoreWriter(tmp_path / "acts", layers=(0, 1), d=12, chunk_rows=16,
                                   n_rows=40, settings={"t": 1})
    for i in range(0, 40, 16):
        w.append({0: x0[i:i + 16], 1: x1[i:i + 16]}, {})
    w.finish()
    kw = dict(KW, checkpoint_dir=tmp_path / "ck")
    F.fit_streaming(tmp_path / "acts", 3, layer=0, **kw)
    with pytest.raises(ValueError, match="layer"):
        F.fit_streaming(tmp_path / "acts", 3, layer=1, **kw)


# -- results -----------------------------------------------------------------

@pytest.mark.parametrize("how", ["truncate", "flip", "garbage", "empty"])
def test_damaged_result_fails_naming_the_file(tmp_path, how):
    sj.fit(_x(), 3, **KW).save(tmp_path / "r")
    f = tmp_path / "r" / "snmf.safetensors"
    _damage(f, how)
    with pytest.raises(ValueError) as e:
        sj.SNMFResult.load(tmp_path / "r")
    assert str(f) in _one_line(e.value)


def test_result_without_its_digest_is_refused(tmp_path):
    sj.fit(_x(), 3, **KW).save(tmp_path / "r")
    f = tmp_path / "r" / "snmf.safetensors"
    meta = _io.read_metadata(f)
    info = json.loads(meta["snmf_jax"])
    del info["arrays_sha256"]
    _io.save_arrays(f, _io.load_arrays(f), {"snmf_jax": json.dumps(info)})
    with pytest.raises(ValueError, match="SHA-256"):
        sj.SNMFResult.load(tmp_path / "r")


def test_result_with_bad_header_json_names_the_file(tmp_path):
    sj.fit(_x(), 3, **KW).save(tmp_path / "r")
    f = tmp_path / "r" / "snmf.safetensors"
    _io.save_arrays(f, _io.load_arrays(f), {"snmf_jax": "{not json"})
    with pytest.raises(ValueError) as e:
        sj.SNMFResult.load(tmp_path / "r")
    assert str(f) in _one_line(e.value)


def test_result_with_nonfinite_features_is_refused(tmp_path):
    r = sj.fit(_x(), 3, **KW)
    bad = sj.SNMFResult(features=np.full_like(r.features, np.nan), codes=r.codes,
                        losses=r.losses, best_iter=r.best_iter, converged=r.converged,
                        settings=r.settings)
    with pytest.raises(ValueError, match="non-finite"):
        bad.save(tmp_path / "r")


@pytest.mark.parametrize("how", ["truncate", "flip", "garbage"])
def test_damaged_hierarchy_result_fails_naming_the_file(tmp_path, how):
    h = F.fit_hierarchical(_x(), [4, 2], sparsity=0.5, progress=False, max_iter=3,
                           restarts=1)
    h.save(tmp_path / "h")
    files = sorted((tmp_path / "h").glob("*.safetensors"))
    _damage(files[0], how)
    with pytest.raises(ValueError) as e:
        F.HierarchicalResult.load(tmp_path / "h")
    assert str(files[0]) in _one_line(e.value)


def test_hierarchy_checkpoint_manifest_not_json_names_the_file(tmp_path):
    kw = dict(sparsity=0.5, progress=False, max_iter=3, restarts=1,
              checkpoint_dir=tmp_path / "ck")
    F.fit_hierarchical(_x(), [4, 2], **kw)
    m = tmp_path / "ck" / "manifest.json"
    m.write_text("{broken")
    with pytest.raises(ValueError) as e:
        F.fit_hierarchical(_x(), [4, 2], **kw)
    assert str(m) in _one_line(e.value)


def test_metadata_that_cannot_be_saved_fails_before_the_fit(monkeypatch):
    """Not after it: a long fit's result must not be lost at save time."""
    for fn in (sj.fit, F.fit_streaming):
        with pytest.raises(ValueError, match="metadata") as e:
            fn(_x(), 3, metadata={"model": object()}, **KW)
        _one_line(e.value)
    with pytest.raises(ValueError, match="metadata"):
        F.fit_hierarchical(_x(), [4, 2], sparsity=0.5, progress=False, max_iter=3,
                           metadata={"s": {1, 2}})


def test_streaming_fit_never_deletes_a_folder_it_did_not_write(tmp_path):
    """checkpoint_dir/codes/step-* folders are removed only when they hold
    nothing but a codes store's files."""
    mine = tmp_path / "ck" / "codes" / "step-000000"
    mine.mkdir(parents=True)
    (mine / "thesis.tex").write_text("years of work")
    with pytest.raises(ValueError, match="thesis.tex") as e:
        F.fit_streaming(_sources.ArraySource(_x(), 16), 3, checkpoint_dir=tmp_path / "ck", **KW)
    _one_line(e.value)
    assert (mine / "thesis.tex").read_text() == "years of work"
