"""GGUF reading, dequantization, config and params conversion.

Tiny random transformers models are written to GGUF the way llama.cpp's
convert_hf_to_gguf.py does (Q/K row permutation for llama, 1 + w norms for
Gemma, transposed Conv1D for GPT-2), then loaded back: our params must equal
`params_from_hf` of the original state dict, and transformers' own GGUF
loader must read the same weights. The real SmolLM2 / Gemma 3 files check
config fields and dequantization against independent implementations.
"""

import os
import shutil

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")

from snmf_jax.models import config_from_hf, params_from_hf  # noqa: E402
from snmf_jax.models._config import RopeScaling  # noqa: E402
from snmf_jax.models import config_from_gguf, params_from_gguf, read_gguf  # noqa: E402
from snmf_jax.models._gguf import GGUFError  # noqa: E402
from snmf_jax.models._presets import PRESETS  # noqa: E402

Q = gguf.GGMLQuantizationType


# ---------------------------------------------------------------------------
# Writing tiny GGUFs like llama.cpp.

def _llamacpp_permute(w, n_head):
    """llama.cpp's convert_hf_to_gguf LlamaModel.permute (interleaved rope)."""
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def _tiny_hf(family, seed=0):
    """(config dict, numpy state dict) of a tiny random transformers model."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    common = dict(vocab_size=96, hidden_size=64, intermediate_size=128,
                  num_attention_heads=4, max_position_embeddings=128)
    if family == "llama":
        cfg = transformers.LlamaConfig(**common, num_hidden_layers=2, num_key_value_heads=2,
                                       rope_theta=500000.0, rms_norm_eps=1e-5,
                                       tie_word_embeddings=False)
        model = transformers.LlamaForCausalLM(cfg)
    elif family == "gemma2":
        cfg = transformers.Gemma2Config(**common, num_hidden_layers=2, num_key_value_heads=2,
                                        head_dim=32, query_pre_attn_scalar=32,
                                        sliding_window=16, rms_norm_eps=1e-6)
        model = transformers.Gemma2ForCausalLM(cfg)
    elif family == "gemma3":
        cfg = transformers.Gemma3TextConfig(**common, num_hidden_layers=7,
                                            num_key_value_heads=1, head_dim=32,
                                            query_pre_attn_scalar=32, sliding_window=16,
                                            rms_norm_eps=1e-6)
        model = transformers.Gemma3ForCausalLM(cfg)
    else:
        # n_positions at GPT2Config's default: transformers' GGUF loader maps
        # context_length to n_ctx and leaves n_positions at 1024.
        cfg = transformers.GPT2Config(vocab_size=96, n_embd=64, n_layer=2, n_head=4,
                                      n_positions=1024)
        model = transformers.GPT2LMHeadModel(cfg)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():  # norms too, so a wrong norm convention shows
            p.copy_(0.1 * torch.randn(p.shape, generator=gen))
    sd = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    return cfg.to_dict(), sd


def _gguf_tensors(family, cfg, sd):
    """llama.cpp tensor name -> numpy array (HF (out, in) layout)."""
    out = {}
    if family == "gpt2":
        out["token_embd.weight"] = sd["transformer.wte.weight"]
        out["position_embd.weight"] = sd["transformer.wpe.weight"]
        out["output_norm.weight"] = sd["transformer.ln_f.weight"]
        out["output_norm.bias"] = sd["transformer.ln_f.bias"]
        out["output.weight"] = sd["transformer.wte.weight"]  # llama.cpp writes the tied head
        for i in range(cfg["n_layer"]):
            h = f"transformer.h.{i}."
            for ours, theirs, transpose in [
                    ("attn_norm", "ln_1", False), ("attn_qkv", "attn.c_attn", True),
                    ("attn_output", "attn.c_proj", True), ("ffn_norm", "ln_2", False),
                    ("ffn_up", "mlp.c_fc", True), ("ffn_down", "mlp.c_proj", True)]:
                w = sd[h + theirs + ".weight"]
                out[f"blk.{i}.{ours}.weight"] = w.T if transpose else w
                out[f"blk.{i}.{ours}.bias"] = sd[h + theirs + ".bias"]
        return out
    gemma = family != "llama"
    shift = 1.0 if gemma else 0.0  # llama.cpp stores Gemma norms as 1 + w
    out["token_embd.weight"] = sd["model.embed_tokens.weight"]
    out["output_norm.weight"] = sd["model.norm.weight"] + shift
    if not cfg.get("tie_word_embeddings", True):
        out["output.weight"] = sd["lm_head.weight"]
    names = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
             "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
             "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
             "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm",
             "self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm"}
    if gemma:
        names.update({"post_attention_layernorm": "post_attention_norm",
                      "pre_feedforward_layernorm": "ffn_norm",
                      "post_feedforward_layernorm": "post_ffw_norm"})
    else:
        names["post_attention_layernorm"] = "ffn_norm"
    for i in range(cfg["num_hidden_layers"]):
        for theirs, ours in names.items():
            key = f"model.layers.{i}.{theirs}.weight"
            if key not in sd:
                continue
            w = sd[key]
            if "norm" in theirs:
                w = w + shift
            if family == "llama" and ours == "attn_q":
                w = _llamacpp_permute(w, cfg["num_attention_heads"])
            if family == "llama" and ours == "attn_k":
                w = _llamacpp_permute(w, cfg["num_key_value_heads"])
            out[f"blk.{i}.{ours}.weight"] = w
    return out


def write_tiny_gguf(path, family, cfg, sd, *, qtype=None, arch=None, drop=(),
                    extra_tensors=None, tokens=None):
    """Writes a GGUF of a tiny HF model as llama.cpp would.

    Args:
      qtype: quantize 2-D weights with this ggml type (None: float32).
      arch: override general.architecture.
      drop: tensor names to leave out.
      extra_tensors: more name -> array entries.
    """
    arch = arch or family
    w = gguf.GGUFWriter(str(path), arch)
    if family == "gpt2":
        w.add_uint32(f"{arch}.context_length", cfg["n_positions"])
        w.add_uint32(f"{arch}.embedding_length", cfg["n_embd"])
        w.add_uint32(f"{arch}.feed_forward_length", 4 * cfg["n_embd"])
        w.add_uint32(f"{arch}.block_count", cfg["n_layer"])
        w.add_uint32(f"{arch}.attention.head_count", cfg["n_head"])
        w.add_float32(f"{arch}.attention.layer_norm_epsilon", cfg["layer_norm_epsilon"])
    else:
        w.add_uint32(f"{arch}.context_length", cfg["max_position_embeddings"])
        w.add_uint32(f"{arch}.embedding_length", cfg["hidden_size"])
        w.add_uint32(f"{arch}.feed_forward_length", cfg["intermediate_size"])
        w.add_uint32(f"{arch}.block_count", cfg["num_hidden_layers"])
        w.add_uint32(f"{arch}.attention.head_count", cfg["num_attention_heads"])
        w.add_uint32(f"{arch}.attention.head_count_kv", cfg["num_key_value_heads"])
        w.add_float32(f"{arch}.attention.layer_norm_rms_epsilon", cfg["rms_norm_eps"])
        rope = cfg.get("rope_parameters") or {}
        theta = (rope.get("full_attention", rope).get("rope_theta")
                 or cfg.get("rope_theta", 10000.0))
        w.add_float32(f"{arch}.rope.freq_base", theta)
        if family == "llama":
            w.add_uint32(f"{arch}.vocab_size", cfg["vocab_size"])
            w.add_uint32(f"{arch}.rope.dimension_count",
                         cfg["hidden_size"] // cfg["num_attention_heads"])
        else:
            w.add_uint32(f"{arch}.attention.key_length", cfg["head_dim"])
            w.add_uint32(f"{arch}.attention.value_length", cfg["head_dim"])
            w.add_uint32(f"{arch}.attention.sliding_window", cfg["sliding_window"])
        if family == "gemma2":
            w.add_float32(f"{arch}.attn_logit_softcapping", cfg["attn_logit_softcapping"])
            w.add_float32(f"{arch}.final_logit_softcapping", cfg["final_logit_softcapping"])
    vocab = cfg["vocab_size"]
    tokens = tokens or [f"<s{i}>" if i < 4 else f"t{i}" for i in range(vocab)]
    w.add_string("tokenizer.ggml.model", "gpt2")
    w.add_string("tokenizer.ggml.pre", "gpt2")
    w.add_array("tokenizer.ggml.tokens", tokens)
    w.add_array("tokenizer.ggml.token_type", [3 if i < 4 else 1 for i in range(vocab)])
    w.add_array("tokenizer.ggml.merges", ["t 1"])
    w.add_uint32("tokenizer.ggml.bos_token_id", 1)
    w.add_uint32("tokenizer.ggml.eos_token_id", 2)
    w.add_uint32("tokenizer.ggml.padding_token_id", 0)
    tensors = _gguf_tensors(family, cfg, sd)
    tensors.update(extra_tensors or {})
    for name, t in tensors.items():
        if name in drop:
            continue
        t = np.ascontiguousarray(t, np.float32)
        if qtype is not None and t.ndim == 2 and "embd" not in name:
            w.add_tensor(name, gguf.quants.quantize(t, qtype), raw_dtype=qtype)
        else:
            w.add_tensor(name, t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


FAMILIES = ["llama", "gemma2", "gemma3", "gpt2"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """family -> (path of its float32 GGUF, HF config dict, HF state dict)."""
    out = {}
    folder = tmp_path_factory.mktemp("tiny_gguf")
    for family in FAMILIES:
        cfg, sd = _tiny_hf(family)
        out[family] = (write_tiny_gguf(folder / f"{family}.gguf", family, cfg, sd), cfg, sd)
    return out


def _assert_trees_close(a, b, atol, path=""):
    assert isinstance(a, dict) == isinstance(b, dict), path
    if isinstance(a, dict):
        assert sorted(a) == sorted(b), f"{path}: keys {sorted(a)} != {sorted(b)}"
        for k in a:
            _assert_trees_close(a[k], b[k], atol, f"{path}.{k}")
        return
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    assert a.shape == b.shape, f"{path}: {a.shape} != {b.shape}"
    np.testing.assert_allclose(a, b, rtol=0, atol=atol, err_msg=path)


# ---------------------------------------------------------------------------
# The reader.

def test_reader_matches_gguf_reader(tmp_path):
    path = tmp_path / "kv.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_uint8("t.u8", 200)
    w.add_int8("t.i8", -5)
    w.add_uint16("t.u16", 60000)
    w.add_int16("t.i16", -30000)
    w.add_uint32("t.u32", 4_000_000_000)
    w.add_int32("t.i32", -2_000_000_000)
    w.add_uint64("t.u64", 2**60)
    w.add_int64("t.i64", -(2**60))
    w.add_float32("t.f32", 1.5)
    w.add_float64("t.f64", 1e-300)
    w.add_bool("t.bool", True)
    w.add_string("t.str", "héllo ✓")
    w.add_array("t.ints", [1, 2, 3])
    w.add_array("t.floats", [0.5, -1.25])
    w.add_array("t.strs", ["a", "", "日本", " two  spaces "])
    w.add_array("t.bools", [True, False, True])
    w.add_tensor("f32", np.arange(12, dtype=np.float32).reshape(3, 4))
    w.add_tensor("f16", np.arange(6, dtype=np.float16).reshape(2, 3))
    x = np.random.default_rng(0).normal(size=(4, 64)).astype(np.float32)
    w.add_tensor("q8", gguf.quants.quantize(x, Q.Q8_0), raw_dtype=Q.Q8_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    ours, ref = read_gguf(path), gguf.GGUFReader(path)
    assert set(ours.metadata) == {k for k in ref.fields if not k.startswith("GGUF.")}
    for key, field in ref.fields.items():
        if key.startswith("GGUF."):
            continue
        value = ours.metadata[key]
        expected = field.contents()
        if isinstance(value, np.ndarray):
            value = value.tolist()
        if isinstance(expected, float):
            assert value == pytest.approx(expected, rel=1e-7), key
        else:
            assert value == expected, key
    assert isinstance(ours.metadata["t.ints"], np.ndarray)
    assert list(ours.tensors) == [t.name for t in ref.tensors]
    for t in ref.tensors:
        info = ours.tensors[t.name]
        assert info.ggml_type == t.tensor_type
        assert info.offset == t.data_offset and info.nbytes == t.n_bytes
        np.testing.assert_array_equal(
            ours.tensor(t.name), gguf.quants.dequantize(t.data, t.tensor_type))
    assert ours.tensor("f32").shape == (3, 4) and ours.tensor("q8").shape == (4, 64)
    np.testing.assert_allclose(ours.tensor("q8"), x, atol=0.02)


# ---------------------------------------------------------------------------
# Conversion of tiny models.

@pytest.mark.parametrize("family", FAMILIES)
def test_tiny_gguf_matches_hf_weights(tiny, family):
    path, cfg, sd = tiny[family]
    gf = read_gguf(path)
    config = config_from_gguf(gf)
    ref_config = config_from_hf(cfg)
    # The GGUF holds what the forward pass needs; special tokens come from
    # the tokenizer metadata, GPT-2's tied head is written out by llama.cpp.
    skip = {"bos_token_id", "eos_token_ids", "pad_token_id", "tie_embeddings"}
    for field in config.__dataclass_fields__:
        if field not in skip:
            assert getattr(config, field) == getattr(ref_config, field), field
    params = params_from_gguf(gf, config, progress=False)
    ref = params_from_hf(ref_config, sd)
    if family == "gpt2":
        np.testing.assert_array_equal(params.pop("unembed")["kernel"], ref["embed"].T)
    _assert_trees_close(params, ref, atol=1e-6 if family.startswith("gemma") else 0)


@pytest.mark.parametrize("family", FAMILIES)
def test_loaded_weights_fill_the_module_tree(tiny, family):
    """The loader's output has exactly the names and shapes of the NNX module tree."""
    import jax

    from snmf_jax.models import Model, layout
    from snmf_jax.models._modules import abstract_model

    gf = read_gguf(tiny[family][0])
    config = config_from_gguf(gf)
    params = params_from_gguf(gf, config, progress=False)
    shapes = {jax.tree_util.keystr(p, simple=True, separator="."): tuple(x.shape)
              for p, x in jax.tree_util.tree_leaves_with_path(params)}
    assert shapes == layout(config)
    _, abstract = abstract_model(config)
    model = Model(config, params)
    assert jax.tree.structure(model.params) == jax.tree.structure(abstract)


