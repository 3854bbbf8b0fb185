"""Test tooling: a tiny random model, stand-in tokenizers and planted data.

For the package's own tests (tests/conftest.py builds its fixtures from these)
and for tests of code built on snmf_jax. Nothing in the library imports this
subpackage, and it is not part of `snmf_jax`'s top-level namespace:

    from snmf_jax.testing import tiny_model, CharTokenizer
    model = tiny_model(tokenizer=CharTokenizer())  # 2-layer llama, d_mlp 48

The weights are random (`models.init_params`), so a tiny model's outputs mean
nothing; they are deterministic in `seed`, and every program it compiles is a
few milliseconds of work.
"""

from snmf_jax.testing._data import low_rank_data
from snmf_jax.testing._models import tiny_config, tiny_model
from snmf_jax.testing._tokenizers import (WORDS, CharTokenizer, InvertibleTokenizer,
                                          word_texts, word_tokenizer, write_word_level_json)

__all__ = ["tiny_config", "tiny_model", "CharTokenizer", "InvertibleTokenizer", "WORDS",
           "word_tokenizer", "word_texts", "write_word_level_json", "low_rank_data"]
