"""Interpretation: what activates a feature and what it writes."""

from snmf_jax.interpret._features import (FeatureSummary, summarize_features, top_rows,
                                          vocab_projection)

__all__ = ["FeatureSummary", "summarize_features", "top_rows", "vocab_projection"]
