"""compare_methods end to end on a tiny random model (stub judge): one direction per
concept and method, detections, steering runs, and the written tables and plot."""

import json

import numpy as np
import pytest

from snmf_jax.activations._text import TextDataset
from snmf_jax.evaluate._compare import CompareConfig, compare_methods
from snmf_jax.evaluate._outputs import save_comparisons
from snmf_jax.evaluate._steering import SteeringConfig

from conftest import StubJudge

WORDS = {"a": "apple avocado banana", "e": "eel egret elephant", "o": "otter owl oboe"}


def dataset():
    texts, labels = [], []
    for i, (c, words) in enumerate(WORDS.items()):
        for j in range(6):
            w = words.split()
            texts.append(f"{w[j % 3]} and {w[(j + 1) % 3]} {j}")
            labels.append(i)
    return TextDataset(tuple(texts), tuple(labels), tuple(WORDS))


@pytest.mark.slow
def test_compare_methods_and_outputs(tiny_llama_invertible, tmp_path):
    cfg = CompareConfig(rank=4, max_iter=20, sae_width=16, sae_k=4, sae_tokens=2048,
                        sae_batch=64, unsupervised=2)
    steer = SteeringConfig(prompt="ab", targets=(0.05, 0.2), n_samples=2, max_new_tokens=4)
    comp = compare_methods(tiny_llama_invertible, dataset(), layer=1, config=cfg, steering=steer,
                           judge=StubJudge())
    assert {(d.concept, d.method) for d in comp.detections} == {
        (c, m) for c in WORDS for m in ("snmf", "sae", "diffmean")}
    assert all(0 <= d.auroc <= 1 for d in comp.detections)
    methods = [s.run.method for s in comp.scored]
    assert methods[:3] == ["snmf", "sae", "diffmean"]
    sites = {s.run.method: s.run.site for s in comp.scored}
    assert sites["snmf"] == "mlp_hidden" and sites["sae"] == sites["diffmean"] == "mlp_out"
    snmf_idx = comp.info["snmf"]["matched_features"]
    assert set(snmf_idx) == set(WORDS) and all(0 <= i < 4 for i in snmf_idx.values())
    assert comp.info["sae"]["tokens_seen"] >= 2048
    if "unsupervised_features" in comp.info:
        assert methods[3] == "snmf-unsupervised"
    blob = save_comparisons(tmp_path / "out", {"tiny L1": comp}, command="test")
    md = (tmp_path / "out" / "results.md").read_text()
    assert "## tiny L1" in md and "S_CD" in md and "harmonic" in md
    assert (tmp_path / "out" / "steering.png").read_bytes()[:4] == b"\x89PNG"
    js = json.loads((tmp_path / "out" / "results.json").read_text())
    assert js["command"] == "test"
    rows = js["comparisons"]["tiny L1"]["steering"]
    assert len(rows) == len(comp.scored) * 3 * 2  # (+, −, ±) × 2 targets
    assert blob["comparisons"]["tiny L1"]["runs"][0]["texts"]
    ref = comp.info["unsteered"]
    assert ref["n_texts"] == 16 and 0 <= ref["harmonic"] <= ref["concept"] + ref["fluency"]
    assert f"harmonic {ref['harmonic']:.3f}" in md
    assert comp.info["unsteered_unsupervised"]["n_texts"] == 16  # unsupervised=2 ran
    assert "snmf-unsupervised judge" in md


def test_compare_methods_uses_a_given_sae_and_checks_its_width(tiny_llama_invertible):
    import flax.nnx as nnx

    from snmf_jax.baselines import SAEConfig, SparseAutoencoder
    d = tiny_llama_invertible.config.d_model
    sae = SparseAutoencoder(SAEConfig(d_in=d, d_sae=8, architecture="topk", k=2),
                            rngs=nnx.Rngs(0))
    cfg = CompareConfig(methods=("sae",))  # a trained one would be 8 x d_model wide
    comp = compare_methods(tiny_llama_invertible, dataset(), layer=1, config=cfg, sae=sae)
    assert comp.info["sae"]["given"] and comp.info["sae"]["width"] == 8
    assert all(0 <= i < 8 for i in comp.info["sae"]["matched_latents"].values())
    wrong = SparseAutoencoder(SAEConfig(d_in=d + 1, d_sae=8, architecture="topk", k=2),
                              rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="d_in"):
        compare_methods(tiny_llama_invertible, dataset(), layer=1, config=cfg, sae=wrong)


def test_compare_config_errors():
    with pytest.raises(ValueError, match="methods must be"):
        CompareConfig(methods=("pca",))
    with pytest.raises(ValueError, match="rank must be"):
        CompareConfig(rank=0)


@pytest.mark.slow
def test_compare_methods_uses_a_given_snmf_bank_and_counts_distinct_matches(tiny_llama_invertible):
    """A bank fitted elsewhere (e.g. on the SAE's corpus) is matched as it is, and
    `distinct` counts how many of its features the concepts ended up with."""
    rng = np.random.default_rng(0)
    d = tiny_llama_invertible.config.d_mlp
    bank = rng.standard_normal((6, d)).astype(np.float32)
    cfg = CompareConfig(methods=("snmf",), unsupervised=2)
    steer = SteeringConfig(prompt="ab", targets=(0.05,), n_samples=1, max_new_tokens=2)
    comp = compare_methods(tiny_llama_invertible, dataset(), layer=1, config=cfg, snmf=bank, steering=steer,
                           judge=StubJudge())
    info = comp.info["snmf"]
    assert info["given"] and info["rank"] == 6
    picked = list(info["matched_features"].values())
    assert all(0 <= i < 6 for i in picked) and info["distinct"] == len(set(picked))
    assert [s.run.method for s in comp.scored] == ["snmf", "snmf-unsupervised"]
    # one direction repeated K times: every concept gets a copy of the same feature
    same = np.repeat(bank[:1], 6, axis=0)
    comp = compare_methods(tiny_llama_invertible, dataset(), layer=1, config=CompareConfig(methods=("snmf",)),
                           snmf=same)
    assert comp.info["snmf"]["distinct"] == 1
    with pytest.raises(ValueError, match=rf"snmf: expected \(K, {d}\)"):
        compare_methods(tiny_llama_invertible, dataset(), layer=1, config=cfg, snmf=bank[:, :-1])
    bank[2, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        compare_methods(tiny_llama_invertible, dataset(), layer=1, config=cfg, snmf=bank)
