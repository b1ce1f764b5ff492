"""HeartLang models (paper Sec. 3): one transformer, one sentence embedding, VQ-HBR, HeartLang, classifier."""

from .api import load_pretrained  # noqa: F401  (checkpoint -> model for feature extraction; embeddings: inference/)
from .checkpoint import (
    LoadReport,
    compare_key_contract,
    load_checkpoint_file,
    load_pretrained_into_classifier,
    load_state_dict_strict,
    state_dict_spec,
)
from .config import ClassifierConfig, HeartLangConfig, VQHBRConfig
from .embedding import SentenceBackbone
from .heartlang import HeartLang, HeartLangClassifier
from .quantizer import NormEMAVectorQuantizer, kmeans
from .registry import MODEL_CONFIGS, create_model, get_config, list_models
from .transformer import Attention, FeedForward, Transformer
from .vqhbr import VQHBR

__all__ = [
    "Attention",
    "ClassifierConfig",
    "FeedForward",
    "HeartLang",
    "HeartLangClassifier",
    "HeartLangConfig",
    "LoadReport",
    "MODEL_CONFIGS",
    "NormEMAVectorQuantizer",
    "SentenceBackbone",
    "Transformer",
    "VQHBR",
    "VQHBRConfig",
    "compare_key_contract",
    "create_model",
    "get_config",
    "kmeans",
    "list_models",
    "load_checkpoint_file",
    "load_pretrained_into_classifier",
    "load_state_dict_strict",
    "state_dict_spec",
]
