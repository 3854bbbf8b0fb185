"""Activations: export from a model, an on-disk chunked store, dataset readers.

    acts = export_activations(model, load_concepts(), layers=6)   # in memory
    store = export_activations(model, "corpus.jsonl", layers=6, out="runs/acts")
    for i in range(store.num_chunks):
        X = store.chunk(i)                                          # (rows, d)
"""

import importlib

# Public name -> private module, resolved lazily so that reading a store or a
# dataset does not import JAX.
_EXPORTS = {
    "export_activations": "_export",
    "length_buckets": "_export",
    "tokenize_with_offsets": "_export",
    "Activations": "_store",
    "ActivationStore": "_store",
    "StoreWriter": "_store",
    "Provenance": "_store",
    "write_safetensors": "_store",
    "TextDataset": "_readers",
    "from_texts": "_readers",
    "read_concept_json": "_readers",
    "read_jsonl": "_readers",
    "read_text": "_readers",
    "read_dataset": "_readers",
    "load_concepts": "_dataset",
    "concept_children": "_dataset",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        module = importlib.import_module(f"{__name__}.{_EXPORTS[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return __all__
