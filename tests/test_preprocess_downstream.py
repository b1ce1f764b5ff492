"""CPSC2018 and CSN preprocessing on the shared real records (DESIGN.md section 1)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import wfdb
from scipy import signal as sps
from scipy.io import loadmat

from datasets.preprocess import cpsc2018, csn
from datasets.preprocess.records import parse_dx
from datasets.preprocess.splits import read_split_csv, write_split_csv


def _minmax(x):
    return (x - x.min()) / (x.max() - x.min()) * 6.0 - 3.0


def _rows(out, split):
    names = json.loads((out / f"{split}_records.json").read_text())
    return names, np.load(out / f"{split}_data.npy"), np.load(out / f"{split}_labels.npy")


def _find(out, name):
    classes = json.loads((out / "classes.json").read_text())
    for split in ("train", "val", "test"):
        names, x, y = _rows(out, split)
        if name in names:
            i = names.index(name)
            return x[i], {c for c, v in zip(classes, y[i]) if v}
    raise KeyError(name)


@pytest.fixture(scope="module")
def cpsc_out(shared_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("cpsc_out")
    summary = cpsc2018.main(
        ["--dataset_path", str(shared_data / "cpsc2018"), "--output_path", str(out), "--num_workers", "2"]
    )
    return out, summary


def test_cpsc_both_formats_with_reference_labels(cpsc_out, shared_data):
    out, summary = cpsc_out
    assert summary["records_in"] == 20 and sum(summary["records_out"].values()) == 20
    assert summary["label_origin"] == {"reference_csv": 20}  # the shared CinC 2020 copy has blank Dx lines
    assert json.loads((out / "classes.json").read_text()) == list(cpsc2018.CPSC_CLASSES)
    # REFERENCE.csv: A0001 -> 5 (RBBB), A0002 -> 1 (Normal), A1980 -> 6 (PAC), A1981 -> 8 (STD)
    wf, labels = _find(out, "A0001")
    assert labels == {"RBBB"} and _find(out, "A0002")[1] == {"Normal"}
    mat, labels = _find(out, "A1980")
    assert labels == {"PAC"} and _find(out, "A1981")[1] == {"STD"}
    # independent computation: first 2500 samples, zero-pad to 5000, min-max [-3, 3], resample 1000
    raw = wfdb.rdrecord(str(shared_data / "cpsc2018/cinc2020/A0001")).p_signal.T
    want = sps.resample(_minmax(np.pad(raw[:, :2500], ((0, 0), (0, 2500)))), 1000, axis=1)
    np.testing.assert_allclose(wf, want, rtol=1e-5, atol=1e-5)
    raw = loadmat(str(shared_data / "cpsc2018/icbeb2018/A1980.mat"))["ECG"][0][0][2]
    want = sps.resample(_minmax(np.pad(raw[:, :2500], ((0, 0), (0, 2500)))), 1000, axis=1)
    np.testing.assert_allclose(mat, want, rtol=1e-5, atol=1e-5)


def test_cpsc_labels_from_header_dx(shared_data, tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    shutil.copy(shared_data / "cpsc2018/cinc2020/A0001.mat", raw / "A0001.mat")
    hea = (
        (shared_data / "cpsc2018/cinc2020/A0001.hea")
        .read_text()
        .replace("#Dx: ", "#Dx: 164889003,59118001,1234")
    )
    (raw / "A0001.hea").write_text(hea)
    shutil.copy(shared_data / "cpsc2018/cinc2020/A0002.hea", raw / "A0002.hea")  # blank Dx, no reference
    shutil.copy(shared_data / "cpsc2018/cinc2020/A0002.mat", raw / "A0002.mat")
    out = tmp_path / "out"
    summary = cpsc2018.main(["--dataset_path", str(raw), "--output_path", str(out), "--num_workers", "1"])
    assert summary["label_origin"] == {"header_dx": 1} and summary["unmapped_dx_codes"] == {"1234": 1}
    assert summary["skipped_by_reason"] == {"no_label": 1}
    assert _find(out, "A0001")[1] == {"AF", "RBBB"}


def test_cpsc_published_split_files_reproduce_the_run(cpsc_out, shared_data, tmp_path):
    out, _ = cpsc_out
    files = []
    for split in ("train", "val", "test"):
        names, y, classes = read_split_csv(out / "splits" / f"{split}.csv")
        if split == "test":  # published files may list records we do not have
            names, y = names + ["A9999"], np.vstack([y, np.eye(1, len(classes), 0, dtype=np.int64)])
        files.append(tmp_path / f"{split}.csv")
        write_split_csv(files[-1], names, y, classes)
    out2 = tmp_path / "again"
    argv = ["--dataset_path", str(shared_data / "cpsc2018"), "--output_path", str(out2), "--num_workers", "1"]
    summary = cpsc2018.main(argv + ["--split_files", *map(str, files)])
    assert summary["skipped_by_reason"] == {"missing_file": 1}
    for split in ("train", "val", "test"):
        for a, b in zip(_rows(out, split), _rows(out2, split)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize(
    "lines, codes",
    [
        (["#Age: 28", "#Dx: 427084000"], ["427084000"]),
        (
            ["# Age: 84", "# Dx: 284470004,427084000,698252002,55930002"],
            ["284470004", "427084000", "698252002", "55930002"],
        ),
        (["#Dx: ", "#Rx: Unknown"], []),
        (["Age: 50"], []),
    ],
)
def test_dx_parsing(lines, codes):
    assert parse_dx(lines) == codes


def test_csn_codes_chain_and_class_file(shared_data, tmp_path):
    root = shared_data / "csn"
    out = tmp_path / "csn"
    summary = csn.main(["--dataset_path", str(root), "--output_path", str(out), "--num_workers", "2"])
    assert summary["records_in"] == 21 and sum(summary["records_out"].values()) == 21
    classes = json.loads((out / "classes.json").read_text())
    assert classes == sorted(summary["code_counts"]) and "427084000" in classes
    x, labels = _find(out, "JS20000")
    assert labels == {"284470004", "427084000", "698252002", "55930002"}
    raw = wfdb.rdrecord(str(root / "cinc2021/JS20000")).p_signal.T
    b, a = sps.butter(5, [0.67, 40.0], btype="bandpass", fs=100)
    np.testing.assert_allclose(
        x, sps.filtfilt(b, a, sps.resample(_minmax(raw), 1000, axis=1), axis=1), atol=1e-5
    )
    assert json.loads((out / "class_names.json").read_text())["427084000"].startswith("ST ")
    # a class list restricts the columns; records left without a label are skipped
    (tmp_path / "classes.txt").write_text("427084000\n426177001\n")
    out2 = tmp_path / "csn2"
    s2 = csn.main(["--dataset_path", str(root), "--output_path", str(out2), "--num_workers", "1",
                   "--classes_file", str(tmp_path / "classes.txt")])  # fmt: skip
    assert json.loads((out2 / "classes.json").read_text()) == ["427084000", "426177001"]
    n_with = sum(
        bool({"427084000", "426177001"} & set(parse_dx(wfdb.rdheader(str(h.with_suffix(""))).comments)))
        for h in (root / "cinc2021").glob("*.hea")
    )
    assert sum(s2["records_out"].values()) == n_with < 21
    assert s2["skipped_by_reason"] == {"no_label": 21 - n_with}
    assert _find(out2, "JS20000")[1] == {"427084000"}
