"""PTB-XL preprocessing on the shared 302 labelled records (Strodthoff protocol, docs/preprocessing.md)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import wfdb
from scipy import signal as sps

from datasets.preprocess import ptbxl


@pytest.fixture(scope="module")
def ptbxl_root(shared_data, tmp_path_factory):
    """A PTB-XL folder: the shared records plus one database row whose file is missing on disk."""
    src = shared_data / "ptbxl"
    root = tmp_path_factory.mktemp("ptbxl_raw")
    (root / "records100").symlink_to(src / "records100")
    (root / "scp_statements.csv").write_bytes((src / "scp_statements.csv").read_bytes())
    db = pd.read_csv(src / "ptbxl_database.csv")
    ghost = db.iloc[[0]].copy()
    ghost["ecg_id"] = 99999
    ghost["filename_lr"] = "records100/99000/99999_lr"
    ghost["filename_hr"] = "records500/99000/99999_hr"
    pd.concat([db, ghost]).to_csv(root / "ptbxl_database.csv", index=False)
    return root


@pytest.fixture(scope="module")
def processed(ptbxl_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("ptbxl_out")
    summary = ptbxl.main(["--dataset_path", str(ptbxl_root), "--output_path", str(out), "--num_workers", "2"])
    return out, summary


def _row(out, subset, ecg_id):
    for split in ("train", "val", "test"):
        ids = np.load(out / subset / f"{split}_ecg_ids.npy")
        if ecg_id in ids:
            i = int(np.flatnonzero(ids == ecg_id)[0])
            classes = json.loads((out / subset / "classes.json").read_text())
            y = np.load(out / subset / f"{split}_labels.npy")[i]
            return split, {c for c, v in zip(classes, y) if v}
    return None, None


def test_missing_file_is_reported(processed):
    out, summary = processed
    assert summary["records_in"] == 303 and summary["records_read"] == 302
    assert summary["records_on_disk_without_row"] == 1569 - 302
    assert summary["skipped_by_reason"] == {"missing_file": 1}
    assert "99999" in (out / "skipped_records.csv").read_text()


@pytest.mark.parametrize(
    "ecg_id, split, labels",
    [
        (39, "val", {"MI", "STTC"}),  # IMI 15 %, LNGQT, NST_, DIG: likelihood does not matter
        (102, "train", {"CD", "STTC"}),  # ISCAL, 1AVB
        (138, "train", {"HYP"}),  # LVH
        (162, "test", {"CD", "HYP", "MI", "STTC"}),  # ASMI, LAFB, LVH, ISC_
        (17, None, None),  # AFLT, ABQRS, AFIB: no diagnostic code -> dropped
    ],
)
def test_superdiagnostic_by_hand(processed, ecg_id, split, labels):
    assert _row(processed[0], "superdiagnostic", ecg_id) == (split, labels)


def test_other_label_sets_by_hand(processed):
    out, _ = processed
    assert _row(out, "rhythm", 17) == ("val", {"AFIB", "AFLT"})
    assert _row(out, "form", 17) == ("val", {"ABQRS"})
    assert _row(out, "subdiagnostic", 102) == ("train", {"_AVB", "ISCA"})
    assert _row(out, "all", 39) == ("val", {"IMI", "LNGQT", "NST_", "DIG", "ABQRS", "SR"})
    classes = json.loads((out / "superdiagnostic" / "classes.json").read_text())
    assert classes == ["CD", "HYP", "MI", "NORM", "STTC"]


def test_folds_order_and_shapes(processed, shared_data):
    out, summary = processed
    db = pd.read_csv(shared_data / "ptbxl" / "ptbxl_database.csv", index_col="ecg_id")
    for subset in ptbxl.SUBSETS:
        n = 0
        for split, folds in ptbxl.FOLDS.items():
            ids = np.load(out / subset / f"{split}_ecg_ids.npy")
            assert np.all(np.diff(ids) > 0), "rows must stay in ecg_id order"
            assert set(db.loc[ids, "strat_fold"]) <= set(folds)
            x = np.load(out / subset / f"{split}_data.npy", mmap_mode="r")
            y = np.load(out / subset / f"{split}_labels.npy")
            assert x.shape == (len(ids), 12, 1000) and x.dtype == np.float32
            assert y.shape[0] == len(ids) and (y.sum(axis=1) > 0).all()
            n += len(ids)
        assert n == 302 - summary["subsets"][subset]["dropped_without_label"]
    assert summary["subsets"]["all"]["records_out"] == {"train": 212, "val": 55, "test": 35}


def test_scaler_fitted_on_train_only(processed, ptbxl_root):
    out, _ = processed
    sub = out / "superdiagnostic"
    scaler = json.loads((sub / "scaler.json").read_text())
    raw = {}
    for split in ("train", "val", "test"):
        ids = np.load(sub / f"{split}_ecg_ids.npy")
        raw[split] = np.stack(
            [wfdb.rdsamp(str(ptbxl_root / f"records100/{i // 1000 * 1000:05d}/{i:05d}_lr"))[0].T for i in ids]
        )
    # raw signals are held as float32 before fitting: relative error ~1e-7 of a float64 fit
    assert scaler["mean"] == pytest.approx(raw["train"].mean(), rel=1e-6)
    assert scaler["std"] == pytest.approx(raw["train"].std(), rel=1e-6)
    assert scaler["mean"] != pytest.approx(np.concatenate(list(raw.values())).mean(), rel=1e-3)
    train = np.load(sub / "train_data.npy")
    assert abs(train.mean()) < 1e-5 and train.std() == pytest.approx(1.0, rel=1e-4)
    test = np.load(sub / "test_data.npy")
    np.testing.assert_allclose(
        test, (raw["test"] - raw["train"].mean()) / raw["train"].std(), rtol=1e-5, atol=1e-5
    )
    assert abs(test.mean()) > 1e-4  # fitted on train, so the test split is not exactly centred


def test_500hz_records_are_resampled(ptbxl_root, shared_data, tmp_path):
    (ptbxl_root / "records500").symlink_to(shared_data / "ptbxl" / "records500")
    out = tmp_path / "hr"
    argv = ["--dataset_path", str(ptbxl_root), "--output_path", str(out), "--sampling_rate", "500"]
    summary = ptbxl.main(argv + ["--subsets", "superdiagnostic", "--num_workers", "2"])
    db = pd.read_csv(shared_data / "ptbxl" / "ptbxl_database.csv")
    n_hr = sum((shared_data / "ptbxl" / f"{f}.hea").is_file() for f in db["filename_hr"])
    assert summary["records_read"] == n_hr
    assert summary["skipped_by_reason"] == {"missing_file": 303 - n_hr}
    sub = out / "superdiagnostic"
    scaler = json.loads((sub / "scaler.json").read_text())
    ids = np.load(sub / "train_ecg_ids.npy")
    raw = wfdb.rdsamp(str(ptbxl_root / f"records500/00000/{ids[0]:05d}_hr"))[0].T
    want = (sps.resample(raw, 1000, axis=1) - scaler["mean"]) / scaler["std"]
    np.testing.assert_allclose(np.load(sub / "train_data.npy")[0], want, rtol=1e-5, atol=1e-5)
