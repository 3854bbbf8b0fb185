"""The interpretation layer and the browser on real outputs: SmolLM2-135M on the concept dataset.

One export (one layer, ~4k tokens) and one small fit (K = 32) per module.
The vocabulary projection is checked against transformers' own modules
(down_proj, the final norm, lm_head) loaded from the same GGUF file.
"""

import importlib.util
import json
import re

import numpy as np
import pytest

import snmf_jax as sj
from snmf_jax import interpret, report
from snmf_jax.models import PRESETS
from snmf_jax.report import _chromium

pytestmark = [pytest.mark.slow, pytest.mark.real_model]

LAYER, K = 15, 32


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    preset = PRESETS["smollm2-135m"]
    if not preset.available():
        pytest.skip(f"{preset.package} is not installed ({preset.install})")
    model = sj.load_model("smollm2-135m", progress=False)
    tmp = tmp_path_factory.mktemp("real")
    store = sj.export_activations(model, sj.load_concepts(), layers=LAYER, out=tmp / "store",
                                  progress=False)
    acts = store.to_activations()
    result = sj.fit(acts.X, rank=K, sparsity=0.01, max_iter=100, seed=0, progress=False,
                    metadata={"model": "smollm2-135m", "layer": LAYER, "site": "mlp_hidden"})
    result.save(tmp / "result")
    return model, store, acts, result, tmp


def test_contexts_point_to_the_rows_with_the_largest_codes(fitted):
    _, _, acts, result, _ = fitted
    codes = result.codes
    raw = interpret.top_contexts(codes, acts, k=25, window=15, dedup_window=None)
    dedup = interpret.top_contexts(codes, acts)
    for f in range(K):
        order = np.argsort(-codes[:, f], kind="stable")
        want = [int(r) for r in order[:25] if codes[r, f] > 0]
        assert [c.row for c in raw[f]] == want
        rank = {int(r): j for j, r in enumerate(order)}
        assert [rank[c.row] for c in dedup[f]] == sorted(rank[c.row] for c in dedup[f])
        for c in raw[f]:
            lo = c.row - c.center
            rows = np.arange(lo, lo + len(c.tokens))
            assert np.all(acts.doc_ids[rows] == acts.doc_ids[c.row])  # one document
            assert c.center <= 15 and len(c.tokens) - c.center - 1 <= 15
            np.testing.assert_array_equal(c.values, codes[rows, f])
            assert c.tokens[c.center].strip() == acts.token_text(c.row).strip()
            assert c.label == acts.label_of(c.row)


def test_vocab_projection_matches_transformers_modules(fitted):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    if importlib.util.find_spec("accelerate") is None:
        pytest.skip("transformers needs accelerate to load GGUF files")
    model, _, _, result, _ = fitted
    path = PRESETS["smollm2-135m"].path()
    theirs = transformers.AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=torch.float32).eval()
    phi = result.features
    unit = torch.tensor(phi / np.linalg.norm(phi, axis=1, keepdims=True))
    mlp, norm, head = theirs.model.layers[LAYER].mlp, theirs.model.norm, theirs.lm_head
    with torch.inference_mode():
        pos = head(norm(mlp.down_proj(unit))).numpy()
        neg = head(norm(mlp.down_proj(-unit))).numpy()
        stub = (mlp.down_proj(unit) @ head.weight.T).numpy()  # the old stub: no final norm
    proj = interpret.vocab_projection(model, phi, layer=LAYER, k=75)
    for ours_ids, ours_s, ref in ((proj.pos_ids, proj.pos_scores, pos),
                                  (proj.neg_ids, proj.neg_scores, neg)):
        np.testing.assert_allclose(ours_s, np.take_along_axis(ref, ours_ids, 1),
                                   rtol=1e-4, atol=1e-3)
        kth = -np.sort(-ref, axis=1)[:, 74]  # their 75th score
        assert np.all(ours_s[:, -1] >= kth - 1e-3)  # ours is a top 75 of theirs
    full = interpret.vocab_logits(model, phi, layer=LAYER)
    np.testing.assert_allclose(full, pos, rtol=1e-4, atol=1e-3)
    # The final norm matters: the stub's top tokens differ for most features.
    same = [len(set(np.argsort(-stub[f])[:75]) & set(proj.pos_ids[f])) / 75 for f in range(K)]
    assert np.mean(same) < 0.8


