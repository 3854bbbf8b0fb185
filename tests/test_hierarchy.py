"""Hierarchical SNMF: planted-tree recovery, save/load, checkpoints, input checks."""

import json

import numpy as np
import pytest

import snmf_jax as sj
from snmf_jax.factorize import (HierarchicalResult, fit_hierarchical, parent_recovery,
                                planted_hierarchy)


@pytest.fixture(scope="module")
def small():
    pl = planted_hierarchy(parents=3, children=2, d=96, core=5, exclusive=6,
                           tokens_per_leaf=30, seed=0)
    h = fit_hierarchical(pl.X, [6, 3], sparsity=11 / 96, level0_restarts=2, restarts=3,
                         progress=False, max_iter=300)
    return pl, h


def test_shapes_and_product(small):
    pl, h = small
    assert h.ranks == (6, 3)
    assert h.codes.shape == (pl.X.shape[0], 6) and h.links[0].shape == (6, 3)
    assert np.all(h.codes >= 0) and np.all(h.links[0] >= 0)
    # Each level keeps ceil(p·d) neurons per feature.
    assert np.all((h.features[1] != 0).sum(1) <= 11)
    # The links reproduce the level below (up to the upper level's SNMF error).
    rel = np.sum((h.features[0] - h.links[0] @ h.features[1]) ** 2) / np.sum(h.features[0] ** 2)
    assert rel < 0.5
    np.testing.assert_allclose(h.collapsed_codes(1), h.codes @ h.links[0], rtol=1e-5)
    # Unit links are scale-free: rescaling a coarse feature (and its link column) keeps them.
    scaled = HierarchicalResult(h.codes, (h.features[0], 3 * h.features[1]),
                                (h.links[0] / 3,), h.losses, None, h.settings)
    np.testing.assert_allclose(scaled.unit_links(1), h.unit_links(1), rtol=1e-5)


@pytest.mark.slow
def test_planted_trees_recovered():
    """Children link to the coarse feature of their true parent, over trees and seeds."""
    rates = []
    for tree in range(4):
        pl = planted_hierarchy(parents=4, children=3, d=256, core=6, exclusive=10, seed=tree)
        h = fit_hierarchical(pl.X, [12, 4], sparsity=16 / 256, level0_restarts=4,
                             seed=0, progress=False)
        rates.append(parent_recovery(h, pl))
    links = np.mean([r["links"] for r in rates])
    overall = np.mean([r["overall"] for r in rates])
    print("planted recovery", rates)
    assert links >= 0.9, rates
    assert overall >= 0.85, rates


def test_save_load_roundtrip(small, tmp_path):
    _, h = small
    h.save(tmp_path / "h")
    g = HierarchicalResult.load(tmp_path / "h")
    assert g.ranks == h.ranks and g.settings == h.settings
    for a, b in zip(g.features + g.links + (g.codes,), h.features + h.links + (h.codes,)):
        np.testing.assert_array_equal(a, b)
    info = json.loads((tmp_path / "h" / "hierarchy.json").read_text())
    assert info["format"] == "snmf_jax.hierarchy/1"
    with pytest.raises(FileNotFoundError, match="hierarchy.safetensors"):
        HierarchicalResult.load(tmp_path)


def test_checkpoint_resume_and_refusal(tmp_path):
    pl = planted_hierarchy(parents=2, children=2, d=64, core=4, exclusive=5,
                           tokens_per_leaf=20, seed=1)
    kw = dict(sparsity=0.15, restarts=2, progress=False, max_iter=200,
              checkpoint_dir=tmp_path / "ck")
    h1 = fit_hierarchical(pl.X, [4, 2], **kw)
    assert (tmp_path / "ck" / "level-1" / "snmf.safetensors").is_file()
    h2 = fit_hierarchical(pl.X, [4, 2], **kw)  # resumed: every level reused
    for a, b in zip(h1.features + h1.links, h2.features + h2.links):
        np.testing.assert_array_equal(a, b)
    # A lost upper level is refitted from the saved level 0, identically.
    import shutil
    shutil.rmtree(tmp_path / "ck" / "level-1")
    h3 = fit_hierarchical(pl.X, [4, 2], **kw)
    np.testing.assert_array_equal(h3.links[0], h1.links[0])
    with pytest.raises(ValueError, match="different settings"):
        fit_hierarchical(pl.X, [4, 1], **kw)
    with pytest.raises(ValueError, match="different data"):
        fit_hierarchical(pl.X + 1, [4, 2], **kw)


def test_input_validation():
    x = np.random.default_rng(0).random((20, 8)).astype(np.float32)
    with pytest.raises(ValueError, match=r"ranks\[1\] = 5 exceeds ranks\[0\] = 4"):
        fit_hierarchical(x, [4, 5], progress=False)
    with pytest.raises(TypeError, match="ranks must be a list"):
        fit_hierarchical(x, 4, progress=False)
    with pytest.raises(ValueError, match="sparsity must be one value or one per level"):
        fit_hierarchical(x, [4, 2], sparsity=[0.5], progress=False)
    with pytest.raises(ValueError, match=r"sparsity \(keep-fraction\) of level 1 must be in \(0, 1\]; got 0"):
        fit_hierarchical(x, [4, 2], sparsity=[0.5, 0], progress=False)
    with pytest.raises(ValueError, match="restarts must be an int >= 1"):
        fit_hierarchical(x, [4, 2], restarts=0, progress=False)
    bad = x.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        fit_hierarchical(bad, [4, 2], progress=False)


def test_finetune_keeps_constraints_and_lowers_loss(small):
    pl, h = small
    t = sj.factorize.finetune_hierarchy(pl.X, h, steps=150)
    ft = t.metadata["finetune"]
    assert sum(ft["level_losses_after"]) <= sum(ft["level_losses_before"])  # the objective
    assert ft["product_loss_after"] < ft["product_loss_before"]
    np.testing.assert_allclose(ft["product_loss_after"] * np.sum(pl.X.astype(float) ** 2),
                               t.product_loss(pl.X), rtol=1e-3)
    assert np.all(t.codes >= 0) and all(np.all(w >= 0) for w in t.links)
    # Sparsity kept: the top level's support never grows.
    assert np.all((t.features[-1] != 0) <= (h.features[-1] != 0))
    assert t.finetune_losses.shape == (150,) and np.all(np.isfinite(t.finetune_losses))
    # The full product alone: the best iterate never loses to the greedy stack.
    p = sj.factorize.finetune_hierarchy(pl.X, h, steps=50, level_weights=[0, 1]).metadata
    assert p["finetune"]["product_loss_after"] <= p["finetune"]["product_loss_before"]
    with pytest.raises(ValueError, match="level_weights"):
        sj.factorize.finetune_hierarchy(pl.X, h, level_weights=[1.0])


def test_from_level0_result(small):
    pl, h = small
    lv0 = sj.SNMFResult(features=h.features[0], codes=h.codes, losses=h.losses[0],
                        best_iter=1, converged=True, settings={})
    g = fit_hierarchical(pl.X, [6, 3], level0=lv0, sparsity=11 / 96, restarts=3,
                         progress=False, max_iter=300)
    np.testing.assert_array_equal(g.features[0], h.features[0])
    with pytest.raises(ValueError, match="ranks\\[0\\] must equal level0's rank 6"):
        fit_hierarchical(pl.X, [5, 3], level0=lv0, progress=False)
