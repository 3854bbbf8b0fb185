"""Crash at any point, resume, same answer: a real SIGKILL, not an exception.

A child process runs a streaming fit (or a hierarchy fit) and kills itself
with SIGKILL at a chosen point: in the middle of a pass over the chunks (the
n-th chunk read), or in the middle of writing a file (the n-th atomic rename,
i.e. after the temp file is written and before it replaces the target). Each
rerun of the same command is killed at another point; the last one runs to
the end and must give a result bit-identical to an uninterrupted run.
"""

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from snmf_jax import factorize as F

REPO = Path(__file__).resolve().parents[1]

CHILD = r"""
import os, signal, sys
import numpy as np
os.environ.setdefault("JAX_PLATFORMS", "cpu")
from snmf_jax import _io
from snmf_jax import factorize as F
from snmf_jax.factorize import _row_sources as _sources

kind, out, ck = sys.argv[1], sys.argv[2], sys.argv[3]
kill_read = int(os.environ.get("KILL_READ", "0"))
kill_replace = int(os.environ.get("KILL_REPLACE", "0"))
counts = {"read": 0, "replace": 0}

real_replace = os.replace
def replace(a, b):
    counts["replace"] += 1
    if counts["replace"] == kill_replace:
        os.kill(os.getpid(), signal.SIGKILL)  # temp file written, target not yet replaced
    return real_replace(a, b)
os.replace = replace

class Source(_sources.ArraySource):
    def chunk(self, i):
        counts["read"] += 1
        if counts["read"] == kill_read:
            os.kill(os.getpid(), signal.SIGKILL)
        return super().chunk(i)

rng = np.random.default_rng(0)
x = (rng.random((300, 5)) @ rng.standard_normal((5, 24))
     + 0.05 * rng.standard_normal((300, 24))).astype(np.float32)
ck = None if ck == "-" else ck
if kind == "stream":
    r = F.fit_streaming(Source(x, 64), 4, sparsity=0.3, patience=None, max_iter=12,
                        checkpoint_every=3, chunk_size=2, checkpoint_dir=ck, progress=False)
    r.save(out)
else:
    h = F.fit_hierarchical(x, [6, 3], sparsity=0.3, max_iter=15, patience=None, restarts=2,
                           checkpoint_dir=ck, progress=False)
    h.save(out)
print("done")
"""


def _run(tmp_path, kind, out, ck, **kill):
    env = {**os.environ, "JAX_PLATFORMS": "cpu",
           **{f"KILL_{k.upper()}": str(v) for k, v in kill.items()}}
    return subprocess.run([sys.executable, "-c", CHILD, kind, str(out), str(ck)], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=600)


def _crash_then_resume(tmp_path, kind, kills):
    ref = _run(tmp_path, kind, tmp_path / "ref", "-")
    assert ref.returncode == 0, ref.stderr[-3000:]
    ck = tmp_path / "ck"
    for kill in kills:
        p = _run(tmp_path, kind, tmp_path / "got", ck, **kill)
        assert p.returncode == -signal.SIGKILL, (kill, p.returncode, p.stderr[-3000:])
        assert not (tmp_path / "got").exists()
    p = _run(tmp_path, kind, tmp_path / "got", ck)
    assert p.returncode == 0, p.stderr[-3000:]
    return tmp_path / "ref", tmp_path / "got"


@pytest.mark.slow
def test_streaming_fit_killed_at_several_points_resumes_bit_identically(tmp_path):
    # 5 chunks per pass. Killed: in the init pass; while a checkpoint's
    # temp file is written; mid-pass several iterations in; mid-pass again.
    kills = [dict(read=3), dict(replace=4), dict(read=23), dict(read=31)]
    ref, got = _crash_then_resume(tmp_path, "stream", kills)
    a, b = F.SNMFResult.load(ref), F.SNMFResult.load(got)
    np.testing.assert_array_equal(a.losses, b.losses)
    np.testing.assert_array_equal(a.features, b.features)
    np.testing.assert_array_equal(a.codes, b.codes)
    assert a.best_iter == b.best_iter


@pytest.mark.slow
def test_hierarchy_fit_killed_at_several_points_resumes_bit_identically(tmp_path):
    # Killed while writing (renames counted from each run's start): the
    # level-0 fit's checkpoint; level 0's snmf.json (its arrays already
    # renamed into place); level 1's snmf.json.
    kills = [dict(replace=2), dict(replace=3), dict(replace=2)]
    ref, got = _crash_then_resume(tmp_path, "hier", kills)
    a, b = F.HierarchicalResult.load(ref), F.HierarchicalResult.load(got)
    np.testing.assert_array_equal(a.codes, b.codes)
    for u, v in zip(a.features + a.links + a.losses, b.features + b.links + b.losses):
        np.testing.assert_array_equal(u, v)
