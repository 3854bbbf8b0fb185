"""The Neuronpedia / SAEDashboard export: their classes accept it, the importer finds
every key it reads, and the computed statistics are the ones they claim to be."""

import dataclasses
import json

import numpy as np
import pytest

from snmf_jax import report
from snmf_jax.activations import ActivationStore
from snmf_jax.cli import main
from snmf_jax.report import _dashboard_stats as stats
from snmf_jax.testing import CharTokenizer, tiny_model

from conftest import toy_report_data, write_toy_result, write_toy_store
from snmf_jax.report import _neuronpedia

# What Neuronpedia's importer (utils/neuronpedia-utils/neuronpedia_utils/
# convert-saedashboard-to-neuronpedia-export.py, `main` and `process_data`) reads
# with `batch_data[...]`, `feature_data[...]` and `activation_data[...]`.
IMPORTER_BATCH = {"features", "sae_id_suffix", "model_id", "layer"}
IMPORTER_FEATURE = {
    "feature_index", "neuron_alignment_indices", "neuron_alignment_values",
    "neuron_alignment_l1", "correlated_neurons_indices", "correlated_neurons_pearson",
    "correlated_neurons_l1", "correlated_features_indices", "correlated_features_pearson",
    "correlated_features_l1", "neg_str", "neg_values", "pos_str", "pos_values", "frac_nonzero",
    "freq_hist_data_bar_heights", "freq_hist_data_bar_values", "logits_hist_data_bar_heights",
    "logits_hist_data_bar_values", "decoder_weights_dist", "activations"}
IMPORTER_ACTIVATION = {"values", "tokens", "bin_contains", "bin_max", "bin_min",
                       "qualifying_token_index"}

# Feature k's neurons 8k .. 8k+4 with these weights (disjoint supports).
WEIGHTS = np.array([6.0, 3.0, 1.5, 0.7, -2.0], np.float32)


def planted(K=4, d=48, seed=0, noise=1.0):
    """Toy documents whose activations are X = C Φ + noise; the last feature has no
    neurons and codes that are a scaled copy of feature 0's (each is the other's
    correlated feature)."""
    acts, codes, _ = toy_report_data(K=K, seed=seed)
    rng = np.random.default_rng(seed + 1)
    codes = rng.uniform(0.01, 1.0, size=codes.shape).astype(np.float32)
    codes[:, -1] = 2 * codes[:, 0] + 0.01 * rng.uniform(size=len(codes))
    phi = np.zeros((K, d), np.float32)
    for k in range(K - 1):
        phi[k, 8 * k:8 * k + 5] = WEIGHTS
    X = codes @ phi + noise * rng.standard_normal((len(codes), d)).astype(np.float32)
    return dataclasses.replace(acts, X=X.astype(np.float32)), codes, phi


def batches(K=4, **kw):
    acts, codes, phi = planted(K)
    rep = report.feature_report(phi, codes, acts, k=3, plots=False)
    return rep, codes, phi, acts, _neuronpedia.neuronpedia_batches(rep, phi, codes, acts, layer=3,
                                                             model_id="m", **kw)


def test_sae_dashboard_classes_accept_the_written_batches(tmp_path):
    """Their constructors reject any key they do not define (TypeError); to_dict()
    writes every key they define: equality after the round trip means the same keys."""
    np_dash = pytest.importorskip(
        "sae_dashboard.neuronpedia.neuronpedia_dashboard",
        reason="sae-dashboard is not installed (pip install --no-deps sae-dashboard==0.8.0)")
    acts, codes, phi = planted()
    rep = report.feature_report(phi, codes, acts, k=3, plots=False)
    paths = report.save_neuronpedia(rep, tmp_path / "np", phi, codes, acts, layer=3,
                                     model_id="m", features_per_batch=3)
    assert [p.name for p in paths] == ["batch-0.json", "batch-1.json"]
    for p in paths:
        ours = json.loads(p.read_text(encoding="utf-8"))
        batch = np_dash.NeuronpediaDashboardBatch(**ours)
        assert batch.to_dict() == ours
        assert isinstance(batch.layer, int) and batch.sae_set == "snmf"
        assert all(isinstance(f, np_dash.NeuronpediaDashboardFeature) for f in batch.features)
        acts0 = batch.features[0].activations
        assert acts0 and isinstance(acts0[0], np_dash.NeuronpediaDashboardActivation)
    with pytest.raises(TypeError):  # the check above has teeth: their old complaint
        np_dash.NeuronpediaDashboardBatch(**{**ours, "sae_id": "snmf"})


