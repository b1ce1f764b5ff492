"""From ECG records to HeartLang embeddings: read raw records, preprocess like the training data, QRS-tokenise, encode.
May import modeling, datasets and utils; nothing in modeling or datasets imports this package."""

from .embed import POOLS, embed_ecg, embed_sentences, tokenize_ecgs

__all__ = ["POOLS", "embed_ecg", "embed_sentences", "tokenize_ecgs"]
