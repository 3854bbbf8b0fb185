"""DiffMean: recovers a planted direction; bad input fails early."""

import numpy as np
import pytest

from snmf_jax.activations._store import Activations
from snmf_jax.baselines import diffmean, diffmean_directions


def _acts(rng, n_per=50, d=16, shift=3.0):
    dirs = np.linalg.qr(rng.normal(size=(d, d)))[0][:3]  # 3 orthonormal directions
    X, labels = [], []
    for c in range(3):
        X.append(rng.normal(size=(n_per, d)) + 1.0 + shift * dirs[c])
        labels += [c] * n_per
    X = np.concatenate(X).astype(np.float32)
    n = len(X)
    acts = Activations(X=X, doc_ids=np.arange(n, dtype=np.int32),
                       positions=np.zeros(n, np.int32), token_ids=np.zeros(n, np.int32),
                       offsets=np.zeros((n, 2), np.int32), texts=tuple("x" * n),
                       labels=np.array(labels, np.int32), label_names=("a", "b", "c"))
    return acts, dirs


def test_recovers_planted_directions():
    acts, dirs = _acts(np.random.default_rng(0), n_per=400)
    names, D = diffmean_directions(acts)
    assert names == ("a", "b", "c")
    np.testing.assert_allclose(np.linalg.norm(D, axis=1), 1.0, rtol=1e-5)
    # mean(c) - mean(others) = shift * (dir_c - (dir_a + dir_b) / 2): its cosine with dir_c
    # is 1 / sqrt(1.5) ~ 0.816 for orthonormal directions; noise costs a little.
    cos = D @ dirs.T
    assert np.all(np.diag(cos) > 0.78)
    assert np.all(np.argmax(cos, axis=1) == np.arange(3))


def test_exact_on_two_points():
    X = np.array([[1.0, 2.0], [1.0, 0.0]], np.float32)
    np.testing.assert_allclose(diffmean(X, np.array([True, False])), [0.0, 1.0])


@pytest.mark.parametrize("mask, msg", [(np.ones(2, bool), "both sides"),
                                       (np.ones(3, bool), "shape")])
def test_bad_mask(mask, msg):
    with pytest.raises(ValueError, match=msg):
        diffmean(np.ones((2, 4), np.float32), mask)


def test_nonfinite_and_unknown_concept():
    X = np.array([[np.nan, 0.0], [1.0, 0.0]], np.float32)
    with pytest.raises(ValueError, match="non-finite"):
        diffmean(X, np.array([True, False]))
    acts, _ = _acts(np.random.default_rng(1), n_per=5)
    with pytest.raises(ValueError, match="unknown concepts"):
        diffmean_directions(acts, ["zebra"])
