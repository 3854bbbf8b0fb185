"""Activations: export from a model, an on-disk chunked store, dataset readers.

    acts = export_activations(model, load_concepts(), layers=6)   # in memory
    store = export_activations(model, "corpus.jsonl", layers=6, out="runs/acts")
    for i in range(store.num_chunks):
        X = store.chunk(i)                                          # (rows, d)
"""

# pylint: disable=g-importing-member

# Text in: datasets and the bundled concept sentences.
from snmf_jax.activations._dataset import load_concepts
from snmf_jax.activations._readers import load_dataset
from snmf_jax.activations._text import TextDataset, from_texts

# Activations out: in memory, or a chunked store on disk.
from snmf_jax.activations._activations import Activations
from snmf_jax.activations._export import export_activations
from snmf_jax.activations._store import ActivationStore
from snmf_jax.activations._writer import StoreWriter

__all__ = [
    # Text in
    "TextDataset", "from_texts", "load_dataset", "load_concepts",
    # Activations out
    "export_activations", "Activations", "ActivationStore", "StoreWriter",
]
