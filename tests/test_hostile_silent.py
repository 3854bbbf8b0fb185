"""Hostile inputs, class "silently wrong": what used to give a wrong answer
with exit status 0 now fails with one line, or gives the right answer.

- A result, hierarchy or codes store records the store, layer and site it
  was fitted on; readers refuse another one.
- A checkpoint resumes only when every setting that changes the result matches.
- Headers and manifests are validated field by field, naming the file
  (hypothesis over every field).
- Numerics: tiny or huge data fits like unit-scale data; all-zero initial
  codes, values the store dtype cannot hold and overflowing steering scales
  are errors.
- Flags are used as given; text lines and labels keep their identity.
"""

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import snmf_jax as sj
from snmf_jax import _io
from _hostile_cli import N, D, run, one_line_error, write_store

_HYP = settings(max_examples=60, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


def _fit_cli(capsys, store, out, *extra):
    rc, err = run(capsys, "fit", store, "--rank", 3, "--max-iter", 5, "--out", out,
                  "--no-progress", *extra)
    assert rc == 0, err


# -- identity of the store, layer and site -------------------------------------------


def test_interpret_refuses_another_store_with_the_same_row_count(tmp_path, capsys):
    write_store(tmp_path / "a", seed=0)
    write_store(tmp_path / "b", seed=1)  # same shape, other data
    _fit_cli(capsys, tmp_path / "a", tmp_path / "res")
    rc, err = run(capsys, "interpret", "--features", tmp_path / "res", "--activations",
                  tmp_path / "b", "--out", tmp_path / "p.html", "--model", "none")
    assert one_line_error(rc, err, "another store")
    assert not (tmp_path / "p.html").exists()


def test_interpret_refuses_another_layer_of_the_same_store(tmp_path, capsys):
    write_store(tmp_path / "a", layers=(3, 5))
    _fit_cli(capsys, tmp_path / "a", tmp_path / "res", "--layer", 3)
    rc, err = run(capsys, "interpret", "--features", tmp_path / "res", "--activations",
                  tmp_path / "a", "--out", tmp_path / "p.html", "--model", "none",
                  "--layer", 5)
    assert one_line_error(rc, err, "layer")


def test_interpret_refuses_a_store_of_another_site(tmp_path, capsys):
    x = np.random.default_rng(0).standard_normal((N, D)).astype(np.float32)
    write_store(tmp_path / "a", x=x)
    write_store(tmp_path / "b", x=x, site="mlp_out")
    _fit_cli(capsys, tmp_path / "a", tmp_path / "res")
    rc, err = run(capsys, "interpret", "--features", tmp_path / "res", "--activations",
                  tmp_path / "b", "--out", tmp_path / "p.html", "--model", "none")
    assert one_line_error(rc, err, "site")


def test_hierarchy_store_must_be_the_one_the_result_was_fitted_on(tmp_path, capsys):
    write_store(tmp_path / "a", seed=0)
    write_store(tmp_path / "b", seed=1)
    _fit_cli(capsys, tmp_path / "a", tmp_path / "res")
    rc, err = run(capsys, "hierarchy", tmp_path / "res", "--ranks", 2, "--store",
                  tmp_path / "b", "--out", tmp_path / "h", "--no-progress", "--restarts", 1)
    assert one_line_error(rc, err, "another store")


def test_hierarchy_records_its_store_and_layer(tmp_path, capsys):
    write_store(tmp_path / "a")
    rc, err = run(capsys, "hierarchy", tmp_path / "a", "--ranks", 3, 2, "--out",
                  tmp_path / "h", "--no-progress", "--restarts", 1, "--max-iter", 20)
    assert rc == 0, err
    h = sj.HierarchicalResult.load(tmp_path / "h")
    assert h.metadata["store"]["layer"] == 3 and h.metadata["store"]["n_rows"] == N


def test_steer_refuses_a_layer_other_than_the_fitted_one(tmp_path, capsys):
    write_store(tmp_path / "a")  # layer 3 only; fitted without --layer
    _fit_cli(capsys, tmp_path / "a", tmp_path / "res")
    rc, err = run(capsys, "steer", "--model", tmp_path / "no-model", "--features",
                  tmp_path / "res", "--feature", 0, "--layer", 7)
    assert one_line_error(rc, err, "--layer 7", "3")


def test_steer_refuses_features_of_another_site(tmp_path, capsys):
    write_store(tmp_path / "a", site="mlp_out")
    _fit_cli(capsys, tmp_path / "a", tmp_path / "res")
    rc, err = run(capsys, "steer", "--model", tmp_path / "no-model", "--features",
                  tmp_path / "res", "--feature", 0)
    assert one_line_error(rc, err, "site", "mlp_out")


# -- checkpoints ---------------------------------------------------------------------


def _x(seed=0, n=60, d=10):
    return np.abs(np.random.default_rng(seed).standard_normal((n, d))).astype(np.float32)


def test_checkpoint_with_a_setting_the_current_fit_lacks_is_refused(tmp_path):
    from snmf_jax.factorize._checkpoint import Checkpointer
    x = _x()
    sj.fit(x, 3, max_iter=10, checkpoint_dir=tmp_path, checkpoint_every=5, progress=False)
    path = tmp_path / "snmf_checkpoint.safetensors"
    arrays, meta = _io.load_arrays(path), _io.read_metadata(path)
    settings = json.loads(meta["settings"])
    settings["whitening"] = True  # a setting a later version would record
    meta["settings"] = json.dumps(settings, sort_keys=True)
    _io.save_arrays(path, arrays, meta)
    with pytest.raises(ValueError, match="whitening"):
        sj.fit(x, 3, max_iter=20, checkpoint_dir=tmp_path, checkpoint_every=5,
               progress=False)


def test_checkpoint_past_a_smaller_max_iter_is_not_returned_as_that_fit(tmp_path):
    x = _x()
    sj.fit(x, 3, max_iter=20, patience=None, checkpoint_dir=tmp_path, checkpoint_every=5,
           progress=False)
    try:
        res = sj.fit(x, 3, max_iter=10, patience=None, checkpoint_dir=tmp_path,
                     checkpoint_every=5, progress=False)
    except ValueError as e:
        assert "max_iter" in str(e)
    else:
        assert res.n_iter <= 10


_JSON_TEXT = st.one_of(st.text(max_size=8), st.builds(json.dumps, st.one_of(
    st.none(), st.integers(), st.lists(st.integers(), max_size=2),
    st.dictionaries(st.sampled_from(["rank", "seed", "kind", "x"]), st.integers(0, 3),
                    max_size=3))))


@pytest.mark.slow
@_HYP
@given(key=st.sampled_from(["format", "settings", "data", "arrays_sha256"]), value=_JSON_TEXT)
def test_any_checkpoint_header_field_resumes_right_or_fails_naming_the_file(tmp_path, key,
                                                                            value):
    ck = tmp_path / "ck"
    x = _x()
    if not ck.exists():
        sj.fit(x, 3, max_iter=10, patience=None, checkpoint_dir=ck, checkpoint_every=5,
               progress=False)
    path = ck / "snmf_checkpoint.safetensors"
    arrays, meta = _io.load_arrays(path), _io.read_metadata(path)
    try:
        _io.save_arrays(path, arrays, {**meta, key: value})
        res = sj.fit(x, 3, max_iter=12, patience=None, checkpoint_dir=ck, checkpoint_every=5,
                     progress=False)
        assert res.n_iter == 12 and np.isfinite(res.losses).all()
    except ValueError as e:
        assert str(path) in str(e)
    finally:
        _io.save_arrays(path, arrays, meta)


# -- headers, field by field -----------------------------------------------------------


def _result_file(tmp_path):
    res = sj.fit(_x(), 3, max_iter=6, patience=None, progress=False, metadata={"m": 1})
    res.save(tmp_path / "r")
    return tmp_path / "r" / "snmf.safetensors"


def _edit_header(path, key, value, *, name="snmf_jax"):
    arrays, meta = _io.load_arrays(path), _io.read_metadata(path)
    info = json.loads(meta[name])
    if value is _DELETE:
        info.pop(key, None)
    else:
        info[key] = value
    _io.save_arrays(path, arrays, {**meta, name: json.dumps(info)})


_DELETE = object()


@pytest.mark.parametrize("key,value", [("best_iter", -1), ("best_iter", 0), ("best_iter", 7),
                                       ("best_iter", 2.0), ("best_iter", True),
                                       ("converged", "no"), ("converged", 0),
                                       ("settings", []), ("metadata", "x"),
                                       ("best_iter", _DELETE), ("settings", _DELETE)])
def test_result_header_fields_are_validated_naming_the_file(tmp_path, key, value):
    path = _result_file(tmp_path)
    _edit_header(path, key, value)
    with pytest.raises(ValueError) as e:
        sj.SNMFResult.load(path.parent)
    assert str(path) in str(e.value) and key in str(e.value)


_JSON = st.recursive(st.none() | st.booleans() | st.integers(-10, 10) | st.floats(
    allow_nan=False, allow_infinity=False) | st.text(max_size=4),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=3), c, max_size=3),
    max_leaves=6)


