"""Activations: export from a model, an on-disk chunked store, dataset readers.

    acts = export_activations(model, load_concepts(), layers=6)   # in memory
    store = export_activations(model, "corpus.jsonl", layers=6, out="runs/acts")
    for i in range(store.num_chunks):
        X = store.chunk(i)                                          # (rows, d)
"""

from snmf_jax._io import write_safetensors
from snmf_jax.activations._activations import Activations
from snmf_jax.activations._dataset import concept_children, load_concepts
from snmf_jax.activations._export import export_activations, length_buckets, tokenize_with_offsets
from snmf_jax.activations._readers import (read_concept_json, read_dataset, read_jsonl,
                                           read_text)
from snmf_jax.activations._store import ActivationStore, Provenance
from snmf_jax.activations._text import TextDataset, from_texts
from snmf_jax.activations._writer import StoreWriter

__all__ = [
    "ActivationStore", "Activations", "Provenance", "StoreWriter", "TextDataset",
    "concept_children", "export_activations", "from_texts", "length_buckets", "load_concepts",
    "read_concept_json", "read_dataset", "read_jsonl", "read_text", "tokenize_with_offsets",
    "write_safetensors",
]
