"""Hostile inputs to activation stores: manifests, chunk files, overwrite, writer arguments.

A store on disk is input too: a damaged, edited or foreign folder must fail
with one line naming the file, and overwriting must never remove a file the
package did not write.
"""

import json
import math

import numpy as np
import pytest

import snmf_jax as sj
from snmf_jax import _io
from snmf_jax.activations import ActivationStore, StoreWriter
from snmf_jax.factorize import CodesStore, fit_streaming
from snmf_jax.factorize import _row_sources as _sources

N, D, ROWS = 40, 6, 16


def _write(path, x=None, **kw):
    x = np.random.default_rng(0).standard_normal((N, D)).astype(np.float32) if x is None else x
    w = StoreWriter(path, layers=(3,), d=D, chunk_rows=ROWS, n_rows=N, settings={"s": 1},
                    documents={"texts": ["a b c"], "labels": None, "label_names": None}, **kw)
    for i in range(0, N, ROWS):
        w.append({3: x[i:i + ROWS]}, {})
    return w.finish()


def _one_line(e):
    assert "\n" not in str(e), str(e)
    return str(e)


def _manifest(path):
    return json.loads((path / "manifest.json").read_text())


def _edit(path, fn):
    m = _manifest(path)
    fn(m)
    (path / "manifest.json").write_text(json.dumps(m))


# -- manifests ---------------------------------------------------------------------

@pytest.mark.parametrize("text", ["{broken", "", "[]", "null", "\xff\xfe", '"a string"'])
def test_manifest_that_is_not_a_json_object_names_the_file(tmp_path, text):
    _write(tmp_path / "s")
    (tmp_path / "s" / "manifest.json").write_bytes(text.encode("latin-1"))
    with pytest.raises(ValueError) as e:
        ActivationStore(tmp_path / "s")
    assert "manifest.json" in _one_line(e.value)


@pytest.mark.parametrize("edit", [
    lambda m: m.pop("chunks"), lambda m: m.pop("layers"), lambda m: m.pop("d"),
    lambda m: m.pop("complete"), lambda m: m.update(d="six"), lambda m: m.update(d=-1),
    lambda m: m.update(chunks={"a": 1}), lambda m: m.update(layers="3"),
    lambda m: m.update(dtype="int8"), lambda m: m.update(dtype="no-such-dtype"),
    lambda m: m["chunks"][0].update(rows=-5), lambda m: m["chunks"][0].update(rows="16"),
    lambda m: m["chunks"][0].update(rows=1.5), lambda m: m.update(chunk_rows=0),
    lambda m: m["chunks"].__setitem__(0, "chunk-000000.safetensors"),
    lambda m: m.update(format_version=99), lambda m: m.update(format="other"),
])
def test_manifest_with_missing_or_wrong_fields_names_the_file(tmp_path, edit):
    _write(tmp_path / "s")
    _edit(tmp_path / "s", edit)
    with pytest.raises(ValueError) as e:
        store = ActivationStore(tmp_path / "s")
        store.chunk(0)
    assert "manifest.json" in _one_line(e.value)


@pytest.mark.parametrize("name", ["../outside.safetensors", "/etc/passwd", "..", ".",
                                  "sub/chunk-000000.safetensors", "", 7, None])
def test_chunk_names_are_confined_to_the_store(tmp_path, name):
    _write(tmp_path / "s")
    (tmp_path / "outside.safetensors").write_bytes(
        (tmp_path / "s" / "chunk-000000.safetensors").read_bytes())
    _edit(tmp_path / "s", lambda m: m["chunks"][0].update(file=name))
    with pytest.raises(ValueError, match="plain file name") as e:
        ActivationStore(tmp_path / "s").chunk(0)
    _one_line(e.value)


def test_manifest_that_lies_about_rows_is_refused(tmp_path):
    """Sizes and hashes match, but the manifest row counts do not: caught at read."""
    _write(tmp_path / "s")
    _edit(tmp_path / "s", lambda m: (m["chunks"][0].update(rows=10),
                                     m["chunks"][1].update(rows=22)))
    with pytest.raises(ValueError, match="rows") as e:
        ActivationStore(tmp_path / "s").chunk(0)
    assert "chunk-000000" in _one_line(e.value)


# -- chunk files ------------------------------------------------------------------

