"""Tokenizers built from GGUF metadata and tokenizer.json, against transformers."""

import pytest

gguf = pytest.importorskip("gguf")

from snmf_jax.models import PRESETS, Tokenizer  # noqa: E402
from snmf_jax.models import _tokenizer  # noqa: E402

TEXTS = [
    "Hello world",
    "The capital of France is Paris.",
    "12345 apples, 3.14159 and 1,000,000 (0.001%)",
    "  two  spaces\tand\ttabs\n\nnewlines\r\n   ",
    "héllo naïve café — “quotes” ‘single’ …",
    "日本語のテキスト 中文 한국어",
    "Ελληνικά русский العربية हिन्दी",
    "emoji 🤗👩‍👩‍👧‍👦🇫🇷",
    "def f(x):\n    return x**2  # comment\n",
    "I'm can't we'll they've O'Neil",
    "\u200b zero\u00a0width",
    "<|im_start|>user\nhi<|im_end|>\n",
    "<bos>x<eos><start_of_turn>user\n<end_of_turn>",
    "",
    " ",
    "a",
    "x" * 60,
]


def _preset_file(name):
    preset = PRESETS[name]
    if not preset.available():
        pytest.skip(f"{preset.package} is not installed ({preset.install})")
    return preset.path()


@pytest.fixture(scope="module", params=["smollm2-135m", "gemma3-270m"])
def pair(request):
    """(ours, transformers' tokenizer) built from the same real GGUF."""
    transformers = pytest.importorskip("transformers")
    path = _preset_file(request.param)
    theirs = transformers.AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    return request.param, Tokenizer.from_gguf(path), theirs


@pytest.mark.slow
def test_matches_transformers_on_real_gguf(pair):
    name, ours, theirs = pair
    for text in TEXTS:
        ids = ours.encode(text)
        assert ids == theirs(text)["input_ids"], (name, text)
        assert ours.decode(ids) == theirs.decode(ids), (name, text)
        assert ours.decode(ids, skip_special=True) == theirs.decode(
            ids, skip_special_tokens=True), (name, text)
        assert ours.encode(text, add_bos=False) == theirs(
            text, add_special_tokens=False)["input_ids"], (name, text)
    assert ours.encode_batch(TEXTS) == [ours.encode(t) for t in TEXTS]
    assert ours.vocab_size == len(theirs)
    assert ours.bos_id == theirs.bos_token_id
    assert ours.eos_ids[0] == theirs.eos_token_id
    assert ours.pad_id == theirs.pad_token_id
    for i in (0, 1, 2, 100, ours.vocab_size - 1):
        assert ours.id_to_token(i) == theirs.convert_ids_to_tokens(i)


@pytest.mark.slow
def test_chat_template_and_tokenizer_json_round_trip(pair, tmp_path):
    """Our template rendering equals transformers'; a tokenizer.json saved by
    transformers loads with `from_file` to the same ids and special tokens."""
    name, ours, theirs = pair
    messages = [{"role": "user", "content": "What is 2+2?"},
                {"role": "assistant", "content": "4."},
                {"role": "user", "content": "And 3+3? ünïcode"}]
    if theirs.chat_template is None:
        assert ours.chat_template is None
        with pytest.raises(ValueError, match="no chat template"):
            ours.apply_chat_template(messages)
    else:
        for gen in (True, False):
            assert ours.apply_chat_template(messages, add_generation_prompt=gen) == \
                theirs.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen)
    theirs.save_pretrained(tmp_path)
    loaded = Tokenizer.from_file(tmp_path / "tokenizer.json")
    for text in TEXTS:
        assert loaded.encode(text) == ours.encode(text), text
    assert (loaded.bos_id, loaded.pad_id, loaded.chat_template) == (
        ours.bos_id, ours.pad_id, ours.chat_template)
    assert loaded.eos_ids[0] == ours.eos_ids[0]
    assert loaded.adds_bos == ours.adds_bos


def test_special_tokens_of_real_ggufs():
    smol = Tokenizer.from_gguf(_preset_file("smollm2-135m"))
    # SmolLM2: <|im_start|> 1, <|im_end|> 2 (its EOS and pad), <|endoftext|> 0.
    assert (smol.bos_id, smol.eos_ids, smol.pad_id, smol.adds_bos) == (1, (2, 0), 2, False)
    assert smol.encode("Hi") == smol.encode("Hi", add_bos=False)
    assert smol.encode("<|im_start|>user")[0] == 1  # special tokens stay whole
    assert smol.apply_chat_template([{"role": "user", "content": "Hi"}]).endswith(
        "<|im_start|>assistant\n")


@pytest.mark.slow
def test_special_tokens_of_gemma3():
    gemma = Tokenizer.from_gguf(_preset_file("gemma3-270m"))
    # Gemma 3: <pad> 0, <eos> 1, <bos> 2, <end_of_turn> 106 also ends a turn.
    assert (gemma.bos_id, gemma.eos_ids, gemma.pad_id, gemma.adds_bos) == (2, (1, 106), 0, True)
    assert gemma.encode("Hi")[0] == 2 and gemma.encode("Hi", add_bos=False)[0] != 2
    assert gemma.id_to_token(106) == "<end_of_turn>"


