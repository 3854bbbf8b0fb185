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

from snmf_jax.evaluate._calibrate import Logistic, fit_logistic, roc_auc
from snmf_jax.evaluate._detection import (Detection, concept_detection, detection_table,
                                          sentence_scores, split_documents)
from snmf_jax.evaluate._llm_client import LLMClient, LLMConfig, LLMError, LLMStats
from snmf_jax.evaluate._local_server import serve_gguf
from snmf_jax.evaluate._llm_judge import (LLMJudge, Rating, load_prompts, parse_description,
                                          parse_rating)
from snmf_jax.evaluate._minilm import (BertConfig, SentenceEmbedder, bert_hidden,
                                       mean_pool_normalize, minilm_dir)
from snmf_jax.evaluate._model_access import generate_texts, lm_logprob_fn
from snmf_jax.evaluate._steering import (PAPER_TARGETS, LLMSteeringJudge, OfflineJudge,
                                          ScoredRun, SteeringConfig, SteeringRun, SteeringSpec,
                                          feature_context_examples, run_records, score_steering,
                                          steering_generations, steering_summary,
                                          summary_markdown)
from snmf_jax.evaluate._describe import Description, as_description
from snmf_jax.evaluate._judge import (CONCEPT_FEATURES, concept_calibration_set,
                                      fit_concept_models, offline_judge)
from snmf_jax.evaluate._offline_judge import (FEATURES, ConceptJudge, FluencyJudge,
                                              FluencyReport, corrupt, harmonic_mean,
                                              text_features)

__all__ = [
    "Logistic", "fit_logistic", "roc_auc", "BertConfig", "SentenceEmbedder", "bert_hidden",
    "mean_pool_normalize", "minilm_dir", "generate_texts", "lm_logprob_fn", "FEATURES",
    "ConceptJudge", "FluencyJudge", "FluencyReport", "corrupt", "harmonic_mean",
    "text_features", "LLMClient", "LLMConfig", "LLMError", "LLMStats", "LLMJudge", "Rating",
    "load_prompts", "parse_description", "parse_rating", "serve_gguf", "Detection", "concept_detection",
    "detection_table", "sentence_scores", "split_documents", "PAPER_TARGETS",
    "LLMSteeringJudge", "OfflineJudge", "ScoredRun", "SteeringConfig", "SteeringRun",
    "SteeringSpec", "feature_context_examples", "run_records", "score_steering",
    "steering_generations", "steering_summary", "summary_markdown",
    "offline_judge", "Description", "as_description", "CONCEPT_FEATURES",
    "concept_calibration_set", "fit_concept_models",
]

# The per-feature protocol (the paper's causal evaluation; docs/evaluation/protocol.md).
from snmf_jax.evaluate._banks import (FeatureBank, FeatureDescription, describe_features,
                                      sae_bank, sample_features, snmf_bank)
from snmf_jax.evaluate._bootstrap import Interval, bootstrap_mean, paired_difference
from snmf_jax.evaluate._per_feature import (PER_FEATURE_TARGETS, MethodScores, PerFeatureConfig,
                                            PerFeatureRun, per_feature_diffmean,
                                            per_feature_generations, score_per_feature)
from snmf_jax.evaluate._per_feature_outputs import write_per_feature
from snmf_jax.evaluate._per_feature_stats import per_feature_summary

__all__ += [
    "FeatureBank", "FeatureDescription", "describe_features", "sae_bank", "sample_features",
    "snmf_bank", "Interval", "bootstrap_mean", "paired_difference", "PER_FEATURE_TARGETS",
    "MethodScores", "PerFeatureConfig", "PerFeatureRun", "per_feature_diffmean",
    "per_feature_generations", "score_per_feature", "write_per_feature", "per_feature_summary",
]
