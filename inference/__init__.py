"""From ECG records to HeartLang embeddings: read raw records, preprocess like the training data, QRS-tokenise, encode.
May import modeling, datasets and utils; nothing in modeling or datasets imports this package."""

from .embed import POOLS, as_records, embed_ecg, embed_sentences, record_sentence, tokenize_ecgs
from .records import CHAINS, ECGRecord, find_records, prepare_record, read_record

__all__ = [
    "CHAINS",
    "ECGRecord",
    "POOLS",
    "as_records",
    "embed_ecg",
    "embed_sentences",
    "find_records",
    "prepare_record",
    "read_record",
    "record_sentence",
    "tokenize_ecgs",
]
