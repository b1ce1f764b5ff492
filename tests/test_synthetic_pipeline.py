"""The synthetic cohort goes through the real preprocessing path (datasets/preprocess) unchanged."""

from __future__ import annotations

import json

import numpy as np
import pytest

from datasets.synthetic.cohort import generate_mimic_like, generate_ptbxl_like


def test_ptbxl_preprocessing_reads_the_synthetic_cohort(tmp_path):
    ptbxl = pytest.importorskip("datasets.preprocess.ptbxl")
    generate_ptbxl_like(tmp_path / "raw", 30, seed=0, num_workers=1)
    argv = ["--dataset_path", str(tmp_path / "raw"), "--output_path", str(tmp_path / "out")]
    summary = ptbxl.main([*argv, "--subsets", "superdiagnostic", "rhythm", "--num_workers", "1"])
    assert summary["records_read"] == 30 and summary["skipped"] == 0
    sub = tmp_path / "out" / "superdiagnostic"
    assert json.loads((sub / "classes.json").read_text())  # written next to the arrays
    x, y = np.load(sub / "train_data.npy"), np.load(sub / "train_labels.npy")
    assert x.shape[0] == y.shape[0] > 0 and y.shape[1] == 5 and np.isfinite(x).all()


def test_mimic_preprocessing_reads_the_synthetic_cohort_with_nans(tmp_path):
    mimic = pytest.importorskip("datasets.preprocess.mimic")
    generate_mimic_like(tmp_path / "raw", 10, seed=0, num_workers=1, nan_fraction=0.5)
    summary = mimic.main(["--dataset_path", str(tmp_path / "raw"), "--output_path", str(tmp_path / "out")])
    assert summary["skipped"] == 0
    assert sum(summary["records_out"].values()) == 10
    train = np.load(tmp_path / "out" / "batch_0" / "train_data.npy")
    assert train.shape[1:] == (12, 1000) and np.isfinite(train).all()
