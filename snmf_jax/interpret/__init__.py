"""Interpretation: what activates a feature, what it writes, what it is made of.

    ctx = interpret.top_contexts(result.codes, acts)              # 25 per feature
    proj = interpret.vocab_projection(model, result.features, layer=6)
    overlap = interpret.neuron_overlap(result.features)
    assoc = interpret.label_association(result.codes, acts.labels, acts.label_names)
    tree = interpret.concept_tree(hierarchy, tokens)               # hierarchical SNMF
"""

# pylint: disable=g-importing-member

# What activates a feature.
from snmf_jax.interpret._contexts import top_contexts, top_rows
from snmf_jax.interpret._labels import label_association
from snmf_jax.interpret._summary import summarize_features

# What a feature writes.
from snmf_jax.interpret._vocab import vocab_logits, vocab_projection

# What a feature is made of (MLP neurons).
from snmf_jax.interpret._neurons import (composition_effects, feature_neurons,
                                         group_composition, neuron_overlap, shared_neurons)

# Concept trees of a hierarchy.
from snmf_jax.interpret._tree import (check_tree, concept_tree, format_tree, load_tree,
                                      save_tree, token_strings, top_tokens)

__all__ = [
    # What activates a feature
    "top_contexts", "top_rows", "label_association", "summarize_features",
    # What a feature writes
    "vocab_projection", "vocab_logits",
    # What a feature is made of
    "feature_neurons", "neuron_overlap", "shared_neurons", "group_composition",
    "composition_effects",
    # Concept trees
    "concept_tree", "check_tree", "format_tree", "save_tree", "load_tree", "token_strings",
    "top_tokens",
]