def test_every_key_the_importer_reads_is_present_and_usable(tmp_path):
    rep, codes, phi, acts, _ = batches()
    rep["features"][0]["pos"] = [["a", 2.0], ["b", 1.0]]
    rep["features"][0]["neg"] = [["c", 3.0]]  # the score of −φ̂
    report.save_neuronpedia(rep, tmp_path, phi, codes, acts, layer=3)
    # The importer lists the folder for names starting "batch-".
    files = sorted(f.name for f in tmp_path.iterdir() if f.name.startswith("batch-"))
    assert files == ["batch-0.json"]
    batch = json.loads((tmp_path / files[0]).read_text())
    assert IMPORTER_BATCH <= set(batch) and batch["layer"] == 3
    assert batch["sae_id_suffix"] is None and len(batch["features"]) == 4
    f = batch["features"][0]
    assert f["pos_str"] == ["a", "b"] and f["pos_values"] == [2.0, 1.0]
    assert f["neg_str"] == ["c"] and f["neg_values"] == [-3.0]  # SAEDashboard's bottom logits
    for f in batch["features"]:
        assert IMPORTER_FEATURE <= set(f)
        for a in f["activations"]:
            assert IMPORTER_ACTIVATION <= set(a)
            top = max(a["values"])  # what the importer computes for maxValue
            assert a["values"].index(top) == a["qualifying_token_index"]
            assert a["tokens"][a["qualifying_token_index"]].strip()
            assert a["bin_min"] == -1 and a["bin_max"] == pytest.approx(codes[:, f[
                "feature_index"]].max(), rel=1e-3)


def test_activation_histogram_counts_the_active_codes():
    rep, codes, _, _, (batch,) = batches()
    n = len(codes)
    for f, entry in zip(batch["features"], rep["features"]):
        k = f["feature_index"]
        active = codes[:, k] > 0.1 * codes[:, k].max()  # the report's rule, active=0.1
        assert 0 < active.sum() < n
        assert sum(f["freq_hist_data_bar_heights"]) == active.sum()
        assert f["frac_nonzero"] == pytest.approx(active.mean())
        assert f["frac_nonzero"] == pytest.approx(entry["frac_active"], abs=1e-3)
        centres = np.asarray(f["freq_hist_data_bar_values"])
        assert len(centres) == 50 and np.all(np.diff(centres) > 0)
        assert codes[active, k].min() < centres[0] < centres[-1] < codes[:, k].max()


def test_correlated_neurons_are_the_largest_weight_neurons():
    _, codes, phi, acts, (batch,) = batches()
    for f in batch["features"][:-1]:
        k = f["feature_index"]
        # The table of Φ_k's weights: largest |w| first, with their share of ‖Φ_k‖₁.
        assert f["neuron_alignment_indices"] == [8 * k, 8 * k + 1, 8 * k + 4]
        assert f["neuron_alignment_values"] == [6.0, 3.0, -2.0]
        assert f["neuron_alignment_l1"] == pytest.approx(np.array([6, 3, 2]) / 13.2, rel=1e-3)
        # Activation correlations: X_j = c_k Φ_kj + noise, so the correlation grows
        # with the weight; the three largest positive weights lead, in order.
        assert f["correlated_neurons_indices"] == [8 * k, 8 * k + 1, 8 * k + 2]
        want = [np.corrcoef(codes[:, k], acts.X[:, j])[0, 1]
                for j in f["correlated_neurons_indices"]]
        assert f["correlated_neurons_pearson"] == pytest.approx(want, abs=1e-3)
        x = acts.X[:, 8 * k]
        cos = codes[:, k] @ x / np.linalg.norm(codes[:, k]) / np.linalg.norm(x)
        assert f["correlated_neurons_l1"][0] == pytest.approx(cos, abs=1e-3)
    # Feature 3: no neurons of its own, codes a copy of feature 0's.
    f0, f3 = batch["features"][0], batch["features"][3]
    assert f3["neuron_alignment_indices"] == [] and f3["neuron_alignment_l1"] == []
    assert f3["correlated_neurons_indices"] == [0, 1, 2]
    assert f0["correlated_features_indices"][0] == 3 and f3["correlated_features_indices"][0] == 0
    assert f0["correlated_features_pearson"][0] == pytest.approx(1.0, abs=1e-3)
    for f in batch["features"]:  # nobody lists itself
        assert f["feature_index"] not in f["correlated_features_indices"]
        assert len(f["correlated_features_indices"]) == 3


