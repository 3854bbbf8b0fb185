"""Evaluation: the offline judge (MiniLM concept score, calibrated fluency), an
OpenAI-compatible LLM judge, and concept detection.

    emb = SentenceEmbedder()                                # offline MiniLM
    concept = ConceptJudge(emb, {"cooking": [...], "astronomy": [...]})
    concept.score(texts, "cooking")                         # (n,) probabilities
    fluency = FluencyJudge(unsteered_texts, logprob_fn=lm_logprob_fn(model))
    fluency.score(texts)                                    # (n,) probabilities
"""

from snmf_jax.evaluate._calibrate import Logistic, fit_logistic, roc_auc
from snmf_jax.evaluate._minilm import (BertConfig, SentenceEmbedder, bert_hidden,
                                       mean_pool_normalize, minilm_dir)
from snmf_jax.evaluate._model_access import generate_texts, lm_logprob_fn
from snmf_jax.evaluate._offline_judge import (FEATURES, ConceptJudge, FluencyJudge,
                                              FluencyReport, corrupt, harmonic_mean,
                                              text_features)

__all__ = [
    "Logistic", "fit_logistic", "roc_auc", "BertConfig", "SentenceEmbedder", "bert_hidden",
    "mean_pool_normalize", "minilm_dir", "generate_texts", "lm_logprob_fn", "FEATURES",
    "ConceptJudge", "FluencyJudge", "FluencyReport", "corrupt", "harmonic_mean",
    "text_features",
]
