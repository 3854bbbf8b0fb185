"""Hostile inputs, classes "unclear or late errors" and "odds and ends".

Every flag is checked before the model loads and before any long work: the
commands below name a model or input that does not exist, so a flag checked
late would be reported as the missing model instead. Each error is one line
naming the flag or field, without a traceback.
"""

import json
import os
import stat

import numpy as np
import pytest

import snmf_jax as sj
from _hostile_cli import run, run_out, one_line_error, write_store

LONG = "x" * 300  # longer than any file system's name limit (255)


def _case(*argv):
    return pytest.param(argv, id=" ".join(str(a) for a in argv[:4])[:60])


@pytest.fixture
def nomodel(tmp_path):
    return tmp_path / "no-such-model"


@pytest.mark.parametrize("extra,flag", [
    (("--sae-width", "-4"), "--sae-width"),
    (("--concepts", "1"), "--concepts"),
    (("--rank", "0"), "--rank"),
    (("--targets", "-1"), "--targets"),
    (("--samples", "100000000"), "--samples"),
    (("--max-new-tokens", "1000000000"), "--max-new-tokens"),
    (("--seed", str(2 ** 63)), "--seed"),
    (("--unsupervised", "-2"), "--unsupervised"),
])
def test_evaluate_flags_are_checked_before_the_model_loads(tmp_path, capsys, nomodel, extra,
                                                           flag):
    rc, err = run(capsys, "evaluate", "--model", nomodel, "--layer", 0, "--out",
                  tmp_path / "ev", *extra)
    assert one_line_error(rc, err, flag)


@pytest.mark.parametrize("out", ["under-a-file", "over-long"])
@pytest.mark.parametrize("command", ["evaluate", "export", "demo", "fit", "hierarchy"])
def test_an_out_that_cannot_be_written_is_found_before_any_work(tmp_path, capsys, nomodel,
                                                                command, out):
    (tmp_path / "f").write_text("a file")
    path = tmp_path / "f" / "out" if out == "under-a-file" else tmp_path / LONG
    argv = {"evaluate": ["evaluate", "--model", nomodel, "--layer", 0],
            "export": ["export", "--model", nomodel, "--layers", 0],
            "demo": ["demo", "--model", nomodel],
            "fit": ["fit", tmp_path / "no-input", "--rank", 2],
            "hierarchy": ["hierarchy", tmp_path, "--ranks", 2]}[command]
    rc, err = run(capsys, *argv, "--out", path)
    assert one_line_error(rc, err, "--out")


def test_export_duplicate_layers(capsys, tmp_path, nomodel):
    rc, err = run(capsys, "export", "--model", nomodel, "--layers", "3", "3", "--out",
                  tmp_path / "s")
    assert one_line_error(rc, err, "--layers")


@pytest.mark.parametrize("extra,flag", [
    (("--prompt", ""), "--prompt"),
    (("--prompt", "   "), "--prompt"),
    (("--calibration-prompt", ""), "--calibration-prompt"),
    (("--samples", "100000000"), "--samples"),
    (("--max-new-tokens", "1000000000"), "--max-new-tokens"),
    (("--seed", str(2 ** 64)), "--seed"),
])
def test_steer_flags_are_checked_before_anything_loads(tmp_path, capsys, nomodel, extra, flag):
    rc, err = run(capsys, "steer", "--model", nomodel, "--features", tmp_path / "none",
                  "--feature", 0, *extra)
    assert one_line_error(rc, err, flag)


@pytest.mark.parametrize("extra,flag", [
    (("--max-new-tokens", "1000000000"), "--max-new-tokens"),
    (("--seed", str(2 ** 63)), "--seed"),
])
def test_demo_flags_are_checked_before_the_model_loads(tmp_path, capsys, nomodel, extra, flag):
    rc, err = run(capsys, "demo", "--model", nomodel, "--out", tmp_path / "d", *extra)
    assert one_line_error(rc, err, flag)


@pytest.mark.parametrize("extra,flag", [
    (("--local-devices", "0"), "--local-devices"),
    (("--local-devices", "-1"), "--local-devices"),
    (("--seed", str(2 ** 63)), "seed"),
    (("--chunk-rows", "0"), "--chunk-rows"),
])
def test_fit_flags_are_checked_before_the_input_is_read(tmp_path, capsys, extra, flag):
    rc, err = run(capsys, "fit", tmp_path / "no-input", "--rank", 2, "--out", tmp_path / "o",
                  *extra)
    assert one_line_error(rc, err, flag)


@pytest.mark.parametrize("extra,flag", [
    (("--ranks", "0"), "--ranks"),
    (("--ranks", "2", "--sparsity", "2"), "--sparsity"),
    (("--ranks", "2", "--restarts", "0"), "--restarts"),
    (("--ranks", "2", "--max-iter", "0"), "--max-iter"),
])
def test_hierarchy_flags_are_checked_before_the_fit(tmp_path, capsys, extra, flag):
    write_store(tmp_path / "a")
    rc, err = run(capsys, "hierarchy", tmp_path / "a", "--out", tmp_path / "h",
                  "--no-progress", *extra)
    # The flag, or the library's name of the same setting (ranks[0], max_iter).
    assert one_line_error(rc, err, flag) or one_line_error(rc, err, flag[2:].replace("-", "_"))
    assert not (tmp_path / "h").exists()


