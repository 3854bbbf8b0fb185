"""Evaluation: the offline judge (MiniLM concept score, calibrated fluency), an
OpenAI-compatible LLM judge, and concept detection.

    judge = offline_judge(model)                            # the default judge, 0–2 scale
    judge.concept(texts, "cooking")                         # (n,); or example texts / tokens
    judge.fluency(texts)                                    # (n,)
    llm = LLMJudge(LLMClient(LLMConfig(base_url="http://127.0.0.1:8080/v1", model="m")))
    llm.concept(texts, "cooking"), llm.fluency(texts)       # Rating(score 0-2, ...)
    LLMSteeringJudge(llm)                                   # the same calls as offline_judge
    with serve_gguf("model.gguf") as url: ...               # a local llama.cpp server
    run = steering_generations(model, SteeringSpec("snmf", dirs, concepts), SteeringConfig())
    rows = steering_summary([score_steering(run, judge)])

Components of the offline judge: `SentenceEmbedder` (MiniLM), `FluencyJudge`,
`ConceptJudge` (a concept-set-relative score, kept for concept sets).
"""

# pylint: disable=g-importing-member

# The offline judge: MiniLM concept score, calibrated fluency (0-2 scale).
from snmf_jax.evaluate._calibrate import roc_auc
from snmf_jax.evaluate._judge import concept_calibration_set, offline_judge
from snmf_jax.evaluate._minilm import SentenceEmbedder, minilm_dir
from snmf_jax.evaluate._offline_judge import ConceptJudge, FluencyJudge, harmonic_mean
from snmf_jax.evaluate._steering import OfflineJudge

# An OpenAI-compatible LLM judge (a local llama.cpp server or any loopback URL).
from snmf_jax.evaluate._describe import as_description
from snmf_jax.evaluate._llm_client import LLMClient, LLMConfig, LLMError
from snmf_jax.evaluate._llm_judge import LLMJudge
from snmf_jax.evaluate._local_server import serve_gguf
from snmf_jax.evaluate._llm_judge import LLMSteeringJudge

# The model as a generator and a scorer.
from snmf_jax.evaluate._model_access import generate_texts, lm_logprob_fn

# Concept detection.
from snmf_jax.evaluate._detection import concept_detection, detection_table, split_documents

# The matching protocol (one direction per labelled concept; the second table).
from snmf_jax.evaluate._compare import CompareConfig, compare_methods
from snmf_jax.evaluate._outputs import save_comparisons
from snmf_jax.evaluate._steering import (PAPER_TARGETS, SteeringConfig, SteeringSpec,
                                          score_steering, steering_generations,
                                          steering_summary)

# The per-feature protocol (the paper's causal evaluation; docs/evaluation/protocol.md).
from snmf_jax.evaluate._banks import describe_features, sae_bank, snmf_bank
from snmf_jax.evaluate._per_feature import (PER_FEATURE_FIT, PER_FEATURE_TARGETS, PerFeatureConfig,
                                            per_feature_generations, score_per_feature)
from snmf_jax.evaluate._per_feature_outputs import save_per_feature
from snmf_jax.evaluate._per_feature_stats import per_feature_summary

__all__ = [
    # The offline judge
    "offline_judge", "OfflineJudge", "SentenceEmbedder", "minilm_dir", "ConceptJudge",
    "FluencyJudge", "concept_calibration_set", "harmonic_mean", "roc_auc",
    # The LLM judge
    "LLMClient", "LLMConfig", "LLMError", "LLMJudge", "serve_gguf", "LLMSteeringJudge",
    "as_description",
    # The model as a generator and a scorer
    "generate_texts", "lm_logprob_fn",
    # Concept detection
    "concept_detection", "detection_table", "split_documents",
    # The matching protocol
    "SteeringConfig", "SteeringSpec", "PAPER_TARGETS", "steering_generations",
    "score_steering", "steering_summary", "CompareConfig", "compare_methods",
    "save_comparisons",
    # The per-feature protocol
    "PerFeatureConfig", "PER_FEATURE_TARGETS", "PER_FEATURE_FIT", "snmf_bank", "sae_bank", "describe_features",
    "per_feature_generations", "score_per_feature", "per_feature_summary", "save_per_feature",
]
