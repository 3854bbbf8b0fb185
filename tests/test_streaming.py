"""Streaming fit over chunked sources: parity with the in-memory fit,
resume after interruption, codes store, a run under a memory cap."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import snmf_jax as sj
from snmf_jax import factorize as S
from snmf_jax.factorize import _row_sources
from snmf_jax.testing import low_rank_data

from conftest import write_array_store

KW = dict(sparsity=0.25, patience=None, progress=False)
# One data shape and chunking throughout, so the jitted chunk programs compile once.
N, D, ROWS = 700, 32, 96


def _data(n=N, d=D, seed=0):
    return low_rank_data(n, d, seed=seed)


def _same(a, b, tol=1e-5):
    assert a.losses.shape == b.losses.shape
    rel = np.abs(a.losses - b.losses) / a.losses
    assert rel.max() <= tol, rel.max()
    np.testing.assert_array_equal(a.features != 0, b.features != 0)
    assert np.abs(a.features - b.features).max() <= 1e-3 * np.abs(a.features).max()
    assert np.abs(a.codes - b.codes).max() <= 1e-3 * np.abs(a.codes).max()
    assert a.best_iter == b.best_iter


@pytest.mark.slow
@pytest.mark.parametrize("init", ["random", "kmeans", "svd"])
def test_streaming_matches_in_memory(init, tmp_path):
    x = _data()
    ref = sj.fit(x, 4, init=init, max_iter=25, **KW)
    got = S.fit_streaming(_row_sources.ArraySource(x, ROWS), 4, init=init, max_iter=25,
                          checkpoint_dir=tmp_path, **KW)  # 96 does not divide 700
    _same(ref, got)
    assert got.settings["codes_iter"] == got.best_iter
    # The best codes stay on disk as a codes store.
    store = S.CodesStore(got.metadata["codes_store"])
    np.testing.assert_array_equal(store.to_numpy(), got.codes)
    assert isinstance(store, S.RowSource) and store.d == 4


def test_codes_init_and_last_iterate_codes(tmp_path):
    x = _data(seed=1)
    c0 = np.random.default_rng(2).random((N, 4)).astype(np.float32) + 0.1
    ref = sj.fit(x, 4, codes_init=c0, max_iter=12, **KW)
    got = S.fit_streaming(_row_sources.ArraySource(x, ROWS), 4, codes_init=c0, max_iter=12,
                          checkpoint_dir=tmp_path, keep_best_codes=False, **KW)
    np.testing.assert_allclose(got.losses, ref.losses, rtol=1e-5)
    assert got.settings["codes_iter"] == 12
    assert [p.name for p in (tmp_path / "codes").iterdir()] == ["step-000012"]


class _Flaky:
    """A source whose reads fail after `fail_after` chunks (an interruption)."""

    def __init__(self, x, chunk_rows, fail_after):
        self.inner = _row_sources.ArraySource(x, chunk_rows)
        self.n_rows, self.d = self.inner.n_rows, self.inner.d
        self.num_chunks, self.chunk_bounds = self.inner.num_chunks, self.inner.chunk_bounds
        self.reads, self.fail_after = 0, fail_after

    def chunk(self, i):
        self.reads += 1
        if self.reads > self.fail_after:
            raise KeyboardInterrupt("simulated interruption")
        return self.inner.chunk(i)


def test_interrupted_mid_iteration_resumes_to_the_same_answer(tmp_path):
    x = _data(seed=3)
    full = S.fit_streaming(_row_sources.ArraySource(x, ROWS), 4, max_iter=10, **KW)
    # 8 chunks: the data identity hashes 8, the init reads 8, then fail inside
    # iteration 4 (the state is committed after every iteration).
    flaky = _Flaky(x, ROWS, fail_after=8 + 8 + 3 * 8 + 4)
    with pytest.raises(KeyboardInterrupt):
        S.fit_streaming(flaky, 4, max_iter=10, checkpoint_dir=tmp_path, checkpoint_every=1,
                        **KW)
    versions = sorted(p.name for p in (tmp_path / "codes").iterdir())
    assert "step-000003" in versions  # the last committed iteration is intact
    resumed = S.fit_streaming(_row_sources.ArraySource(x, ROWS), 4, max_iter=10,
                              checkpoint_dir=tmp_path, checkpoint_every=1, **KW)
    np.testing.assert_array_equal(resumed.losses, full.losses)
    np.testing.assert_array_equal(resumed.codes, full.codes)
    np.testing.assert_array_equal(resumed.features, full.features)


def test_resume_extends_a_finished_run(tmp_path):
    x = _data(seed=4)
    full = S.fit_streaming(_row_sources.ArraySource(x, ROWS), 4, max_iter=8, **KW)
    S.fit_streaming(_row_sources.ArraySource(x, ROWS), 4, max_iter=5, checkpoint_dir=tmp_path, **KW)
    more = S.fit_streaming(_row_sources.ArraySource(x, ROWS), 4, max_iter=8, checkpoint_dir=tmp_path, **KW)
    np.testing.assert_array_equal(more.losses, full.losses)
    with pytest.raises(ValueError, match="different data"):
        S.fit_streaming(_row_sources.ArraySource(x[::-1].copy(), ROWS), 4, max_iter=8,
                        checkpoint_dir=tmp_path, **KW)


def test_errors_name_the_problem(tmp_path):
    x = _data()
    x[250, 3] = np.inf
    with pytest.raises(ValueError, match=r"chunk 2: 1 row\(s\), first at global row\(s\) \[250\]"):
        S.fit_streaming(_row_sources.ArraySource(x, ROWS), 4, max_iter=2, **KW)
    with pytest.raises(ValueError, match="needs checkpoint_dir"):
        S.fit_streaming(_row_sources.ArraySource(x, ROWS), 4, return_codes=False, **KW)
    with pytest.raises(TypeError, match="RowSource"):
        S.fit_streaming(object(), 4, **KW)
    with pytest.raises(ValueError, match="rank must be in"):
        S.fit_streaming(_row_sources.ArraySource(x, ROWS), 40, **KW)


def test_safetensors_file_source(tmp_path):
    from safetensors.numpy import save_file
    x = _data(n=130)
    save_file({"X": x}, str(tmp_path / "x.safetensors"))
    src = S.as_source(tmp_path / "x.safetensors", chunk_rows=50)
    assert src.num_chunks == 3
    np.testing.assert_array_equal(np.concatenate([src.chunk(i) for i in range(3)]), x)
    with pytest.raises(KeyError, match="no tensor 'Y'"):
        S.SafetensorsSource(tmp_path / "x.safetensors", key="Y")


def test_activation_store_source(tmp_path):
    x = _data(seed=5)
    store = write_array_store(tmp_path / "acts", x, ROWS)
    assert isinstance(store, S.RowSource)
    ref = sj.fit(x, 4, max_iter=10, **KW)
    got = S.fit_streaming(tmp_path / "acts", 4, max_iter=10, **KW)  # a path works too
    _same(ref, got)


_CAPPED = """
import os, sys, resource, json, faulthandler
faulthandler.dump_traceback_later(240, exit=True)  # a stuck child reports where
import numpy as np
from snmf_jax import factorize as S