@_HYP
@given(key=st.sampled_from(["format", "best_iter", "converged", "settings", "metadata",
                            "arrays_sha256"]), value=_JSON | st.just(_DELETE))
def test_any_result_header_field_loads_right_or_fails_naming_the_file(tmp_path, key, value):
    path = _result_file(tmp_path)
    _edit_header(path, key, value)
    try:
        r = sj.SNMFResult.load(path.parent)
    except ValueError as e:
        assert str(path) in str(e)
        return
    assert isinstance(r.converged, bool) and isinstance(r.settings, dict)
    assert isinstance(r.metadata, dict)
    assert 1 <= r.best_iter <= r.n_iter and r.loss == r.losses[r.best_iter - 1]


@pytest.mark.slow
@_HYP
@given(key=st.sampled_from(["format", "ranks", "settings", "metadata"]),
       value=_JSON | st.just(_DELETE) | st.lists(st.integers(-2, 6), max_size=4))
def test_any_hierarchy_header_field_loads_right_or_fails_naming_the_file(tmp_path, key,
                                                                         value):
    h = sj.fit_hierarchical(_x(), [3, 2], restarts=1, max_iter=10, progress=False)
    h.save(tmp_path / "h")
    path = tmp_path / "h" / "hierarchy.safetensors"
    _edit_header(path, key, value)
    try:
        g = sj.HierarchicalResult.load(tmp_path / "h")
    except ValueError as e:
        assert str(path) in str(e)
        return
    assert g.ranks == (3, 2) and isinstance(g.settings, dict) and isinstance(g.metadata, dict)


