"""`snmf-jax interpret` on a small synthetic store (no model: no vocabulary projection)."""

import json
import re

import numpy as np
import pytest

from snmf_jax.activations import StoreWriter
from snmf_jax.cli import main
from snmf_jax.factorize import SNMFResult

PROV = {"doc_ids": ("int32", ()), "positions": ("int32", ()), "token_ids": ("int32", ()),
        "offsets": ("int32", (2,)), "labels": ("int32", ())}


def _store(path, n_docs=10, per_doc=6, d=8):
    texts = [" ".join(f"w{i}x{j}" for j in range(per_doc)) for i in range(n_docs)]
    offs = []
    for t in texts:
        pos = 0
        for w in t.split(" "):
            offs.append((pos, pos + len(w)))
            pos += len(w) + 1
    n = n_docs * per_doc
    w = StoreWriter(path, layers=(2,), d=d, chunk_rows=16, n_rows=n, settings={"t": 1},
                    provenance=PROV, info={"model": "", "site": "mlp_hidden"},
                    documents={"texts": texts, "labels": None, "label_names": ["a", "b"]})
    w.append({2: np.random.default_rng(0).standard_normal((n, d)).astype(np.float32)},
             {"doc_ids": np.repeat(np.arange(n_docs), per_doc).astype(np.int32),
              "positions": np.tile(np.arange(per_doc), n_docs).astype(np.int32),
              "token_ids": np.arange(n, dtype=np.int32) % 5,
              "offsets": np.asarray(offs, np.int32),
              "labels": (np.repeat(np.arange(n_docs), per_doc) % 2).astype(np.int32)})
    w.finish()
    return n, d


def _result(path, n, d, K=4):
    rng = np.random.default_rng(1)
    SNMFResult(features=rng.standard_normal((K, d)).astype(np.float32),
               codes=rng.uniform(size=(n, K)).astype(np.float32), losses=np.geomspace(3, 1, 5),
               best_iter=5, converged=True, settings={}, metadata={"layer": 2}).save(path)


def _write(path, obj):
    path.write_text(json.dumps(obj))
    return str(path)


def test_cli_without_a_model(tmp_path):
    n, d = _store(tmp_path / "store")
    _result(tmp_path / "res", n, d)
    assert main(["interpret", "--features", str(tmp_path / "res"), "--activations",
                 str(tmp_path / "store"), "--out", str(tmp_path / "r.html"), "--model", "none",
                 "--contexts", "3",
                 "--descriptions", _write(tmp_path / "d.json", {"1": "desc one"})]) == 0
    page = (tmp_path / "r.html").read_text()
    assert "desc one" in page and '<input type="search"' in page


def test_cli_describes_features_with_an_llm(tmp_path):
    """--describe asks the LLM once per feature for its contexts (no model: no
    promoted tokens, so no output-centric request); a given description wins."""
    from tests.test_judge_llm import Server
    n, d = _store(tmp_path / "store")
    _result(tmp_path / "res", n, d)
    srv = Server([(200, "Reasoning.\nDescription: words with an x", 0)])
    try:
        assert main(["interpret", "--features", str(tmp_path / "res"), "--activations",
                     str(tmp_path / "store"), "--out", str(tmp_path / "r.html"), "--model",
                     "none", "--contexts", "3", "--describe", "--llm-url", srv.url,
                     "--llm-model", "m", "--descriptions",
                     _write(tmp_path / "d.json", {"1": "given one"})]) == 0
        prompts = [r["messages"][0]["content"] for r in srv.requests]
    finally:
        srv.close()
    assert len(prompts) == 3  # features 0, 2 and 3
    assert all(re.search(r"1\. .*<<\s*w\d+x\d+>>", p) for p in prompts)  # peak token marked
    page = (tmp_path / "r.html").read_text()
    assert page.count("input: words with an x") == 3 and "given one" in page


def test_cli_errors_name_the_argument(tmp_path):
    n, d = _store(tmp_path / "store")
    _result(tmp_path / "res", n + 1, d)
    args = ["interpret", "--features", str(tmp_path / "res"), "--activations",
            str(tmp_path / "store"), "--out", str(tmp_path / "r.html"), "--model", "none"]
    with pytest.raises(ValueError, match="--features has codes for 61 tokens"):
        main(["--debug", *args])
    _result(tmp_path / "res", n, d)
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match="--tree: cannot read JSON"):
        main(["--debug", *args, "--tree", str(tmp_path / "bad.json")])
    with pytest.raises(ValueError, match="--layer 3 disagrees"):
        main(["--debug", *args, "--layer", "3"])