@pytest.mark.parametrize("how", ["truncate", "flip", "delete", "swap"])
def test_damaged_chunk_fails_naming_the_file(tmp_path, how):
    store = _write(tmp_path / "s")
    f = tmp_path / "s" / "chunk-000001.safetensors"
    data = bytearray(f.read_bytes())
    if how == "truncate":
        f.write_bytes(bytes(data[:-8]))
    elif how == "flip":
        data[-3] ^= 0x40
        f.write_bytes(bytes(data))
    elif how == "delete":
        f.unlink()
    else:  # same size, another chunk's bytes
        f.write_bytes((tmp_path / "s" / "chunk-000000.safetensors").read_bytes()[:len(data)])
    with pytest.raises((ValueError, FileNotFoundError)) as e:
        ActivationStore(tmp_path / "s").chunk(1)
    assert str(f) in _one_line(e.value)
    with pytest.raises((ValueError, FileNotFoundError)):
        store.verify()


def test_chunk_read_is_verified_every_time_a_store_is_opened(tmp_path):
    _write(tmp_path / "s")
    store = ActivationStore(tmp_path / "s")
    store.chunk(0)
    f = tmp_path / "s" / "chunk-000000.safetensors"
    data = bytearray(f.read_bytes())
    data[-1] ^= 1
    f.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="SHA-256"):
        ActivationStore(tmp_path / "s").chunk(0)


def test_documents_json_not_json_names_the_file(tmp_path):
    _write(tmp_path / "s")
    (tmp_path / "s" / "documents.json").write_text("{oops")
    with pytest.raises(ValueError) as e:
        ActivationStore(tmp_path / "s").texts
    assert "documents.json" in _one_line(e.value)


def test_store_with_nonfinite_rows_is_refused_at_write(tmp_path):
    x = np.random.default_rng(0).standard_normal((N, D)).astype(np.float32)
    x[20, 1] = np.inf
    with pytest.raises(ValueError, match="non-finite") as e:
        _write(tmp_path / "s", x)
    _one_line(e.value)


# -- writer arguments -------------------------------------------------------------

@pytest.mark.parametrize("kw, match", [
    (dict(d=0), "d"), (dict(d=2.5), "d"), (dict(chunk_rows=0), "chunk_rows"),
    (dict(chunk_rows="x"), "chunk_rows"), (dict(n_rows=-1), "n_rows"),
    (dict(layers=()), "layers"), (dict(layers=(1, 1)), "layers"),
    (dict(layers=("a",)), "layers"), (dict(dtype="int8"), "dtype"),
])
def test_bad_writer_arguments(tmp_path, kw, match):
    args = dict(layers=(3,), d=D, chunk_rows=ROWS, n_rows=N, settings={})
    args.update(kw)
    with pytest.raises(ValueError, match=match) as e:
        StoreWriter(tmp_path / "s", **args)
    _one_line(e.value)
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("X, match", [
    ({3: np.zeros((4, D + 1), np.float32)}, "shape"),
    ({4: np.zeros((4, D), np.float32)}, "layer"),
    ({3: np.zeros((4,), np.float32)}, "shape"),
    ({}, "layer"),
])
def test_bad_appends(tmp_path, X, match):
    w = StoreWriter(tmp_path / "s", layers=(3,), d=D, chunk_rows=ROWS, n_rows=N, settings={})
    with pytest.raises(ValueError, match=match) as e:
        w.append(X, {})
    _one_line(e.value)


# -- overwrite ------------------------------------------------------------------

def test_overwrite_leaves_foreign_files_alone(tmp_path):
    _write(tmp_path / "s")
    keep = {"notes.txt": b"mine", "chunk-999999.safetensors": b"user data",
            "manifest.json.bak": b"x"}
    for k, v in keep.items():
        (tmp_path / "s" / k).write_bytes(v)
    (tmp_path / "s" / "sub").mkdir()
    (tmp_path / "s" / "sub" / "manifest.json").write_text("{}")
    _write(tmp_path / "s", overwrite=True)
    for k, v in keep.items():
        assert (tmp_path / "s" / k).read_bytes() == v, k
    assert (tmp_path / "s" / "sub" / "manifest.json").read_text() == "{}"
    assert ActivationStore(tmp_path / "s").n_rows == N


@pytest.mark.parametrize("manifest", ['{"format": "something-else"}', "{broken", "[]"])
def test_overwrite_refuses_a_folder_whose_manifest_is_not_ours(tmp_path, manifest):
    d = tmp_path / "theirs"
    d.mkdir()
    (d / "manifest.json").write_text(manifest)
    (d / "data.bin").write_bytes(b"precious")
    with pytest.raises(ValueError) as e:
        _write(d, overwrite=True)
    assert "manifest.json" in _one_line(e.value)
    assert (d / "manifest.json").read_text() == manifest
    assert (d / "data.bin").read_bytes() == b"precious"


def test_overwrite_refuses_a_nonempty_folder_without_manifest(tmp_path):
    d = tmp_path / "x"
    d.mkdir()
    (d / "a.txt").write_text("a")
    with pytest.raises(ValueError, match="not an activation store"):
        _write(d, overwrite=True)
    assert (d / "a.txt").read_text() == "a"


