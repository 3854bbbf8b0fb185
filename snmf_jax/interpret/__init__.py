"""Interpretation: what activates a feature and what it writes."""

from snmf_jax.interpret._features import (FeatureSummary, summarize_features, top_rows,
                                          vocab_projection)
from snmf_jax.interpret._tree import (concept_tree, format_tree, neuron_reuse, token_strings,
                                      top_tokens, check_tree, save_tree, load_tree)

__all__ = ["FeatureSummary", "summarize_features", "top_rows", "vocab_projection"]
__all__ += ["concept_tree", "format_tree", "neuron_reuse", "token_strings", "top_tokens",
            "check_tree", "save_tree", "load_tree"]
