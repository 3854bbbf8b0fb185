"""ActivationStore / StoreWriter: chunking, lazy reads, crash safety, resume."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file

from snmf_jax._io import write_safetensors
from snmf_jax.activations import ActivationStore, StoreWriter
from snmf_jax.activations import _store

D = 6
PROV = {"doc_ids": ("int32", ()), "positions": ("int32", ()),
        "token_ids": ("int32", ()), "offsets": ("int32", (2,)),
        "labels": ("int32", ())}


def _data(n, layers=(3,), seed=0):
    rng = np.random.default_rng(seed)
    X = {l: rng.standard_normal((n, D)).astype(np.float32) for l in layers}
    prov = {"doc_ids": np.arange(n, dtype=np.int32) // 4,
            "positions": np.arange(n, dtype=np.int32) % 4,
            "token_ids": rng.integers(0, 100, n).astype(np.int32),
            "offsets": np.stack([np.arange(n), np.arange(n) + 1], 1).astype(np.int32),
            "labels": (np.arange(n, dtype=np.int32) // 4) % 3}
    return X, prov


def _write(path, X, prov, *, chunk_rows=10, batches=(7, 3, 11, 1, 13), settings=None,
           **kw):
    n = next(iter(X.values())).shape[0]
    w = StoreWriter(path, layers=tuple(X), d=D, chunk_rows=chunk_rows, n_rows=n,
                    settings=settings or {"run": 1}, provenance=PROV,
                    info={"model": "m", "site": "mlp_hidden"},
                    documents={"texts": [f"doc {i}" for i in range(n // 4 + 1)],
                               "labels": None, "label_names": ["a", "b", "c"]}, **kw)
    r = w.rows_done
    sizes = list(batches)
    pos = 0
    while pos < n:  # irregular batch sizes, cycling
        m = min(sizes[0], n - pos)
        sizes = sizes[1:] + sizes[:1]
        if pos + m > r:
            s = max(r - pos, 0)
            w.append({l: x[pos + s:pos + m] for l, x in X.items()},
                     {k: v[pos + s:pos + m] for k, v in prov.items()})
        pos += m
    return w.finish()


def test_write_safetensors_is_standard_and_deterministic(tmp_path):
    t = {"b": np.arange(6, dtype=np.float32).reshape(2, 3),
         "a": np.arange(5, dtype=np.int32), "e": np.zeros((0, 3), np.float16)}
    h1 = write_safetensors(tmp_path / "x.safetensors", t, {"k": "v"})
    back = load_file(tmp_path / "x.safetensors")
    assert set(back) == set(t)
    for k in t:
        np.testing.assert_array_equal(back[k], t[k])
        assert back[k].dtype == t[k].dtype
    b1 = (tmp_path / "x.safetensors").read_bytes()
    h2 = write_safetensors(tmp_path / "y.safetensors", dict(reversed(t.items())), {"k": "v"})
    assert (tmp_path / "y.safetensors").read_bytes() == b1 and h1 == h2
    import hashlib
    assert hashlib.sha256(b1).hexdigest() == h1
    assert not [p for p in tmp_path.iterdir() if p.suffix == ".tmp"]


def test_chunks_rows_and_provenance(tmp_path):
    n = 47
    X, prov = _data(n, layers=(3, 5))
    store = _write(tmp_path / "s", X, prov)
    assert (store.n_rows, store.d, store.num_chunks) == (n, D, 5)
    assert store.layers == (3, 5) and store.shape == (n, D) and len(store) == n
    np.testing.assert_array_equal(store.chunk_bounds, [0, 10, 20, 30, 40, 47])
    for i in range(store.num_chunks):
        lo, hi = store.chunk_bounds[i], store.chunk_bounds[i + 1]
        np.testing.assert_array_equal(store.chunk(i, layer=5), X[5][lo:hi])
        p = store.provenance(i)
        for k in prov:
            np.testing.assert_array_equal(getattr(p, k), prov[k][lo:hi])
    # slices spanning chunks, empty and single-chunk slices
    for a, b in [(0, n), (5, 33), (10, 20), (19, 21), (46, 47), (12, 12)]:
        np.testing.assert_array_equal(store.rows(a, b, layer=3), X[3][a:b])
        np.testing.assert_array_equal(store.provenance_rows(a, b).token_ids,
                                      prov["token_ids"][a:b])
    np.testing.assert_array_equal(
        np.concatenate(list(store.iter_chunks(layer=3))), X[3])
    acts = store.to_activations(layer=5)
    np.testing.assert_array_equal(acts.X, X[5])
    assert acts.label_names == ("a", "b", "c")
    np.testing.assert_array_equal(acts.labels, prov["labels"])
    store.verify()


def test_reading_a_chunk_never_touches_the_others(tmp_path):
    X, prov = _data(30)
    store = _write(tmp_path / "s", X, prov)
    os.remove(store.path / "chunk-000000.safetensors")
    os.remove(store.path / "chunk-000002.safetensors")
    np.testing.assert_array_equal(store.chunk(1), X[3][10:20])
    np.testing.assert_array_equal(store.rows(12, 18), X[3][12:18])
    with pytest.raises(FileNotFoundError):
        store.chunk(0)


def test_layer_and_range_errors(tmp_path):
    X, prov = _data(12, layers=(1, 2))
    store = _write(tmp_path / "s", X, prov)
    with pytest.raises(ValueError, match=r"holds layers \[1, 2\]; pass layer="):
        store.chunk(0)
    with pytest.raises(ValueError, match=r"layer must be one of \[1, 2\]; got 7"):
        store.chunk(0, layer=7)
    with pytest.raises(IndexError, match="chunk index 5 out of range"):
        store.chunk(5, layer=1)
    with pytest.raises(IndexError, match=r"rows\(3, 13\) out of range .* 12 rows"):
        store.rows(3, 13, layer=1)
    with pytest.raises(FileNotFoundError, match="not an activation store"):
        ActivationStore(tmp_path)


def test_float16_storage_reads_back_as_float32(tmp_path):
    X, prov = _data(25)
    store = _write(tmp_path / "s", X, prov, dtype="float16")
    assert store.dtype == np.float16
    assert store.chunk(0).dtype == np.float32
    assert store.chunk(0, dtype=None).dtype == np.float16
    np.testing.assert_allclose(store.rows(0, 25), X[3], rtol=1e-3, atol=1e-3)


def test_interrupted_write_resumes_to_identical_files(tmp_path):
    X, prov = _data(53)
    ref = _write(tmp_path / "ref", X, prov)

    calls = []
    orig = StoreWriter._commit_chunk

    def crash_after_two(self, entry):
        if len(calls) == 2:
            raise KeyboardInterrupt("simulated crash")
        calls.append(entry)
        orig(self, entry)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(StoreWriter, "_commit_chunk", crash_after_two)
        with pytest.raises(KeyboardInterrupt):
            _write(tmp_path / "run", X, prov)
    # The third chunk file was renamed into place but never committed: the
    # manifest lists two chunks and the store refuses to open as complete.
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert [c["rows"] for c in manifest["chunks"]] == [10, 10] and not manifest["complete"]
    with pytest.raises(ValueError, match="incomplete .*20 of 53 rows.* rerun"):
        ActivationStore(tmp_path / "run")
    partial = ActivationStore(tmp_path / "run", allow_incomplete=True)
    assert partial.n_rows == 20
    # a leftover temp file of a half-written chunk is ignored too
    (tmp_path / "run" / ".chunk-000002.safetensors.x.tmp").write_bytes(b"garbage")

    w = StoreWriter(tmp_path / "run", layers=(3,), d=D, chunk_rows=10, n_rows=53,
                    settings={"run": 1}, provenance=PROV)
    assert w.rows_done == 20
    store = _write(tmp_path / "run", X, prov)
    names = sorted(p.name for p in ref.path.iterdir())
    for name in names:
        assert (ref.path / name).read_bytes() == (store.path / name).read_bytes(), name
    np.testing.assert_array_equal(store.rows(0, 53), X[3])


def test_resume_with_other_settings_is_a_clear_error(tmp_path):
    X, prov = _data(20)
    _write(tmp_path / "s", X, prov, settings={"dataset": "abc", "layers": [3]})
    with pytest.raises(ValueError, match=r"different settings \(dataset: stored 'abc' "
                                         r"vs now 'xyz'\).*overwrite=True"):
        _write(tmp_path / "s", X, prov, settings={"dataset": "xyz", "layers": [3]})
    store = _write(tmp_path / "s", X, prov, settings={"dataset": "xyz", "layers": [3]},
                   overwrite=True)
    assert store.manifest["settings"]["dataset"] == "xyz"


def test_refuses_foreign_directories(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    X, prov = _data(8)
    with pytest.raises(ValueError, match="not empty and has no manifest.json"):
        _write(tmp_path, X, prov)
    with pytest.raises(ValueError, match="not an activation store; refusing to delete"):
        _write(tmp_path, X, prov, overwrite=True)
    assert (tmp_path / "notes.txt").exists()


def test_too_many_rows_and_damaged_chunks(tmp_path):
    X, prov = _data(8)
    w = StoreWriter(tmp_path / "s", layers=(3,), d=D, chunk_rows=4, n_rows=8,
                    settings={}, provenance=PROV)
    with pytest.raises(ValueError, match="exceed the store's n_rows=8"):
        w.append({3: np.zeros((9, D), np.float32)}, {k: v[:1].repeat(9, 0) for k, v in prov.items()})
    store = _write(tmp_path / "t", X, prov, chunk_rows=4)
    f = store.path / "chunk-000001.safetensors"
    data = bytearray(f.read_bytes())
    data[-1] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="SHA-256 does not match"):
        store.verify()
    f.write_bytes(bytes(data[:-4]))
    with pytest.raises(ValueError, match="missing or of the wrong size"):
        _write(tmp_path / "t", X, prov, chunk_rows=4)


# Loads _store.py by path: the readers need numpy and safetensors only, so the
# subprocesses stay light (no JAX import through the package's __init__).
_READER = """
import sys, hashlib, time, importlib.util
spec = importlib.util.spec_from_file_location("store", sys.argv[2])
mod = importlib.util.module_from_spec(spec); sys.modules["store"] = mod
spec.loader.exec_module(mod)
s = mod.ActivationStore(sys.argv[1])
h = hashlib.sha256()
for _ in range(3):
    for i in range(s.num_chunks):
        h.update(s.chunk(i).tobytes()); h.update(s.provenance(i).doc_ids.tobytes())
    time.sleep(0.05)