def vm():
    for line in open("/proc/self/status"):
        if line.startswith("VmSize"):
            return int(line.split()[1]) * 1024

path, chunk_rows, d, headroom = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
# Warm-up on two chunks of the same shape: imports, XLA compiles, thread pools.
S.fit_streaming(S.as_source(np.random.default_rng(1).random((2 * chunk_rows, d),
                dtype=np.float32), chunk_rows=chunk_rows), 4, max_iter=2, progress=False)
base = vm()
limit = base + headroom
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
r = S.fit_streaming(path, 4, max_iter=3, patience=None, sparsity=0.25, progress=False)
# Control: under the same cap the whole store does not fit in memory.
try:
    from snmf_jax.activations import ActivationStore
    ActivationStore(path).rows(0, r.codes.shape[0])
    whole = "loaded"
except BaseException as e:  # numpy raises MemoryError; safetensors' Rust side panics
    whole = type(e).__name__
print(json.dumps({"losses": r.losses.tolist(), "codes_sum": float(r.codes.sum()),
                  "base": base, "limit": limit, "whole": whole}))
"""


@pytest.mark.slow
def test_streaming_under_a_memory_cap_smaller_than_the_store(tmp_path):
    """A 256 MiB store streamed under RLIMIT_AS = warm footprint + 128 MiB.

    RLIMIT_AS caps address space, which XLA reserves generously at start-up;
    so the child first warms up (imports, compiles the exact chunk shapes),
    measures its VmSize, and only then sets the cap to that plus 128 MiB,
    half the store (the fit's working set is ~3 chunks of 8 MiB plus XLA
    temporaries and I/O thread stacks, ~60-75 MiB). MALLOC_ARENA_MAX=2 keeps
    glibc from reserving 64 MiB of address space per I/O thread.
    """
    n, d, chunk_rows = 65536, 1024, 2048
    x = _data(n=n, d=d, seed=6)
    store_bytes = x.nbytes
    write_array_store(tmp_path / "acts", x, chunk_rows)
    headroom = 128 << 20
    assert headroom <= 0.5 * store_bytes
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "MALLOC_ARENA_MAX": "2"}
    out = subprocess.run([sys.executable, "-c", _CAPPED, str(tmp_path / "acts"),
                          str(chunk_rows), str(d), str(headroom)],
                         capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-6000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["whole"] in ("MemoryError", "PanicException"), got  # the cap binds
    ref = sj.fit(x, 4, max_iter=3, patience=None, sparsity=0.25, progress=False)
    rel = np.abs(np.asarray(got["losses"]) - ref.losses) / ref.losses
    assert rel.max() <= 1e-5, rel
    assert abs(got["codes_sum"] - float(ref.codes.sum())) <= 1e-4 * float(ref.codes.sum())


def _write_layers(path, xs, chunk_rows, site="mlp_hidden"):
    n, d = xs[0].shape
    w = sj.activations.StoreWriter(path, layers=tuple(range(len(xs))), d=d,
                                   chunk_rows=chunk_rows, n_rows=n, settings={"t": 1},
                                   info={"site": site})
    for i in range(0, n, chunk_rows):
        w.append({l: x[i:i + chunk_rows] for l, x in enumerate(xs)}, {})
    return w.finish()


def test_checkpoint_for_another_layer_or_other_rows_is_refused(tmp_path):
    x0, x1 = _data(seed=7), _data(seed=8)
    _write_layers(tmp_path / "acts", [x0, x1], ROWS)
    kw = dict(max_iter=4, checkpoint_dir=tmp_path / "ck", **KW)
    first = S.fit_streaming(tmp_path / "acts", 4, layer=0, **kw)
    with pytest.raises(ValueError, match=r"different data \(layer: checkpoint 0 vs now 1\)"):
        S.fit_streaming(tmp_path / "acts", 4, layer=1, **kw)
    # Same shape and chunking, rows reordered: the chunk digests differ.
    _write_layers(tmp_path / "acts2", [x0[::-1].copy(), x1], ROWS)
    with pytest.raises(ValueError, match=r"different data \(content differs"):
        S.fit_streaming(tmp_path / "acts2", 4, layer=0, **kw)
    again = S.fit_streaming(tmp_path / "acts", 4, layer=0, **kw)  # the right one resumes
    np.testing.assert_array_equal(again.losses, first.losses)
    np.testing.assert_array_equal(again.features, first.features)
    np.testing.assert_array_equal(again.codes, first.codes)


def test_checkpoint_every_and_chunk_size_resume_to_the_same_answer(tmp_path):
    x = _data(seed=9)
    full = S.fit_streaming(_row_sources.ArraySource(x, ROWS), 4, max_iter=9, **KW)
    kw = dict(checkpoint_dir=tmp_path, checkpoint_every=4, chunk_size=3, **KW)
    S.fit_streaming(_row_sources.ArraySource(x, ROWS), 4, max_iter=6, **kw)
    # Committed at 4 and at the end (6); the live and best versions are kept.
    assert {p.name for p in (tmp_path / "codes").iterdir()} <= {"step-000004", "step-000006"}
    more = S.fit_streaming(_row_sources.ArraySource(x, ROWS), 4, max_iter=9, **kw)
    np.testing.assert_array_equal(more.losses, full.losses)
    np.testing.assert_array_equal(more.codes, full.codes)
    np.testing.assert_array_equal(more.features, full.features)


def test_codes_chunks_are_verified(tmp_path):
    x = _data(seed=10)
    got = S.fit_streaming(_row_sources.ArraySource(x, ROWS), 4, max_iter=3, checkpoint_dir=tmp_path, **KW)
    store = S.CodesStore(got.metadata["codes_store"])
    f = store.path / "chunk-000002.safetensors"
    data = bytearray(f.read_bytes())
    data[-3] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="chunk-000002.safetensors: SHA-256 does not match"):
        store.to_numpy()
