"""HeartLang models (paper Sec. 3): config, backbone, quantizer, VQ-HBR, HeartLang, classifier, registry, checkpoints;
speed devices in accel/. May import utils only (never datasets, engine, inference); embeddings of records: inference/."""

from .backbone import SentenceBackbone
from .checkpoint import (
    LoadReport,
    checkpoint_kind,
    checkpoint_meta,
    compare_key_contract,
    load_checkpoint_file,
    load_pretrained_into_classifier,
    load_state_dict_strict,
    make_header,
    read_checkpoint,
    state_dict_spec,
)
from .config import BackboneConfig, ClassifierConfig, HeartLangConfig, VQHBRConfig
from .heartlang import HeartLang, HeartLangClassifier
from .hub import resolve_checkpoint
from .loading import CheckpointInfo, load_model, tokenizer_size
from .quantizer import NormEMAVectorQuantizer, kmeans
from .registry import MODEL_CONFIGS, create_model, get_config, list_models
from .transformer import Attention, FeedForward, Transformer
from .vqhbr import VQHBR

__all__ = [
    "Attention",
    "BackboneConfig",
    "CheckpointInfo",
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
    "checkpoint_kind",
    "checkpoint_meta",
    "compare_key_contract",
    "create_model",
    "get_config",
    "kmeans",
    "list_models",
    "load_checkpoint_file",
    "load_model",
    "load_pretrained_into_classifier",
    "load_state_dict_strict",
    "make_header",
    "read_checkpoint",
    "resolve_checkpoint",
    "state_dict_spec",
    "tokenizer_size",
]