print(h.hexdigest())
"""


@pytest.mark.slow
def test_several_processes_read_at_once(tmp_path):
    X, prov = _data(64)
    store = _write(tmp_path / "s", X, prov, chunk_rows=8)
    before = {p.name: (p.stat().st_mtime_ns, p.stat().st_size) for p in store.path.iterdir()}
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    procs = [subprocess.Popen([sys.executable, "-c", _READER, str(store.path), _store.__file__],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=env) for _ in range(3)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1] for o in outs]
    import hashlib
    h = hashlib.sha256()
    for _ in range(3):
        for i in range(store.num_chunks):
            h.update(store.chunk(i).tobytes())
            h.update(store.provenance(i).doc_ids.tobytes())
    assert {o[0].strip() for o in outs} == {h.hexdigest()}
    after = {p.name: (p.stat().st_mtime_ns, p.stat().st_size) for p in store.path.iterdir()}
    assert after == before  # readers wrote nothing


def test_unsupported_format_version(tmp_path):
    X, prov = _data(8)
    store = _write(tmp_path / "s", X, prov)
    m = json.loads((store.path / "manifest.json").read_text())
    m["format_version"] = 99
    (store.path / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ValueError, match="format_version 99 is not supported"):
        ActivationStore(store.path)
    assert _store.FORMAT_VERSION == 1


def _tiny_store(path, rows=10, chunk_rows=4):
    from snmf_jax.activations import StoreWriter
    x = np.arange(rows * 3, dtype=np.float32).reshape(rows, 3)
    w = StoreWriter(path, layers=(0,), d=3, chunk_rows=chunk_rows, n_rows=rows,
                    settings={"s": 1})
    w.append({0: x}, {})
    return w.finish(), x


def test_overwrite_removes_only_the_stores_own_files(tmp_path):
    from snmf_jax.activations import StoreWriter
    store, _ = _tiny_store(tmp_path / "s")
    (tmp_path / "s" / "notes.txt").write_text("mine")
    w = StoreWriter(tmp_path / "s", layers=(0,), d=3, chunk_rows=5, n_rows=5,
                    settings={"s": 2}, overwrite=True)
    w.append({0: np.ones((5, 3), np.float32)}, {})
    again = w.finish()
    assert (tmp_path / "s" / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == [
        "chunk-000000.safetensors", "manifest.json", "notes.txt"]
    assert again.num_chunks == 1
    # A folder whose manifest.json is someone else's is never touched.
    other = tmp_path / "other"
    other.mkdir()
    (other / "manifest.json").write_text('{"format": "not ours"}')
    (other / "data.bin").write_text("keep")
    with pytest.raises(ValueError, match="format is 'not ours'"):
        StoreWriter(other, layers=(0,), d=3, chunk_rows=5, n_rows=5, settings={},
                    overwrite=True)
    assert sorted(p.name for p in other.iterdir()) == ["data.bin", "manifest.json"]


def test_chunk_reads_are_verified_and_confined(tmp_path):
    import json
    from snmf_jax.activations import ActivationStore
    store, x = _tiny_store(tmp_path / "s")
    np.testing.assert_array_equal(store.rows(0, 10), x)
    f = tmp_path / "s" / "chunk-000001.safetensors"
    data = bytearray(f.read_bytes())
    data[-2] ^= 0xFF
    f.write_bytes(bytes(data))
    fresh = ActivationStore(tmp_path / "s")
    fresh.chunk(0)
    with pytest.raises(ValueError, match="chunk-000001.safetensors: SHA-256 does not match"):
        fresh.chunk(1)
    m = json.loads((tmp_path / "s" / "manifest.json").read_text())
    m["chunks"][0]["file"] = "../outside.safetensors"
    (tmp_path / "s" / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ValueError, match="not a plain file name inside the store folder"):
        ActivationStore(tmp_path / "s").chunk(0)
