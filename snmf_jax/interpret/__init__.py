"""Interpretation: what activates a feature, what it writes, what it is made of.

    ctx = interpret.top_contexts(result.codes, acts)              # 25 per feature
    proj = interpret.vocab_projection(model, result.features, layer=6)
    overlap = interpret.neuron_overlap(result.features)
    assoc = interpret.label_association(result.codes, acts.labels, acts.label_names)
    tree = interpret.concept_tree(hierarchy, tokens)               # hierarchical SNMF
"""

from snmf_jax.interpret._contexts import Context, top_contexts, top_rows
from snmf_jax.interpret._labels import LabelAssociation, label_association
from snmf_jax.interpret._neurons import (CompositionEffects, GroupComposition,
                                         composition_effects, feature_neurons,
                                         group_composition, neuron_overlap, shared_neurons)
from snmf_jax.interpret._tree import (check_tree, concept_tree, format_tree, load_tree,
                                      save_tree, token_strings, top_tokens)
from snmf_jax.interpret._summary import FeatureSummary, summarize_features
from snmf_jax.interpret._vocab import VocabProjection, vocab_logits, vocab_projection

__all__ = [
    "Context", "top_contexts", "top_rows",
    "LabelAssociation", "label_association",
    "CompositionEffects", "GroupComposition", "composition_effects", "feature_neurons",
    "group_composition", "neuron_overlap", "shared_neurons",
    "FeatureSummary", "summarize_features",
    "VocabProjection", "vocab_logits", "vocab_projection",
    "check_tree", "concept_tree", "format_tree", "load_tree", "save_tree",
    "token_strings", "top_tokens",
]