def test_config_fields_per_family(tiny):
    c = config_from_gguf(read_gguf(tiny["gemma3"][0]))
    assert c.layer_types == ("sliding",) * 5 + ("full", "sliding")
    assert (c.sliding_window, c.rope_theta, c.rope_local_theta) == (16, 1e6, 1e4)
    assert c.query_pre_attn_scalar == 32  # head_dim, as llama.cpp assumes
    assert c.attn_logit_softcap is None and c.final_logit_softcap is None
    c = config_from_gguf(read_gguf(tiny["gemma2"][0]))
    assert c.layer_types == ("sliding", "full")
    assert (c.attn_logit_softcap, c.final_logit_softcap) == (50.0, 30.0)
    c = config_from_gguf(read_gguf(tiny["llama"][0]))
    assert not c.tie_embeddings and c.rope_theta == 500000.0 and c.n_kv_heads == 2
    c = config_from_gguf(read_gguf(tiny["gpt2"][0]))
    assert (c.family, c.d_mlp, c.head_dim, c.max_position) == ("gpt2", 256, 16, 1024)
    assert (c.bos_token_id, c.eos_token_ids, c.pad_token_id) == (1, (2,), 0)


def test_quantized_tiny_gguf(tmp_path, tiny):
    """Q8_0 weights dequantize to within the quantization step."""
    _, cfg, sd = tiny["llama"]
    path = write_tiny_gguf(tmp_path / "q8.gguf", "llama", cfg, sd, qtype=Q.Q8_0)
    gf = read_gguf(path)
    assert gf.tensors["blk.0.ffn_up.weight"].ggml_type == Q.Q8_0
    params = params_from_gguf(gf, config_from_gguf(gf), progress=False)
    ref = params_from_hf(config_from_hf(cfg), sd)
    # Q8_0: 8-bit codes scaled by the block max (|w| <~ 0.5 here).
    _assert_trees_close(params, ref, atol=0.5 / 127)
    with pytest.raises(AssertionError):
        _assert_trees_close(params, ref, atol=1e-6)  # it really is quantized


