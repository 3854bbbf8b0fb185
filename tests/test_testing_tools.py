"""snmf_jax.testing: the library never imports it, and the properties tests rely on hold."""

from pathlib import Path

import numpy as np
import pytest

import snmf_jax
from snmf_jax import testing


def test_no_library_module_imports_the_test_tooling():
    root = Path(snmf_jax.__file__).parent
    names = ("snmf_jax.testing", "from snmf_jax import testing")
    users = [str(p.relative_to(root)) for p in root.rglob("*.py")
             if "testing" not in p.relative_to(root).parts
             and any(n in p.read_text(encoding="utf-8") for n in names)]
    assert users == []


def test_tiny_model_is_deterministic_in_its_seed_and_scales_the_unembedding():
    a, b = testing.tiny_model(seed=3), testing.tiny_model(seed=3, logit_scale=3.0)
    ua, ub = (np.asarray(m.params["unembed"]["kernel"]) for m in (a, b))
    np.testing.assert_array_equal(ub, 3.0 * ua)
    np.testing.assert_array_equal(np.asarray(a.params["embed"]),
                                  np.asarray(b.params["embed"]))
    with pytest.raises(ValueError, match="tie_embeddings=False"):
        testing.tiny_model(tie_embeddings=True, logit_scale=3.0)


def test_tiny_gemma_alternates_sliding_and_full_layers():
    cfg = testing.tiny_config("gemma3", n_layers=3)
    assert cfg.layer_types == ("sliding", "full", "sliding") and cfg.sliding_window == 4
    assert testing.tiny_config("llama").layer_types == ()


def test_invertible_tokenizer_round_trips_and_char_ids_fit_the_vocabulary():
    tok = testing.InvertibleTokenizer()
    text = "the 3 cats sat"
    assert tok.decode(tok.encode(text)) == text
    ids = testing.CharTokenizer().encode("".join(map(chr, range(32, 1000))))
    assert max(ids) < testing.tiny_config().vocab_size