def test_a_toml_config_with_a_byte_order_mark_is_read(tmp_path, capsys):
    cfg = tmp_path / "run.toml"
    cfg.write_bytes(b"\xef\xbb\xbf[fit]\nrank = 2\n")
    rc, err = run(capsys, "--config", cfg, "fit", tmp_path / "no-input", "--out",
                  tmp_path / "o")
    assert one_line_error(rc, err, "no-input")  # the file was read; the input is missing


def test_bfloat16_input_fits(tmp_path):
    import jax.numpy as jnp
    x = np.abs(np.random.default_rng(0).standard_normal((40, 8))).astype(np.float32)
    try:
        res = sj.fit(jnp.asarray(x, jnp.bfloat16), 2, max_iter=5, progress=False)
    except ValueError as e:
        assert "bfloat16" in str(e) and "\n" not in str(e)
        return
    assert np.isfinite(res.loss)


@pytest.mark.parametrize("key,value", [("best_iter", "3"), ("converged", "no"),
                                       ("settings", "rank=3")])
def test_a_header_field_of_the_wrong_type_is_one_line_naming_it(tmp_path, capsys, key, value):
    from snmf_jax import _io
    sj.fit(np.abs(np.random.default_rng(0).standard_normal((30, 6))).astype(np.float32), 2,
           max_iter=4, progress=False).save(tmp_path / "r")
    path = tmp_path / "r" / "snmf.safetensors"
    arrays, meta = _io.load_arrays(path), _io.read_metadata(path)
    info = json.loads(meta["snmf_jax"])
    info[key] = value
    _io.save_arrays(path, arrays, {**meta, "snmf_jax": json.dumps(info)})
    rc, err = run(capsys, "steer", "--model", tmp_path / "no-model", "--features",
                  tmp_path / "r", "--feature", 0, "--layer", 0)
    assert one_line_error(rc, err, key)


# -- odds and ends ---------------------------------------------------------------------


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_respect_the_umask(tmp_path, umask, mode):
    from snmf_jax import _io
    old = os.umask(umask)
    try:
        _io.write_json(tmp_path / "a.json", {"a": 1})
        _io.save_arrays(tmp_path / "a.safetensors", {"x": np.zeros(3, np.float32)})
    finally:
        os.umask(old)
    for name in ("a.json", "a.safetensors"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode


def test_export_no_progress_silences_the_model_loading_bar(tmp_path, capsys, monkeypatch):
    import snmf_jax.models
    seen = {}

    def fake_load(name, *a, **kw):
        seen.update(kw)
        raise RuntimeError("stop here")
    monkeypatch.setattr(snmf_jax.models, "load_model", fake_load)
    data = tmp_path / "d.txt"
    data.write_text("a b\n")
    run(capsys, "export", "--model", "m", "--layers", 0, "--dataset", data, "--out",
        tmp_path / "s", "--no-progress")
    assert seen.get("progress") is False


@pytest.mark.parametrize("command", [
    ("demo", "--out", "{tmp}/d"),
    ("steer", "--features", "{tmp}/none", "--feature", "0"),
    ("evaluate", "--layer", "0", "--out", "{tmp}/e"),
])
def test_every_command_that_loads_a_model_takes_no_progress(tmp_path, capsys, nomodel,
                                                            command):
    argv = [a.format(tmp=tmp_path) for a in command]
    rc, err = run(capsys, argv[0], "--model", nomodel, *argv[1:], "--no-progress")
    assert rc == 1 and "unrecognized" not in err  # accepted; what is missing is an input


@pytest.mark.slow
def test_demo_does_not_claim_a_file_it_skipped(tmp_path, capsys, monkeypatch,
                                               tiny_word_model):
    """--steer 0: no feature is steered, so steered.json is not written or claimed."""
    import snmf_jax.activations
    import snmf_jax.models
    from snmf_jax.activations import from_texts
    model = tiny_word_model
    texts = ["a b a b", "b a a", "a a b b", "b b a"] * 3
    labels = ["x", "y", "x", "y"] * 3
    monkeypatch.setattr(snmf_jax.models, "load_model", lambda *a, **k: model)
    monkeypatch.setattr(snmf_jax.activations, "load_concepts",
                        lambda: from_texts(texts, labels))
    rc, out, err = run_out(capsys, "demo", "--out", tmp_path / "d", "--steer", 0, "--rank", 2,
                           "--max-iter", 5, "--no-judge", "--layer", 0, "--max-new-tokens", 4)
    assert rc == 0, err
    assert not (tmp_path / "d" / "steered.json").exists()
    assert "wrote" in out and "steered.json" not in out
