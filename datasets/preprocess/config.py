"""Typed settings of the offline pipeline steps (frozen dataclasses), built once from the argparse Namespace.

The entry point of each step (``main``) turns its parsed flags into one of these with ``from_args``; past that
point no function reads the Namespace. The CLI flags, their names and defaults stay in each step's
``get_args_parser`` (the original's spellings); a field has the name of its flag.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any


def _frozen(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


@dataclass(frozen=True)
class StepConfig:
    """Base of the step configs: :meth:`from_args` reads each field from the flag of the same name."""

    @classmethod
    def from_args(cls, args: argparse.Namespace | StepConfig):
        if isinstance(args, cls):
            return args
        names = [f.name for f in fields(cls)]
        return cls(**{n: _frozen(getattr(args, n)) for n in names if hasattr(args, n)})


@dataclass(frozen=True)
class MimicConfig(StepConfig):
    """``mimic_preprocess.py``: MIMIC-IV-ECG -> ``batch_k/{train,val}_data.npy``."""

    dataset_path: Path
    output_path: Path
    record_list: Path | None
    batch_size: int
    max_records: int | None
    num_workers: int
    val_fraction: float
    seed: int


@dataclass(frozen=True)
class PtbxlConfig(StepConfig):
    """``python -m datasets.preprocess.ptbxl``: PTB-XL -> ``<subset>/{split}_data.npy`` + labels."""

    dataset_path: Path
    output_path: Path
    sampling_rate: int
    subsets: tuple[str, ...]
    classes: str
    num_workers: int


@dataclass(frozen=True)
class DownstreamConfig(StepConfig):
    """CPSC2018 / CSN (``python -m datasets.preprocess.{cpsc2018,csn}``): the shared flags, then each
    source's own (``reference``: CPSC2018; ``classes_file`` / ``min_class_count``: CSN; None elsewhere)."""

    dataset_path: Path
    output_path: Path
    split_files: tuple[str, ...] | None
    paper_split_prefix: str | None
    fractions: tuple[float, ...]
    seed: int
    num_workers: int
    reference: Path | None = None
    classes_file: Path | None = None
    min_class_count: int | None = None