# ---------------------------------------------------------------------------
# Synthetic GGUF tokenizers (fast; no real files needed).

def _write_tokenizer_gguf(path, arch, model, tokens, types, scores=None, merges=None,
                          pre=None, add_bos=None):
    w = gguf.GGUFWriter(str(path), arch)
    w.add_uint32(f"{arch}.block_count", 1)
    w.add_string("tokenizer.ggml.model", model)
    if pre:
        w.add_string("tokenizer.ggml.pre", pre)
    w.add_array("tokenizer.ggml.tokens", tokens)
    w.add_array("tokenizer.ggml.token_type", types)
    if scores is not None:
        w.add_array("tokenizer.ggml.scores", scores)
    if merges is not None:
        w.add_array("tokenizer.ggml.merges", merges)
    if add_bos is not None:
        w.add_bool("tokenizer.ggml.add_bos_token", add_bos)
    w.add_uint32("tokenizer.ggml.bos_token_id", 1)
    w.add_uint32("tokenizer.ggml.eos_token_id", 2)
    w.add_uint32("tokenizer.ggml.unknown_token_id", 0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _spm_vocab(pieces):
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + pieces
    types = [2, 3, 3] + [6] * 256 + [1] * len(pieces)
    scores = [0.0] * 259 + [-float(i) for i in range(len(pieces))]
    return tokens, types, scores


SPM_PIECES = ["▁", "t", "h", "e", "l", "o", "w", "r", "d", "▁t", "he", "▁the", "ll", "llo",
              "▁he", "▁hello", "▁w", "or", "▁wor", "ld", "▁world", "é", "  ", "   "]
SYNTH_TEXTS = ["the hello world", "hello", "  the  world   x", "xyz", "héllo wörld",
               " leading", "", "<s>the</s>"]


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_sentencepiece_gguf_matches_transformers(tmp_path, arch):
    transformers = pytest.importorskip("transformers")
    tokens, types, scores = _spm_vocab(SPM_PIECES)
    path = _write_tokenizer_gguf(tmp_path / "t.gguf", arch, "llama", tokens, types, scores)
    theirs = transformers.AutoTokenizer.from_pretrained(tmp_path, gguf_file="t.gguf")
    ours = Tokenizer.from_gguf(path, cache=False)
    assert ours.adds_bos  # llama.cpp's default for SentencePiece vocabularies
    for text in SYNTH_TEXTS:
        ids = ours.encode(text)
        assert ids == theirs(text)["input_ids"], text
        assert ours.decode(ids) == theirs.decode(ids), text


def test_byte_level_gguf_matches_transformers(tmp_path):
    transformers = pytest.importorskip("transformers")
    tokens = ["<|end|>", "<|begin|>", "<|eot|>"] + [chr(c) for c in range(33, 127)] + [
        "Ġ", "Ġt", "he", "Ġthe", "Ġ1", "12", "Ġw", "or", "ld", "Ġwor", "Ġworld", "Ċ", "ĊĊ"]
    types = [3, 3, 3] + [1] * (len(tokens) - 3)
    merges = ["Ġ t", "h e", "Ġt he", "Ġ 1", "1 2", "Ġ w", "o r", "l d", "Ġw or", "Ġwor ld",
              "Ċ Ċ"]
    for pre in ("gpt2", "llama-bpe"):
        path = _write_tokenizer_gguf(tmp_path / f"{pre}.gguf", "llama", "gpt2", tokens, types,
                                     merges=merges, pre=pre, add_bos=True)
        theirs = transformers.AutoTokenizer.from_pretrained(tmp_path, gguf_file=path.name)
        ours = Tokenizer.from_gguf(path, cache=False)
        for text in ["the world", " 1234 the", "the\n\nworld", "<|begin|>the<|eot|>", ""]:
            ids = ours.encode(text)
            assert ids == theirs(text)["input_ids"], (pre, text)
            assert ours.decode(ids) == theirs.decode(ids), (pre, text)
        # "<|eot|>"-like names are not in llama.cpp's list; "<|end|>" is.
        assert ours.eos_ids == (2, 0)


def test_cache_is_written_and_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("SNMF_JAX_CACHE", str(tmp_path / "cache"))
    tokens, types, scores = _spm_vocab(SPM_PIECES)
    path = _write_tokenizer_gguf(tmp_path / "t.gguf", "gemma3", "llama", tokens, types, scores)
    first = Tokenizer.from_gguf(path)
    cached = list((tmp_path / "cache" / "tokenizers").glob("t-*.json"))
    assert len(cached) == 1

    def fail(*args):
        raise AssertionError("rebuilt instead of reading the cache")

    monkeypatch.setattr(_tokenizer, "_build_from_gguf", fail)
    second = Tokenizer.from_gguf(path)
    assert second.encode("the hello world") == first.encode("the hello world")
    assert (second.bos_id, second.eos_ids, second.adds_bos) == (
        first.bos_id, first.eos_ids, first.adds_bos)
    # A corrupted cache file is rebuilt, not trusted.
    cached[0].write_text("{not json")
    monkeypatch.undo()
    monkeypatch.setenv("SNMF_JAX_CACHE", str(tmp_path / "cache"))
    third = Tokenizer.from_gguf(path)
    assert third.encode("the hello world") == first.encode("the hello world")
    assert cached[0].read_text().startswith("{")


def test_errors(tmp_path):
    tokens, types, scores = _spm_vocab(SPM_PIECES)
    path = _write_tokenizer_gguf(tmp_path / "t.gguf", "llama", "llama", tokens, types, scores)
    tok = Tokenizer.from_gguf(path, cache=False)
    with pytest.raises(TypeError, match="text must be a str"):
        tok.encode(["a list"])
    with pytest.raises(TypeError, match="not one str"):
        tok.encode_batch("one string")
    with pytest.raises(IndexError, match="token id 100000 is out of range"):
        tok.id_to_token(100000)
    with pytest.raises(ValueError, match="no chat template"):
        tok.apply_chat_template([{"role": "user", "content": "hi"}])
    bad = _write_tokenizer_gguf(tmp_path / "b.gguf", "llama", "bert", tokens, types, scores)
    with pytest.raises(ValueError, match="unsupported tokenizer.ggml.model 'bert'"):
        Tokenizer.from_gguf(bad, cache=False)
    w = gguf.GGUFWriter(str(tmp_path / "none.gguf"), "llama")
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(ValueError, match="none.gguf has no tokenizer"):
        Tokenizer.from_gguf(tmp_path / "none.gguf", cache=False)
    with pytest.raises(FileNotFoundError, match="tokenizer file not found"):
        Tokenizer.from_file(tmp_path)


def test_chat_template_rendering(tmp_path):
    pytest.importorskip("jinja2")
    tokens, types, scores = _spm_vocab(SPM_PIECES)
    tok = Tokenizer.from_gguf(_write_tokenizer_gguf(
        tmp_path / "t.gguf", "llama", "llama", tokens, types, scores), cache=False)
    tok.chat_template = (
        "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'system' %}"
        "{{ raise_exception('no system') }}{% endif %}"
        "[{{ m['role'] }}] {{ m['content'] | trim }}\n{% endfor %}"
        "{% if add_generation_prompt %}[assistant]{% endif %}")
    msgs = [{"role": "user", "content": " hi "}]
    assert tok.apply_chat_template(msgs) == "<s>[user] hi\n[assistant]"
    assert tok.apply_chat_template(msgs, add_generation_prompt=False) == "<s>[user] hi\n"
    with pytest.raises(Exception, match="no system"):
        tok.apply_chat_template([{"role": "system", "content": "x"}])
    with pytest.raises(ValueError, match=r"messages\[0\] must be a mapping"):
        tok.apply_chat_template([("user", "hi")])


def test_from_gguf_accepts_reader_objects(tmp_path):
    """A path, our GGUFFile and a gguf.GGUFReader give the same tokenizer."""
    from snmf_jax.models._gguf import read_gguf

    tokens, types, scores = _spm_vocab(SPM_PIECES)
    path = _write_tokenizer_gguf(tmp_path / "t.gguf", "gemma3", "llama", tokens, types, scores)
    text = "the  hello world xyz"
    expected = Tokenizer.from_gguf(path, cache=False).encode(text)
    assert Tokenizer.from_gguf(read_gguf(path), cache=False).encode(text) == expected
    assert Tokenizer.from_gguf(gguf.GGUFReader(path), cache=False).encode(text) == expected
    with pytest.raises(TypeError, match="path_or_reader must be"):
        Tokenizer.from_gguf(42)


def test_from_file_follows_explicit_add_bos_flag(tmp_path):
    """tokenizer_config.json's add_bos_token overrides the tokenizer.json
    template, as in transformers."""
    from tokenizers import Tokenizer as Backend
    from tokenizers import models, pre_tokenizers

    backend = Backend(models.WordLevel({"<s>": 0, "</s>": 1, "a": 2, "b": 3}, unk_token="a"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text(
        '{"bos_token": "<s>", "eos_token": "</s>", "add_bos_token": true}')
    tok = Tokenizer.from_file(tmp_path)
    assert tok.encode("a b") == [0, 2, 3] and tok.adds_bos
    assert tok.encode("a b", add_bos=False) == [2, 3]
    (tmp_path / "tokenizer_config.json").write_text('{"bos_token": "<s>"}')
    tok = Tokenizer.from_file(tmp_path / "tokenizer.json")
    assert tok.encode("a b") == [2, 3] and not tok.adds_bos and tok.bos_id == 0