def test_streaming_correlations_match_numpy_across_store_chunks(tmp_path):
    """A store read chunk by chunk (16-row chunks) gives np.corrcoef's values, also
    when the activations sit far from zero (the shifted sums keep the precision)."""
    n, d = write_toy_store(tmp_path / "store")
    store = ActivationStore(tmp_path / "store")
    X = np.concatenate(list(store.iter_chunks()))
    codes = np.random.default_rng(3).uniform(0, 1, size=(n, 4)).astype(np.float32)
    got = stats.correlations(codes, store, n_rows=d)
    full = np.corrcoef(np.hstack([codes, X]).T)  # (4 + d, 4 + d)
    for k in range(4):
        np.testing.assert_allclose(got.neuron_pearson[k], full[k, 4 + got.neuron_ids[k]],
                                   atol=1e-6)
        assert list(got.neuron_ids[k]) == list(np.argsort(-full[k, 4:], kind="stable"))
        np.testing.assert_allclose(got.feature_pearson[k], full[k, got.feature_ids[k]],
                                   atol=1e-6)
    assert got.n_docs == 10 and got.longest_doc == 6
    fc, fx = codes + np.float32(1e4), X + np.float32(1e4)  # means 1e4 × the spread
    far = stats.correlations(fc, fx, n_rows=d)
    full = np.corrcoef(np.hstack([fc, fx]).astype(np.float64).T)
    for k in range(4):
        np.testing.assert_allclose(far.neuron_pearson[k], full[k, 4 + far.neuron_ids[k]],
                                   atol=1e-6)


def test_logit_histogram_covers_the_whole_vocabulary():
    model = tiny_model(tokenizer=CharTokenizer(), logit_scale=3.0, max_position=256)
    acts, codes, phi = planted(K=3)
    rep = report.feature_report(phi, codes, acts, model=model, layer=1, k=2, plots=False)
    (batch,) = _neuronpedia.neuronpedia_batches(rep, phi, codes, acts, model=model, n_bins=20)
    assert batch["layer"] == 1 and batch["model_id"] == "tiny"
    for f in batch["features"]:
        assert sum(f["logits_hist_data_bar_heights"]) == model.config.vocab_size
    # The last feature has no neurons: every logit is 0, one bar.
    assert batch["features"][-1]["logits_hist_data_bar_values"] == [0.0]
    for f in batch["features"][:-1]:
        assert len(f["logits_hist_data_bar_values"]) == 20
        # The table's top logit falls in the histogram's last bar.
        width = np.diff(f["logits_hist_data_bar_values"])[0]
        assert f["pos_values"][0] == pytest.approx(f["logits_hist_data_bar_values"][-1]
                                                   + width / 2, abs=2e-3)
        assert len(f["pos_str"]) == 10 and f["neg_values"][0] < 0


def test_bad_input_fails_before_writing(tmp_path):
    rep, codes, phi, acts, _ = batches()
    with pytest.raises(ValueError, match="layer"):
        _neuronpedia.neuronpedia_batches(rep, phi, codes, acts)  # no layer in the report
    with pytest.raises(ValueError, match="agree on K"):
        _neuronpedia.neuronpedia_batches(rep, phi[:2], codes[:, :2], acts, layer=1)
    with pytest.raises(ValueError, match="one .n, d. row per code row"):
        _neuronpedia.neuronpedia_batches(rep, phi, codes, acts.X[:5], layer=1)
    with pytest.raises(ValueError, match="data has 47 neurons per row"):
        _neuronpedia.neuronpedia_batches(rep, phi, codes, acts.X[:, :47], layer=1)
    (tmp_path / "batch-0.json").write_text("{}")
    with pytest.raises(ValueError, match="already holds batch-0.json"):
        report.save_neuronpedia(rep, tmp_path, phi, codes, acts, layer=1)


def test_cli_writes_batches_and_refuses_a_used_folder(tmp_path, capsys):
    n, d = write_toy_store(tmp_path / "store")
    write_toy_result(tmp_path / "res", n, d)
    args = ["interpret", "--features", str(tmp_path / "res"), "--activations",
            str(tmp_path / "store"), "--out", str(tmp_path / "r.html"), "--model", "none",
            "--contexts", "3", "--neuronpedia", str(tmp_path / "np")]
    assert main(args) == 0
    batch = json.loads((tmp_path / "np" / "batch-0.json").read_text())
    assert batch["layer"] == 2 and [f["feature_index"] for f in batch["features"]] == [0, 1, 2, 3]
    assert batch["model_id"] == ""  # --model none is not a model id; the store names none
    assert batch["features"][0]["pos_str"] == [] and len(batch["features"][0]["activations"]) == 3
    (tmp_path / "r.html").unlink()
    assert main(args) != 0
    assert "already holds batch-0.json" in capsys.readouterr().err
    assert not (tmp_path / "r.html").exists()  # refused before any work