def test_bfloat16_params(tiny):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    gf = read_gguf(tiny["gemma3"][0])
    params = params_from_gguf(gf, config_from_gguf(gf), ml_dtypes.bfloat16, progress=False)
    assert params["layers"]["q"]["kernel"].dtype == ml_dtypes.bfloat16


@pytest.mark.slow
@pytest.mark.parametrize("family", ["llama", "gemma3", "gpt2"])
def test_tiny_gguf_matches_transformers_loader(tmp_path, tiny, family):
    """transformers' GGUF loader (an independent implementation of the same
    conventions) reads the same weights from a quantized file."""
    pytest.importorskip("accelerate", reason="transformers needs accelerate to load GGUF")
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    _, cfg, sd = tiny[family]
    path = write_tiny_gguf(tmp_path / f"{family}.gguf", family, cfg, sd, qtype=Q.Q8_0)
    model = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path, gguf_file=path.name, dtype=torch.float32)
    theirs = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    gf = read_gguf(path)
    config = config_from_gguf(gf)
    ours = params_from_gguf(gf, config, progress=False)
    ref = params_from_hf(config, theirs)
    _assert_trees_close(ours, ref, atol=1e-6)


def test_llama3_rope_scaling_from_rope_freqs(tmp_path, tiny):
    """llama.cpp stores Llama 3.1's rope scaling as per-frequency divisors."""
    _, cfg, sd = tiny["llama"]
    head_dim, theta, factor = 16, 500000.0, 32.0
    wavelen = 2 * np.pi * theta ** (np.arange(0, head_dim, 2) / head_dim)
    smooth = (8192 / wavelen - 1) / (4 - 1)
    divisors = np.where(wavelen < 8192 / 4, 1.0, np.where(
        wavelen > 8192, factor, 1 / ((1 - smooth) / factor + smooth)))
    assert 1.0 in divisors and factor in divisors  # all three bands are present
    good = write_tiny_gguf(tmp_path / "l3.gguf", "llama", cfg, sd,
                           extra_tensors={"rope_freqs.weight": divisors.astype(np.float32)})
    gf = read_gguf(good)
    assert config_from_gguf(gf).rope_scaling == RopeScaling(factor=32.0, rope_type="llama3")
    params_from_gguf(gf, config_from_gguf(gf), progress=False)  # the table is not a weight
    bad = write_tiny_gguf(tmp_path / "bad.gguf", "llama", cfg, sd, extra_tensors={
        "rope_freqs.weight": np.linspace(1, factor, head_dim // 2, dtype=np.float32)})
    with pytest.raises(GGUFError, match="rope_freqs.weight does not follow the llama3"):
        config_from_gguf(read_gguf(bad))


# ---------------------------------------------------------------------------
# Errors.

def test_truncated_file(tmp_path, tiny):
    data = tiny["llama"][0].read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[: len(data) - 100])
    with pytest.raises(GGUFError, match=r"cut.gguf is truncated: tensor '.*' needs bytes"):
        read_gguf(cut)
    cut.write_bytes(data[:300])  # inside the metadata
    with pytest.raises(GGUFError, match="cut.gguf is truncated or corrupted: reading"):
        read_gguf(cut)


def test_garbage_and_wrong_magic(tmp_path, tiny):
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(os.urandom(4096))
    with pytest.raises(GGUFError, match="junk.gguf is not a GGUF file"):
        read_gguf(junk)
    junk.write_bytes(b"GGUF" + os.urandom(4092))  # right magic, garbage after it
    with pytest.raises(GGUFError, match="junk.gguf"):
        read_gguf(junk)
    # A corrupted length inside the metadata.
    data = bytearray(tiny["llama"][0].read_bytes())
    data[24:32] = (2**40).to_bytes(8, "little")  # first key's length
    junk.write_bytes(bytes(data))
    with pytest.raises(GGUFError, match="truncated or corrupted"):
        read_gguf(junk)
    empty = tmp_path / "empty.gguf"
    empty.write_bytes(b"")
    with pytest.raises(GGUFError, match="not a GGUF file: it has only 0 bytes"):
        read_gguf(empty)
    with pytest.raises(FileNotFoundError, match="GGUF file not found"):
        read_gguf(tmp_path / "absent.gguf")


def test_unsupported_architecture(tmp_path, tiny):
    _, cfg, sd = tiny["llama"]
    path = write_tiny_gguf(tmp_path / "m.gguf", "llama", cfg, sd, arch="mamba")
    with pytest.raises(GGUFError, match="unsupported architecture 'mamba'.*supported: llama"):
        config_from_gguf(read_gguf(path))


def test_missing_and_unknown_tensors(tmp_path, tiny):
    _, cfg, sd = tiny["llama"]
    path = write_tiny_gguf(tmp_path / "m.gguf", "llama", cfg, sd, drop={"blk.1.ffn_up.weight"})
    gf = read_gguf(path)
    with pytest.raises(GGUFError, match=r"up\.kernel is missing for blocks \[1\]"):
        params_from_gguf(gf, config_from_gguf(gf), progress=False)
    path = write_tiny_gguf(tmp_path / "n.gguf", "llama", cfg, sd,
                           drop={f"blk.{i}.ffn_gate.weight" for i in range(2)})
    gf = read_gguf(path)
    with pytest.raises(GGUFError, match=r"layers.gate.kernel missing"):
        params_from_gguf(gf, config_from_gguf(gf), progress=False)
    path = write_tiny_gguf(tmp_path / "u.gguf", "llama", cfg, sd,
                           extra_tensors={"blk.0.ssm_conv.weight": np.ones((4, 4), np.float32)})
    gf = read_gguf(path)
    with pytest.raises(GGUFError, match="does not know.*blk.0.ssm_conv.weight"):
        params_from_gguf(gf, config_from_gguf(gf), progress=False)


# ---------------------------------------------------------------------------
# The real files.

def _preset_path(name):
    preset = PRESETS[name]
    if not preset.available():
        pytest.skip(f"{preset.package} is not installed ({preset.install})")
    return preset.path()


def test_smollm2_config():
    c = config_from_gguf(read_gguf(_preset_path("smollm2-135m")))
    # SmolLM2-135M's config.json on the hub.
    assert (c.family, c.vocab_size, c.d_model, c.n_layers) == ("llama", 49152, 576, 30)
    assert (c.n_heads, c.n_kv_heads, c.head_dim, c.d_mlp) == (9, 3, 64, 1536)
    assert c.rope_theta == 100000.0 and c.rope_scaling is None
    assert c.norm_eps == pytest.approx(1e-5) and c.tie_embeddings
    assert c.max_position == 8192 and c.mlp_activation == "silu"


def test_gemma3_config():
    c = config_from_gguf(read_gguf(_preset_path("gemma3-270m")))
    # gemma-3-270m's config.json on the hub.
    assert (c.family, c.vocab_size, c.d_model, c.n_layers) == ("gemma3", 262144, 640, 18)
    assert (c.n_heads, c.n_kv_heads, c.head_dim, c.d_mlp) == (4, 1, 256, 2048)
    assert (c.rope_theta, c.rope_local_theta, c.rope_scaling) == (1e6, 1e4, None)
    assert c.query_pre_attn_scalar == 256 and c.sliding_window == 512
    assert [i for i, t in enumerate(c.layer_types) if t == "full"] == [5, 11, 17]
    assert c.norm_eps == pytest.approx(1e-6) and c.tie_embeddings
    assert c.attn_logit_softcap is None and c.final_logit_softcap is None
    assert c.mlp_activation == "gelu_tanh"


def _reference_dequant(raw, qtype):
    """Dequantization by an implementation other than gguf-py's: transformers'
    torch kernels, and ggml's Q5_0 formula written out for the type those lack."""
    import torch
    from transformers.integrations.gguf import dequant

    if qtype == Q.Q5_0:  # block: fp16 d, 32 high bits, 16 bytes of low nibbles
        blocks = raw.reshape(-1, 22)
        d = blocks[:, :2].copy().view(np.float16).astype(np.float32)
        qh = blocks[:, 2:6].copy().view(np.uint32)[:, 0]
        qs = blocks[:, 6:]
        low = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.int32)
        high = ((qh[:, None] >> np.arange(32, dtype=np.uint32)) & 1).astype(np.int32)
        return (d * ((low | (high << 4)) - 16)).reshape(-1)
    return dequant.dequantize(torch.from_numpy(raw.copy()), int(qtype)).numpy()


@pytest.mark.parametrize("name", ["smollm2-135m", "gemma3-270m"])
def test_real_dequantization_matches_independent_kernels(name):
    pytest.importorskip("transformers")
    pytest.importorskip("torch")
    gf = read_gguf(_preset_path(name))
    smallest = {}
    for info in gf.tensors.values():
        if info.ggml_type not in (Q.F32, Q.F16) and (
                info.ggml_type not in smallest or info.nbytes < smallest[info.ggml_type].nbytes):
            smallest[info.ggml_type] = info
    assert len(smallest) >= 2, smallest
    for qtype, info in smallest.items():
        raw = np.frombuffer(gf._buffer, np.uint8, info.nbytes, info.offset)
        expected = _reference_dequant(raw, qtype).reshape(info.shape)
        np.testing.assert_allclose(gf.tensor(info.name), expected, rtol=1e-6, atol=1e-7,
                                   err_msg=f"{name} {info.name} {qtype.name}")


def test_real_truncated_copy(tmp_path):
    """A download cut short fails with a clear message, not a numpy trace."""
    src = _preset_path("smollm2-135m")
    cut = tmp_path / "cut.gguf"
    with open(src, "rb") as f, open(cut, "wb") as g:
        shutil.copyfileobj(f, g, length=1 << 20)
        g.truncate(os.path.getsize(src) // 2)
    with pytest.raises(GGUFError, match="is truncated: tensor"):
        read_gguf(cut)
