"""`snmf-jax interpret` on a small synthetic store (no model: no vocabulary projection)."""

import json
import re

import pytest

from snmf_jax.cli import main

from conftest import write_toy_result, write_toy_store


def _write(path, obj):
    path.write_text(json.dumps(obj))
    return str(path)


def test_cli_without_a_model(tmp_path):
    n, d = write_toy_store(tmp_path / "store")
    write_toy_result(tmp_path / "res", n, d)
    assert main(["interpret", "--features", str(tmp_path / "res"), "--activations",
                 str(tmp_path / "store"), "--out", str(tmp_path / "r.html"), "--model", "none",
                 "--contexts", "3",
                 "--descriptions", _write(tmp_path / "d.json", {"1": "desc one"})]) == 0
    page = (tmp_path / "r.html").read_text()
    assert "desc one" in page and '<input type="search"' in page


def test_cli_describes_features_with_an_llm(tmp_path, serve):
    """--describe asks the LLM once per feature for its contexts (no model: no
    promoted tokens, so no output-centric request); a given description wins."""
    n, d = write_toy_store(tmp_path / "store")
    write_toy_result(tmp_path / "res", n, d)
    srv = serve((200, "Reasoning.\nDescription: words with an x", 0))
    assert main(["interpret", "--features", str(tmp_path / "res"), "--activations",
                 str(tmp_path / "store"), "--out", str(tmp_path / "r.html"), "--model",
                 "none", "--contexts", "3", "--describe", "--llm-url", srv.url,
                 "--llm-model", "m", "--descriptions",
                 _write(tmp_path / "d.json", {"1": "given one"})]) == 0
    prompts = [r["messages"][0]["content"] for r in srv.requests]
    assert len(prompts) == 3  # features 0, 2 and 3
    assert all(re.search(r"1\. .*<<\s*w\d+x\d+>>", p) for p in prompts)  # peak token marked
    page = (tmp_path / "r.html").read_text()
    assert page.count("input: words with an x") == 3 and "given one" in page


def test_cli_errors_name_the_argument(tmp_path):
    n, d = write_toy_store(tmp_path / "store")
    write_toy_result(tmp_path / "res", n + 1, d)
    args = ["interpret", "--features", str(tmp_path / "res"), "--activations",
            str(tmp_path / "store"), "--out", str(tmp_path / "r.html"), "--model", "none"]
    with pytest.raises(ValueError, match="--features has codes for 61 tokens"):
        main(["--debug", *args])
    write_toy_result(tmp_path / "res", n, d)
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match="--tree: cannot read JSON"):
        main(["--debug", *args, "--tree", str(tmp_path / "bad.json")])
    with pytest.raises(ValueError, match="--layer 3 disagrees"):
        main(["--debug", *args, "--layer", "3"])
