"""Files written by earlier code still load: a result, a fit checkpoint and an
online checkpoint written by main's code at commit fa77d50 (tests/data/main_fit/,
made by fitting the array below) load, and the checkpoints resume."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

import snmf_jax as sj

DATA = Path(__file__).parent / "data" / "main_fit"


def _x():
    return np.random.default_rng(7).standard_normal((24, 8)).astype(np.float32)


def test_result_written_by_earlier_code_loads_and_matches_a_fresh_fit():
    old = sj.SNMFResult.load(DATA / "result")
    new = sj.fit(_x(), 3, max_iter=6, patience=None, progress=False, init="svd", seed=1)
    assert old.best_iter == new.best_iter and old.converged == new.converged
    assert old.settings == new.settings
    np.testing.assert_allclose(new.features, old.features, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(new.codes, old.codes, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(new.losses, old.losses, rtol=1e-5)


def test_fit_checkpoint_written_by_earlier_code_resumes(tmp_path):
    shutil.copytree(DATA / "checkpoint", tmp_path / "ckpt")
    kw = dict(max_iter=9, patience=None, checkpoint_every=3, progress=False, init="svd", seed=1)
    steps = []
    resumed = sj.fit(_x(), 3, checkpoint_dir=tmp_path / "ckpt",
                     callback=lambda step, loss: steps.append(step), **kw)
    assert steps == [7, 8, 9]  # the 6 iterations of the old checkpoint are not redone
    fresh = sj.fit(_x(), 3, **kw)
    np.testing.assert_allclose(resumed.losses, fresh.losses, rtol=1e-5)
    np.testing.assert_allclose(resumed.features, fresh.features, rtol=1e-5, atol=1e-6)


def test_fit_checkpoint_written_by_earlier_code_is_refused_for_other_settings(tmp_path):
    shutil.copytree(DATA / "checkpoint", tmp_path / "ckpt")
    with pytest.raises(ValueError, match="seed"):
        sj.fit(_x(), 3, max_iter=9, patience=None, checkpoint_every=3, progress=False,
               init="svd", seed=2, checkpoint_dir=tmp_path / "ckpt")


def test_online_checkpoint_written_by_earlier_code_resumes(tmp_path):
    shutil.copytree(DATA / "online_checkpoint", tmp_path / "ckpt")
    kw = dict(batch_size=8, progress=False, init="random", seed=1)
    batches = []
    resumed = sj.fit_online(_x(), 3, passes=2, checkpoint_dir=tmp_path / "ckpt",
                            callback=lambda t, loss: batches.append(t), **kw)
    assert batches == [4, 5, 6]  # pass 1's three batches came from the checkpoint
    fresh = sj.fit_online(_x(), 3, passes=2, **kw)
    np.testing.assert_allclose(resumed.features, fresh.features, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(resumed.losses, fresh.losses, rtol=1e-5)