_MANIFEST_KEYS = ["format", "format_version", "layers", "d", "dtype", "chunk_rows",
                  "chunks", "complete", "site", "model", "n_rows", "settings"]


@_HYP
@given(key=st.sampled_from(_MANIFEST_KEYS), value=_JSON | st.just(_DELETE))
def test_any_store_manifest_field_opens_right_or_fails_naming_the_file(tmp_path, key, value):
    from snmf_jax.activations import ActivationStore
    path = tmp_path / "s"
    if not path.exists():
        write_store(path)
    mpath = path / "manifest.json"
    original = mpath.read_text()
    m = json.loads(original)
    if value is _DELETE:
        m.pop(key, None)
    else:
        m[key] = value
    mpath.write_text(json.dumps(m))
    try:
        s = ActivationStore(path)
        assert s.site is None or isinstance(s.site, str)
        assert s.model_name is None or isinstance(s.model_name, str)
        assert isinstance(s.identity(s.layers[0]), dict)
        s.rows(0, s.n_rows, layer=s.layers[0])
    except (ValueError, FileNotFoundError) as e:
        assert "manifest.json" in str(e) or str(path) in str(e)
    finally:
        mpath.write_text(original)


@pytest.mark.parametrize("key,value", [("metadata", {"layer": "3"}),
                                       ("metadata", {"layer": -1}), ("metadata", {"site": 5}),
                                       ("metadata", {"store": "acts"})])
def test_result_provenance_fields_are_validated(tmp_path, key, value):
    path = _result_file(tmp_path)
    _edit_header(path, key, value)
    with pytest.raises(ValueError, match="metadata") as e:
        sj.SNMFResult.load(path.parent)
    assert str(path) in str(e.value)


@_HYP
@given(key=st.sampled_from(["format", "rank", "chunks", "step", "store"]),
       value=_JSON | st.just(_DELETE))
def test_any_codes_manifest_field_opens_right_or_fails_naming_the_file(tmp_path, key, value):
    from snmf_jax.factorize import CodesStore
    path = tmp_path / "c"
    if not path.exists():
        CodesStore.write_chunk(path, 0, np.ones((4, 2), np.float32))
        CodesStore.finish(path, 2)
    mpath = path / "manifest.json"
    original = mpath.read_text()
    m = json.loads(original)
    if value is _DELETE:
        m.pop(key, None)
    else:
        m[key] = value
    mpath.write_text(json.dumps(m))
    try:
        c = CodesStore(path)
        assert c.to_numpy().shape == (c.n_rows, c.rank)
        assert c.step is None or (isinstance(c.step, int) and c.step >= 0)
        assert c.manifest.get("store") is None or isinstance(c.manifest["store"], dict)
    except (ValueError, FileNotFoundError) as e:
        assert "manifest.json" in str(e) or str(path) in str(e)
    finally:
        mpath.write_text(original)


# -- numerics ------------------------------------------------------------------------


def _rel(res, x):
    return res.loss / float(np.sum(x.astype(np.float64) ** 2))


