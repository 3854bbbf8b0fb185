"""Multi-process helpers, and a 2-process run of the documented launcher
(`snmf-jax fit --coordinator ... --num-processes 2 --process-id i`) that must
give the single-process result."""

import json

import numpy as np
import pytest

import snmf_jax as sj
from snmf_jax import _io
from snmf_jax.factorize import _distributed as D
from snmf_jax.factorize import _loop
from snmf_jax.factorize import CodesStore
from snmf_jax.factorize import _solver

from conftest import launch_fit_processes


def test_process_ranges_cover_rows_contiguously():
    for n, p in [(10, 3), (7, 7), (3, 5), (1000, 4)]:
        ranges = [D.process_row_range(n, i, p) for i in range(p)]
        assert ranges[0][0] == 0 and ranges[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
    bounds = np.array([0, 100, 200, 300, 400, 450])
    for p in (1, 2, 3, 7):
        parts = [D.process_chunk_range(bounds, i, p) for i in range(p)]
        assert parts[0][0] == 0 and parts[-1][1] == 5
        assert all(a[1] == b[0] for a, b in zip(parts, parts[1:])), parts
    # Rows are balanced: two processes split 450 rows as 200 / 250.
    assert [D.process_chunk_range(bounds, i, 2) for i in range(2)] == [(0, 2), (2, 5)]


def test_initialize_checks_arguments():
    with pytest.raises(ValueError, match="process_id must be in"):
        D.initialize("127.0.0.1:1234", 2, 2)
    with pytest.raises(ValueError, match="host:port"):
        D.initialize("localhost", 2, 0)
    with pytest.raises(ValueError, match="num_processes"):
        D.initialize("127.0.0.1:1234", 0, 0)


def _fit_state(step):
    s = _solver.init(np.ones((3, 2), np.float32), np.ones((3, 2), np.float32))
    return _loop.init_fit_state(s._replace(step=np.int32(step)))


def test_process_checkpointer_alternates_slots(tmp_path):
    ck = D.ProcessCheckpointer(tmp_path, {"a": 1}, {"id": 1})
    assert ck.restore() is None
    ck.save(_fit_state(10), [1.0] * 10)
    ck.save(_fit_state(20), [1.0] * 20)
    ck.save(_fit_state(30), [1.0] * 30)  # overwrites the step-10 slot, never step 20
    steps = sorted(ck._step(j) for j in (0, 1))
    assert steps == [20, 30]
    again = D.ProcessCheckpointer(tmp_path, {"a": 1}, {"id": 1})
    fs, losses = again.restore()
    assert len(losses) == 30 and int(fs.solver.step) == 30
    with pytest.raises(ValueError, match="different settings"):
        D.ProcessCheckpointer(tmp_path, {"a": 2}, {"id": 1}).restore()


@pytest.mark.slow
def test_two_processes_match_one(tmp_path):
    rng = np.random.default_rng(0)
    x = (rng.random((203, 4)) @ rng.standard_normal((4, 24))
         + 0.05 * rng.standard_normal((203, 24))).astype(np.float32)
    _io.save_arrays(tmp_path / "x.safetensors", {"X": x})
    common = [str(tmp_path / "x.safetensors"), "--rank", "4", "--sparsity", "0.25",
              "--patience", "0", "--chunk-rows", "50", "--local-devices", "2",
              "--no-progress", "--checkpoint-dir", str(tmp_path / "ckpt"),
              "--checkpoint-every", "10"]
    out = tmp_path / "out"
    launch_fit_processes(common + ["--max-iter", "20", "--out", str(out)], 2, timeout=300)
    # Resume the same run to 30 iterations from the per-process checkpoints.
    outs = launch_fit_processes(common + ["--max-iter", "30", "--out", str(out), "--overwrite"], 2,
                   timeout=300)
    summary = json.loads(outs[0].strip().splitlines()[-1])
    assert summary["n_iter"] == 30

    ref = sj.fit(x, 4, sparsity=0.25, max_iter=30, patience=None, progress=False)
    got = sj.SNMFResult.load(out)
    assert got.codes is None and got.metadata["codes_store"] == "codes"
    rel = np.abs(got.losses - ref.losses) / ref.losses
    assert rel.max() <= 1e-5, rel.max()
    np.testing.assert_array_equal(got.features != 0, ref.features != 0)
    assert np.abs(got.features - ref.features).max() <= 1e-3 * np.abs(ref.features).max()
    codes = CodesStore(out / "codes")
    # Process 0 owns chunks [0, 2) (100 rows), process 1 the rest (103).
    np.testing.assert_array_equal(codes.chunk_bounds, [0, 100, 203])
    assert np.abs(codes.to_numpy() - ref.codes).max() <= 1e-3 * np.abs(ref.codes).max()
    assert got.best_iter == ref.best_iter