def test_overlaps_symmetric_with_the_support_on_the_diagonal(fitted):
    _, _, _, result, _ = fitted
    phi = result.features
    count = interpret.neuron_overlap(phi)
    jac = interpret.neuron_overlap(phi, kind="jaccard")
    np.testing.assert_array_equal(count, count.T)
    np.testing.assert_array_equal(np.diag(count), (phi != 0).sum(axis=1))
    assert np.all(np.diag(count) >= int(np.ceil(0.01 * phi.shape[1])))  # winner-take-all keeps p·d
    np.testing.assert_allclose(jac, jac.T)
    np.testing.assert_allclose(np.diag(jac), 1.0)
    assert np.all(count <= np.minimum.outer(np.diag(count), np.diag(count)))


def test_label_association_recovers_planted_features(fitted):
    _, _, acts, result, _ = fitted
    rng = np.random.default_rng(0)
    names = acts.label_names
    planted = [names.index("weekdays"), names.index("birds")]
    scale = float(result.codes.max())
    extra = np.stack([(acts.labels == l) * rng.uniform(0.5, 1.0, len(acts.labels)) * scale
                      for l in planted], axis=1)
    codes = np.concatenate([result.codes, extra], axis=1)  # features K, K + 1 are planted
    assoc = interpret.label_association(codes, acts.labels, names)
    for j, l in enumerate(planted):
        assert assoc.best_labels(K + j, 1)[0] == (names[l], pytest.approx(1.0))
        assert assoc.best_features(names[l], 1)[0][0] == K + j
    real = assoc.auc[:K]
    assert np.all((real >= 0) & (real <= 1)) and real.max() < 1.0


def test_cli_writes_browser_exports_and_plots(fitted):
    from snmf_jax.cli import main
    _, _, acts, _, tmp = fitted
    out = tmp / "report.html"
    assert main(["interpret", "--features", str(tmp / "result"), "--activations",
                 str(tmp / "store"), "--out", str(out), "--plots", str(tmp / "plots"),
                 "--neuronpedia", str(tmp / "np"), "--contexts", "10"]) == 0
    np_json = json.loads((tmp / "np" / "batch-0.json").read_text())
    assert np_json["model_id"] == "smollm2-135m" and np_json["layer"] == LAYER
    assert len(np_json["features"]) == K and len(np_json["features"][0]["pos_str"]) == 10
    assert {p.name for p in (tmp / "plots").iterdir()} >= {"loss.png", "codes.svg",
                                                            "overlap.png"}
    if _chromium.find_chromium() is None:
        pytest.skip("chromium is not installed: the page itself is not opened")
    dom = _chromium.dump_dom(out)
    assert len(re.findall(r'<div class="feat[^"]*" data-feature="\d+"', dom)) == K
    first = np_json["features"][0]["pos_str"][0].strip().lower()
    dom = _chromium.dump_dom(out, "q=" + first.replace("%", "%25").replace("&", "%26"))
    hits = [int(i) for i in re.findall(r'<div class="feat[^"]*" data-feature="(\d+)"', dom)]
    assert 0 in hits and len(hits) <= K
    png = _chromium.screenshot(out, tmp / "smollm2.png", "f=0")
    assert png.stat().st_size > 10_000


def test_gemma_projection_goes_through_the_post_feedforward_norm():
    """Gemma 3: unembed(final_norm(post_feedforward_norm(W_down v))) as transformers computes it."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    preset = PRESETS["gemma3-270m"]
    if not preset.available() or importlib.util.find_spec("accelerate") is None:
        pytest.skip("needs the Gemma 3 package and accelerate")
    model = sj.load_model("gemma3-270m", progress=False)
    path = preset.path()
    theirs = transformers.AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=torch.float32).eval()
    layer = model.config.n_layers // 2
    v = np.random.default_rng(0).standard_normal((4, model.config.d_mlp)).astype(np.float32)
    unit = v / np.linalg.norm(v, axis=1, keepdims=True)
    block = theirs.model.layers[layer]
    with torch.inference_mode():
        h = block.post_feedforward_layernorm(block.mlp.down_proj(torch.tensor(unit)))
        want = theirs.lm_head(theirs.model.norm(h)).numpy()
    cap = getattr(theirs.config, "final_logit_softcapping", None)
    if cap:
        want = np.tanh(want / cap) * cap
    got = interpret.vocab_logits(model, v, layer=layer)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-3)
    proj = interpret.vocab_projection(model, v, layer=layer, k=75)
    kth = -np.sort(-want, axis=1)[:, 74]
    assert np.all(proj.pos_scores[:, -1] >= kth - 2e-3)
