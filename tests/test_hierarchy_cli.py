"""`snmf-jax hierarchy`: from a store or an existing result, tree printed and written."""

import json

import numpy as np
import pytest

import snmf_jax as sj
from snmf_jax import cli
from snmf_jax.activations import StoreWriter
from snmf_jax.factorize import planted_hierarchy

PROV = {"doc_ids": ("int32", ()), "positions": ("int32", ()), "token_ids": ("int32", ()),
        "offsets": ("int32", (2,)), "labels": ("int32", ())}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A store of planted activations whose token texts name their leaf."""
    pl = planted_hierarchy(parents=2, children=2, d=48, core=4, exclusive=5,
                           tokens_per_leaf=15, seed=3)
    n = pl.X.shape[0]
    path = tmp_path_factory.mktemp("acts") / "acts"
    texts = [f"leaf{leaf}" for leaf in range(4)]
    w = StoreWriter(path, layers=(0,), d=48, chunk_rows=25, n_rows=n, settings={"t": 1},
                    provenance=PROV, info={"model": "planted", "site": "mlp_hidden"},
                    documents={"texts": texts, "labels": None, "label_names": None})
    prov = {"doc_ids": pl.leaf.astype(np.int32), "positions": np.zeros(n, np.int32),
            "token_ids": np.zeros(n, np.int32),
            "offsets": np.tile(np.array([[0, 5]], np.int32), (n, 1)),
            "labels": np.zeros(n, np.int32)}
    for i in range(0, n, 25):
        w.append({0: pl.X[i:i + 25]}, {k: v[i:i + 25] for k, v in prov.items()})
    w.finish()
    return path, pl


@pytest.mark.slow
def test_hierarchy_from_store(store, tmp_path, capsys):
    path, _ = store
    out = tmp_path / "hier"
    assert cli.main(["hierarchy", str(path), "--ranks", "4", "2", "--sparsity", "0.2",
                     "--restarts", "2", "--out", str(out), "--no-progress",
                     "--finetune-steps", "20"]) == 0
    printed = capsys.readouterr()
    assert printed.out.startswith("1:0  leaf")  # the tree, labelled by token text
    assert "fine-tuned" in printed.err
    tree = json.loads((out / "tree.json").read_text())
    assert tree["format"] == "snmf-jax/concept-tree" and tree["ranks"] == [4, 2]
    h = sj.HierarchicalResult.load(out)
    assert h.ranks == (4, 2) and h.finetune_losses.shape == (20,)
    # Rerun: refused without --overwrite (a result is there); with it, resumed
    # from OUT/checkpoint, same hierarchy.
    again = ["hierarchy", str(path), "--ranks", "4", "2", "--sparsity", "0.2",
             "--restarts", "2", "--out", str(out), "--no-progress", "--finetune-steps", "20"]
    assert cli.main(again) == 1 and "--overwrite" in capsys.readouterr().err
    assert cli.main([*again, "--overwrite"]) == 0
    np.testing.assert_array_equal(sj.HierarchicalResult.load(out).links[0], h.links[0])


def test_hierarchy_from_result(store, tmp_path, capsys):
    path, pl = store
    sj.fit(pl.X, 4, sparsity=0.2, progress=False).save(tmp_path / "snmf")
    out = tmp_path / "hier"
    assert cli.main(["hierarchy", str(tmp_path / "snmf"), "--ranks", "2", "--sparsity", "0.2",
                     "--store", str(path), "--out", str(out), "--no-progress"]) == 0
    assert "leaf" in capsys.readouterr().out
    h = sj.HierarchicalResult.load(out)
    np.testing.assert_array_equal(h.features[0], sj.SNMFResult.load(tmp_path / "snmf").features)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        cli.main(["--debug", "hierarchy", str(tmp_path / "nope"), "--ranks", "2", "--out", str(out)])


def test_level0_streamed_or_on_a_mesh_matches_in_memory(store):
    import jax
    from jax.sharding import Mesh
    path, pl = store
    kw = dict(sparsity=0.2, restarts=2, progress=False, max_iter=100)
    ref = sj.fit_hierarchical(pl.X, [4, 2], **kw)
    streamed = sj.fit_hierarchical(str(path), [4, 2], **kw)
    np.testing.assert_allclose(streamed.losses[0], ref.losses[0], rtol=1e-4)
    mesh = Mesh(np.array(jax.devices()[:1]), ("tokens",))
    sharded = sj.fit_hierarchical(pl.X, [4, 2], mesh=mesh, **kw)
    np.testing.assert_allclose(sharded.losses[0], ref.losses[0], rtol=1e-4)