@pytest.mark.parametrize("scale", [1e-20, 1e-8, 1e-4, 1e12])
def test_tiny_or_huge_data_fits_like_unit_scale_data(scale):
    rng = np.random.default_rng(0)
    x = (np.abs(rng.standard_normal((120, 20))) * rng.standard_normal((120, 20))).astype(
        np.float32)
    ref = _rel(sj.fit(x, 4, max_iter=60, progress=False), x)
    xs = (x * scale).astype(np.float32)
    try:
        res = sj.fit(xs, 4, max_iter=60, progress=False)
    except ValueError as e:
        assert "scale" in str(e)
        return
    assert _rel(res, xs) == pytest.approx(ref, rel=1e-3)
    assert np.abs(res.features).max() == pytest.approx(
        np.abs(sj.fit(x, 4, max_iter=60, progress=False).features).max() * scale, rel=1e-2)


def test_all_zero_codes_init_is_refused():
    with pytest.raises(ValueError, match="codes_init"):
        sj.fit(_x(), 3, codes_init=np.zeros((60, 3), np.float32), progress=False)


def test_a_value_float16_cannot_hold_fails_at_write_not_as_inf_at_read(tmp_path):
    x = np.random.default_rng(0).standard_normal((N, D)).astype(np.float32)
    x[5, 2] = 1e5  # beyond float16's 65504
    try:
        s = write_store(tmp_path / "s", dtype="float16", x=x)
    except ValueError as e:
        assert "float16" in str(e)
        return
    assert np.isfinite(s.rows(0, N)).all()


def test_a_nan_kl_counts_as_too_far_in_the_calibration_bracket():
    from snmf_jax.steer._calibrate import SearchState
    s = SearchState(np.array([0.1]), 1.0, alpha_min=1e-3, alpha_max=1e3, growth=4.0)
    s.update(np.array([np.nan]))  # the steered logits overflowed at alpha = 1
    assert s.reachable[0] and s.alpha[0] < 1.0


def test_a_steering_scale_that_overflows_the_logits_is_an_error(tiny_word_model):
    from snmf_jax import steer
    v = np.ones((1, 24), np.float32)
    patch = steer.make_patch(0, "mlp_hidden", v, scale=np.array([3e38], np.float32))
    try:
        gen = steer.steer(tiny_word_model, patch).generate(["a b"], max_new_tokens=4)
    except ValueError as e:
        assert "non-finite" in str(e)
        return
    # Generation went on: it must have had finite logits to sample from (from NaN
    # logits it returns a fixed token, which reads as silently empty text).
    import jax.numpy as jnp
    from snmf_jax.steer import patched_forward
    toks = jnp.asarray([tiny_word_model.tokenizer.encode("a b")])
    logits = patched_forward(tiny_word_model.params, toks, patch,
                             config=tiny_word_model.config).logits
    assert gen.tokens.size and np.isfinite(np.asarray(logits)).all()


# -- flags and text used as given --------------------------------------------------------


def test_evaluate_sae_width_0_is_refused_not_replaced(tmp_path, capsys):
    rc, err = run(capsys, "evaluate", "--model", tmp_path / "no-model", "--layer", 0,
                  "--sae-width", 0, "--out", tmp_path / "ev")
    assert one_line_error(rc, err, "--sae-width")


def test_a_text_line_holding_u2028_is_one_document(tmp_path):
    from snmf_jax.activations import load_dataset
    p = tmp_path / "t.txt"
    p.write_text("one\u2028still one\ntwo\x0cstill two\n", encoding="utf-8")
    assert load_dataset(str(p)).texts == ("one\u2028still one", "two\x0cstill two")


def test_a_jsonl_record_holding_u2028_is_one_record(tmp_path):
    from snmf_jax.activations import load_dataset
    p = tmp_path / "t.jsonl"
    p.write_text(json.dumps({"text": "a\u2028b"}, ensure_ascii=False) + "\n", encoding="utf-8")
    assert load_dataset(str(p)).texts == ("a\u2028b",)


@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
def test_labels_null_and_None_stay_distinct(tmp_path, suffix):
    from snmf_jax.activations import load_dataset
    recs = [{"text": "x", "label": None}, {"text": "y", "label": "None"}]
    p = tmp_path / f"d{suffix}"
    if suffix == ".jsonl":
        p.write_text("\n".join(json.dumps(r) for r in recs))
    else:
        p.write_text(json.dumps([{"prompt": r["text"], "label": r["label"]} for r in recs]))
    data = load_dataset(str(p), label_field="label", text_field="text"
                        if suffix == ".jsonl" else None)
    assert data.labels[0] != data.labels[1]


@pytest.mark.parametrize("scale", [1e-20, 1e12])
def test_streaming_fit_refuses_data_outside_the_scale_band(tmp_path, scale):
    """The in-memory fit rescales; the streaming fit, which cannot, says why."""
    x = np.random.default_rng(0).standard_normal((64, 12)).astype(np.float32) * scale
    with pytest.raises(ValueError, match="largest .value. is .*outside"):
        sj.fit_streaming(x, 3, checkpoint_dir=tmp_path / "ck", max_iter=3, progress=False)
