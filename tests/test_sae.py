"""Sparse autoencoders: init, training on planted dictionaries, the TopK auxiliary
loss, dead-latent tracking, streaming from a store, metrics."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from snmf_jax.activations import StoreWriter, ActivationStore
from snmf_jax.baselines import (SAEConfig, SparseAutoencoder, TrainConfig, decode, encode,
                                init_params, sae_metrics, train_sae)
from snmf_jax.baselines._architectures import topk_aux_loss as _topk_aux_loss
from snmf_jax.baselines._train import _fold_scale

D_IN, N_ATOMS, ACTIVE = 32, 48, 3


def _planted(n, seed=0):
    rng = np.random.default_rng(seed)
    atoms = rng.normal(size=(N_ATOMS, D_IN))
    atoms /= np.linalg.norm(atoms, axis=1, keepdims=True)
    Z = np.zeros((n, N_ATOMS))
    idx = np.argsort(rng.random((n, N_ATOMS)), axis=1)[:, :ACTIVE]
    np.put_along_axis(Z, idx, rng.uniform(0.5, 2.0, (n, ACTIVE)), axis=1)
    return (Z @ atoms + 0.3).astype(np.float32), atoms


def test_init_unit_decoder_and_tied_encoder():
    cfg = SAEConfig(d_in=8, d_sae=20, architecture="standard")
    p = init_params(cfg, jax.random.key(0))
    np.testing.assert_allclose(np.linalg.norm(p["W_dec"], axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(p["W_enc"], p["W_dec"].T)
    assert not np.any(p["b_enc"]) and not np.any(p["b_dec"])


def test_config_errors():
    with pytest.raises(ValueError, match="architecture"):
        SAEConfig(d_in=4, d_sae=8, architecture="gated")
    with pytest.raises(ValueError, match="k must be"):
        SAEConfig(d_in=4, d_sae=8, k=9)
    with pytest.raises(ValueError, match="W_enc must have shape"):
        SparseAutoencoder(SAEConfig(d_in=4, d_sae=8, k=2), params={
            "W_enc": np.zeros((8, 4)), "b_enc": np.zeros(8), "W_dec": np.zeros((8, 4)),
            "b_dec": np.zeros(4)})


def test_encode_matches_numpy():
    cfg = SAEConfig(d_in=6, d_sae=10, architecture="topk", k=3)
    sae = SparseAutoencoder(cfg, rngs=nnx.Rngs(1))
    p = {k: np.asarray(v) for k, v in sae.params().items()}
    p["b_dec"] = np.linspace(-1, 1, 6).astype(np.float32)
    sae.set_params(p)
    x = np.random.default_rng(0).normal(size=(5, 6)).astype(np.float32)
    pre = (x - p["b_dec"]) @ p["W_enc"] + p["b_enc"]
    ref = np.zeros_like(pre)
    top = np.argsort(-pre, axis=1)[:, :3]
    np.put_along_axis(ref, top, np.maximum(np.take_along_axis(pre, top, 1), 0), 1)
    np.testing.assert_allclose(sae.encode(x), ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(sae(x), ref @ p["W_dec"] + p["b_dec"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch", ["topk", "jumprelu", "standard"])
def test_fold_scale_is_exact(arch):
    """Weights trained on scale * x, folded, read raw x: same latents / scale."""
    cfg = SAEConfig(d_in=6, d_sae=12, architecture=arch, k=4, jumprelu_init_threshold=0.3)
    p = init_params(cfg, jax.random.key(2))
    p["b_enc"] = jnp.linspace(-0.5, 0.5, 12)
    p["b_dec"] = jnp.linspace(-1, 1, 6)
    x = jax.random.normal(jax.random.key(3), (7, 6))
    s = 3.5
    folded = _fold_scale(p, s, cfg)
    np.testing.assert_allclose(encode(folded, x, cfg), encode(p, s * x, cfg) / s, rtol=1e-5,
                               atol=1e-6)
    z = encode(folded, x, cfg)
    np.testing.assert_allclose(decode(folded, z), decode(p, z * s) / s, rtol=1e-5, atol=1e-6)


def test_topk_recovers_planted_dictionary():
    data, atoms = _planted(33000)
    X, held_out = data[:30000], data[30000:]  # same dictionary, unseen rows
    cfg = SAEConfig(d_in=D_IN, d_sae=N_ATOMS * 2, architecture="topk", k=ACTIVE)
    sae, info = train_sae(X, cfg, TrainConfig(total_tokens=600_000, batch_size=1024, lr=3e-3,
                                              log_every=100))
    W = np.asarray(sae.W_dec[...])
    np.testing.assert_allclose(np.linalg.norm(W, axis=1), 1.0, rtol=1e-5)
    best = np.max(np.abs(atoms @ W.T), axis=1)  # each true atom's closest decoder row
    assert np.mean(best > 0.9) > 0.8, np.sort(best)
    m = sae_metrics(sae, held_out)
    assert m.fve > 0.85 and m.l0 <= ACTIVE
    assert info.n_tokens >= 600_000 and info.history[-1]["step"] == TrainConfig(
        total_tokens=600_000, batch_size=1024).steps
    losses = [h["mse"] for h in info.history]
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize("arch, coef", [("standard", 1.0), ("jumprelu", 0.05)])
def test_other_architectures_learn(arch, coef):
    X, _ = _planted(20000)
    cfg = SAEConfig(d_in=D_IN, d_sae=N_ATOMS * 2, architecture=arch)
    sae, info = train_sae(X, cfg, TrainConfig(total_tokens=200_000, batch_size=1024, lr=3e-3,
                                              l1_coefficient=coef, log_every=0))
    m = sae_metrics(sae, X[:4000])
    assert m.fve > 0.6, m
    assert m.l0 < cfg.d_sae / 2, m  # the penalty made it sparse
    if arch == "jumprelu":  # thresholds moved away from their init
        assert np.std(np.asarray(sae.threshold[...])) > 0


def test_topk_aux_loss_matches_reference():
    cfg = SAEConfig(d_in=8, d_sae=10, architecture="topk", k=2)
    p = init_params(cfg, jax.random.key(0))
    rng = np.random.default_rng(0)
    pre = rng.normal(size=(5, 10)).astype(np.float32)
    res = rng.normal(size=(5, 8)).astype(np.float32)
    dead = np.zeros(10, bool)
    dead[[1, 4, 7]] = True
    got = float(_topk_aux_loss(p, jnp.asarray(pre), jnp.asarray(res), jnp.asarray(dead), cfg))
    k_aux = min(8 // 2, 3)  # 3 dead latents < d_in // 2
    acts = np.zeros_like(pre)
    for i in range(5):
        cand = np.where(dead, pre[i], -np.inf)
        top = np.argsort(-cand)[:k_aux]
        acts[i, top] = pre[i, top]
    ref = (3 / 4) * np.mean(np.sum((acts @ np.asarray(p["W_dec"]) - res) ** 2, -1))
    np.testing.assert_allclose(got, ref, rtol=1e-5)
    assert float(_topk_aux_loss(p, jnp.asarray(pre), jnp.asarray(res),
                                jnp.zeros(10, bool), cfg)) == 0.0


def test_dead_latents_tracked_and_revived():
    """Latents pushed far below firing are reported dead, get the aux loss, and
    the dead fraction falls as the aux loss pulls them back."""
    X, _ = _planted(20000)
    cfg = SAEConfig(d_in=D_IN, d_sae=64, architecture="topk", k=ACTIVE)
    sae = SparseAutoencoder(cfg, rngs=nnx.Rngs(0))
    p = sae.params()
    p["b_enc"] = p["b_enc"].at[:32].set(-30.0)  # half the latents cannot win the top-k
    sae.set_params(p)
    sae, info = train_sae(X, cfg, TrainConfig(total_tokens=400_000, batch_size=1024, lr=3e-3,
                                              dead_window=10, log_every=10, normalize=False),
                          sae=sae)
    dead = [h["dead"] for h in info.history]
    aux = [h["aux"] for h in info.history]
    assert max(dead) >= 0.4  # they were seen as dead
    assert max(aux) > 0  # and given the auxiliary loss
    assert dead[-1] < max(dead) and info.dead_fraction == pytest.approx(dead[-1], abs=0.1)


def _store(tmp_path, X, chunk_rows):
    w = StoreWriter(tmp_path / "store", layers=(3,), d=X.shape[1], chunk_rows=chunk_rows,
                    n_rows=len(X), settings={"t": 1}, info={"site": "mlp_out"})
    for s in range(0, len(X), 1000):
        w.append({3: X[s:s + 1000]}, {})
    return w.finish()


def test_streams_from_store(tmp_path):
    X, _ = _planted(12000)
    store = _store(tmp_path, X, chunk_rows=2500)
    assert isinstance(store, ActivationStore) and store.num_chunks == 5
    cfg = SAEConfig(d_in=D_IN, d_sae=96, architecture="topk", k=ACTIVE)
    train = TrainConfig(total_tokens=300_000, batch_size=512, lr=3e-3, shuffle_buffer=5000,
                        log_every=0)
    sae, info = train_sae(store, cfg, train)
    m_store = sae_metrics(sae, store)
    ref = sae_metrics(sae, X)
    assert m_store.n_tokens == 12000
    np.testing.assert_allclose(m_store.fve, ref.fve, rtol=1e-5)
    assert m_store.fve > 0.8


def test_nonfinite_and_width_errors():
    X, _ = _planted(100)
    cfg = SAEConfig(d_in=D_IN + 1, d_sae=8, k=2)
    with pytest.raises(ValueError, match="d_in=33"):
        train_sae(X, cfg, TrainConfig(total_tokens=100, batch_size=10))
    X[5, 3] = np.inf
    with pytest.raises(ValueError, match="non-finite"):
        train_sae(X, SAEConfig(d_in=D_IN, d_sae=8, k=2), TrainConfig(total_tokens=100,
                                                                     batch_size=10))


def test_metrics_match_numpy():
    X, _ = _planted(700)
    sae = SparseAutoencoder(SAEConfig(d_in=D_IN, d_sae=40, architecture="standard"),
                            rngs=nnx.Rngs(0))
    m = sae_metrics(sae, X, batch_size=256)
    z = np.asarray(sae.encode(X))
    xh = np.asarray(sae.decode(z))
    fve = 1 - np.sum((X - xh) ** 2) / np.sum((X - X.mean(0)) ** 2)
    np.testing.assert_allclose(m.fve, fve, rtol=1e-4)
    assert m.l0 == pytest.approx(np.mean(np.sum(z > 0, 1)))
    assert m.dead_fraction == pytest.approx(np.mean(~np.any(z > 0, 0)))


def test_minibatches_use_every_row_once_per_pass(tmp_path):
    from snmf_jax.baselines._stream import iter_minibatches
    X = np.arange(2 * 1300, dtype=np.float32).reshape(1300, 2)
    store = _store(tmp_path, X, chunk_rows=300)  # 5 chunks, the last one short
    it = iter_minibatches(store, 100, buffer=450, seed=3)
    seen = np.concatenate([next(it) for _ in range(13)])  # exactly one pass
    assert sorted(seen[:, 0].tolist()) == X[:, 0].tolist()
    assert not np.array_equal(seen, X)  # shuffled


def test_continuing_training_keeps_the_learned_map():
    """With normalize=True, train_sae(sae=...) moves the SAE's raw-space weights into
    the scaled space and back: a near-zero learning rate leaves its output unchanged."""
    X, _ = _planted(20000)
    cfg = SAEConfig(d_in=D_IN, d_sae=64, architecture="topk", k=ACTIVE)
    sae, _ = train_sae(X, cfg, TrainConfig(total_tokens=100_000, batch_size=1024, lr=3e-3,
                                           log_every=0))
    before = np.asarray(sae(X[:500]))
    sae, _ = train_sae(X, cfg, TrainConfig(total_tokens=3 * 1024, batch_size=1024, lr=1e-9,
                                           warmup_steps=1, log_every=0), sae=sae)
    np.testing.assert_allclose(np.asarray(sae(X[:500])), before, rtol=1e-4, atol=1e-4)