def test_out_that_is_a_file(tmp_path):
    f = tmp_path / "f"
    f.write_text("x")
    with pytest.raises((ValueError, FileExistsError, NotADirectoryError)) as e:
        _write(f, overwrite=True)
    assert str(f) in _one_line(e.value)
    assert f.read_text() == "x"


# -- stores as fit input, codes stores -----------------------------------------------

def test_fit_of_a_store_with_a_corrupt_chunk_names_the_chunk(tmp_path):
    _write(tmp_path / "s")
    f = tmp_path / "s" / "chunk-000002.safetensors"
    data = bytearray(f.read_bytes())
    data[-1] ^= 1
    f.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="chunk-000002"):
        fit_streaming(tmp_path / "s", 2, sparsity=0.5, max_iter=2, progress=False)


def _codes_store(tmp_path):
    """A streaming fit's codes store (codes kept on disk, not returned)."""
    r = fit_streaming(_sources.ArraySource(
        np.random.default_rng(0).standard_normal((N, D)).astype(np.float32), ROWS), 2,
        sparsity=0.5, max_iter=2, progress=False, checkpoint_dir=tmp_path / "ck",
        return_codes=False)
    return tmp_path / "ck" / "codes" / r.metadata["codes_store"].split("/")[-1]


def test_codes_store_manifest_confined_and_verified(tmp_path):
    path = _codes_store(tmp_path)
    m = json.loads((path / "manifest.json").read_text())
    m["chunks"][0]["file"] = "../../x.safetensors"
    (path / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ValueError, match="plain file name"):
        CodesStore(path).to_numpy()
    (path / "manifest.json").write_text("{nope")
    with pytest.raises(ValueError) as e:
        CodesStore(path)
    assert "manifest.json" in _one_line(e.value)


def test_safetensors_source_truncated_names_the_file(tmp_path):
    f = tmp_path / "x.safetensors"
    _io.save_arrays(f, {"X": np.ones((10, 4), np.float32)})
    f.write_bytes(f.read_bytes()[:30])
    with pytest.raises(ValueError) as e:
        fit_streaming(f, 2, sparsity=0.5, max_iter=2, progress=False)
    assert str(f) in _one_line(e.value)


@pytest.mark.parametrize("edit", [
    lambda m: m.pop("chunks"), lambda m: m.pop("rank"), lambda m: m.update(rank=0),
    lambda m: m["chunks"][0].pop("rows"), lambda m: m["chunks"][0].pop("sha256"),
    lambda m: m["chunks"][0].update(rows=3),
])
def test_codes_store_manifest_edits_name_the_file(tmp_path, edit):
    path = _codes_store(tmp_path)
    m = json.loads((path / "manifest.json").read_text())
    edit(m)
    (path / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ValueError, match="manifest") as e:
        CodesStore(path).to_numpy()
    _one_line(e.value)


@pytest.mark.parametrize("call, exc", [
    (lambda s: s.chunk(1.0), TypeError), (lambda s: s.chunk(True), TypeError),
    (lambda s: s.chunk(3), IndexError), (lambda s: s.rows(1.5, 3), TypeError),
    (lambda s: s.rows(5, 2), IndexError), (lambda s: s.rows(0, N + 1), IndexError),
    (lambda s: s.chunk(0, layer=4), ValueError), (lambda s: s.token_text(N), IndexError),
])
def test_bad_store_reads(tmp_path, call, exc):
    store = _write(tmp_path / "s")
    with pytest.raises(exc) as e:
        call(store)
    _one_line(e.value)


# -- export --overwrite, end to end --------------------------------------------------

def test_export_overwrite_keeps_foreign_files_and_refuses_foreign_folders(tmp_path,
                                                                          tiny_word_model):
    from snmf_jax.activations import export_activations
    kw = dict(progress=False, chunk_rows=2)
    out = tmp_path / "s"
    export_activations(tiny_word_model, ["a b a", "b b"], [0], out=out, **kw)
    (out / "notes.txt").write_text("mine")
    (out / "chunk-000099.safetensors").write_text("mine too")
    store = export_activations(tiny_word_model, ["b a", "a a a b"], [0], out=out, overwrite=True,
                               **kw)
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / "chunk-000099.safetensors").read_text() == "mine too"
    assert store.n_rows == 6 and store.texts == ("b a", "a a a b")
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "manifest.json").write_text('{"format": "another-tool"}')
    (theirs / "weights.bin").write_bytes(b"precious")
    with pytest.raises(ValueError, match="manifest.json") as e:
        export_activations(tiny_word_model, ["a b"], [0], out=theirs, overwrite=True, **kw)
    _one_line(e.value)
    assert sorted(p.name for p in theirs.iterdir()) == ["manifest.json", "weights.bin"]
