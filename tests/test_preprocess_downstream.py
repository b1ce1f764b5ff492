"""CPSC2018 and CSN preprocessing on the shared real records (docs/preprocessing.md)."""

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
    assert summary["label_origin"] == {"header_dx": 1} and summary["unmapped_dx_codes"] == {}
    assert summary["invalid_dx_codes"] == {"A0001": ["1234"]}  # not a SNOMED-CT number (6-18 digits)
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


# --- the paper's published split files (icbeb_*.csv, chapman_*.csv) -----------------------------------

ICBEB_CLASSES = ["AFIB", "VPC", "NORM", "1AVB", "CRBBB", "STE", "PAC", "CLBBB", "STD"]
# REFERENCE.csv numbers (1 Normal ... 9 STE) -> the icbeb column of the same diagnosis
REFERENCE_TO_ICBEB = {
    1: "NORM",
    2: "AFIB",
    3: "1AVB",
    4: "CLBBB",
    5: "CRBBB",
    6: "PAC",
    7: "VPC",
    8: "STD",
    9: "STE",
}


def _paper_files(shared_data, prefix):
    return [shared_data / "splits" / f"{prefix}_{s}.csv" for s in ("train", "val", "test")]


def _csv_rows(path, record_col):
    import csv
    from pathlib import Path

    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    return {Path(r[record_col]).stem: r for r in rows}


def test_published_split_files_are_read_as_they_are(shared_data):
    names, y, classes = read_split_csv(shared_data / "splits/icbeb_train.csv")
    assert len(names) == 4950 and classes == ICBEB_CLASSES and y.shape == (4950, 9)
    assert names[0] == "A4898" and y[0].tolist() == [0, 0, 0, 0, 1, 0, 1, 0, 0]  # CRBBB + PAC
    names, y, classes = read_split_csv(shared_data / "splits/chapman_train.csv")
    assert len(names) == 16546 and len(classes) == 38 and classes[:3] == ["AQW", "UW", "SR"]
    assert classes[-1] == "JEB" and names[0] == "JS08246"  # /chapman/WFDBRecords/08/089/JS08246.mat
    assert y[0].tolist() == [int(c == "TWC") for c in classes]  # diagnose "SB,TWC": only TWC is a column
    assert [len(read_split_csv(p)[0]) for p in _paper_files(shared_data, "chapman")] == [16546, 1860, 4620]


def test_split_file_errors_name_file_and_line(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("record,AF\nA0001,2\n")
    with pytest.raises(ValueError, match="bad.csv, line 2: label columns must be 0/1"):
        read_split_csv(bad)
    bad.write_text("ecg_path,age,diagnose,AF\n/x/JS1.mat,3,AF,yes\n")
    with pytest.raises(ValueError, match="line 2: label columns must be 0/1"):
        read_split_csv(bad)
    bad.write_text("record,AF\nA0001,1\nA0001,0\n")
    with pytest.raises(ValueError, match="record A0001 listed twice \\(lines 2 and 3\\)"):
        read_split_csv(bad)
    bad.write_text("record,AF\nA0001,1,0\n")
    with pytest.raises(ValueError, match="3 columns, the header has 2"):
        read_split_csv(bad)


def test_cpsc_with_the_paper_split_files(cpsc_out, shared_data, tmp_path):
    files = _paper_files(shared_data, "icbeb")
    out = tmp_path / "paper"
    argv = ["--dataset_path", str(shared_data / "cpsc2018"), "--output_path", str(out), "--num_workers", "2"]
    summary = cpsc2018.main(argv + ["--split_files", *map(str, files)])
    assert json.loads((out / "classes.json").read_text()) == ICBEB_CLASSES
    reference = {}
    with open(shared_data / "cpsc2018/icbeb2018/REFERENCE.csv") as fh:
        for line in fh.read().splitlines()[1:]:
            rec, *nums = line.split(",")
            reference[rec] = {REFERENCE_TO_ICBEB[int(n)] for n in nums if n}
    on_disk = {f"A{i:04d}" for i in range(1, 11)} | {f"A{i}" for i in range(1980, 1990)}
    total_listed = 0
    for split, path in zip(("train", "val", "test"), files):
        listed = _csv_rows(path, "filename")
        names, x, y = _rows(out, split)
        want = [n for n in listed if n in on_disk]  # file order
        assert names == want and x.shape == (len(want), 12, 1000)
        for n, row in zip(names, y):
            assert row.tolist() == [int(listed[n][c]) for c in ICBEB_CLASSES]  # the file's columns, in order
            assert {c for c, v in zip(ICBEB_CLASSES, row) if v} == reference[
                n
            ]  # and they agree with REFERENCE.csv
        # same signal as the run with our own split: the split changes nothing else
        old_x, _ = zip(*(_find(cpsc_out[0], n) for n in names)) if names else ((), ())
        np.testing.assert_array_equal(x, np.asarray(old_x).reshape(x.shape))
        rep = summary["split_files"][split]
        assert rep["format"] == "icbeb" and rep["listed"] == len(listed) and rep["found"] == len(want)
        assert rep["missing"] == len(listed) - len(want)
        total_listed += len(listed)
    assert [len(_rows(out, s)[0]) for s in ("train", "val", "test")] == [17, 1, 2]
    # listed records absent on disk are reported one by one, not silently dropped
    import csv

    with open(out / "skipped_records.csv", newline="") as fh:
        missing = [r["record"] for r in csv.DictReader(fh) if r["reason"] == "missing_file"]
    assert len(missing) == summary["skipped_by_reason"]["missing_file"] == total_listed - 20
    assert "A4898" in missing and "A1980" not in missing


def test_csn_with_the_paper_split_files(shared_data, tmp_path):
    files = _paper_files(shared_data, "chapman")
    out = tmp_path / "csn_paper"
    argv = ["--dataset_path", str(shared_data / "csn"), "--output_path", str(out), "--num_workers", "2"]
    summary = csn.main(argv + ["--split_files", *map(str, files)])
    classes = json.loads((out / "classes.json").read_text())
    assert len(classes) == 38 and classes == read_split_csv(files[0])[2]
    listed = _csv_rows(files[0], "ecg_path")
    names, x, y = _rows(out, "train")
    assert names == [
        n for n in listed if n in {"JS00666", *(f"JS200{i:02d}" for i in (1, 7, 8, 10, 11, 16, 18, 19))}
    ]
    assert len(names) == 9 and x.shape == (9, 12, 1000)
    for n, row in zip(names, y):
        assert row.tolist() == [int(listed[n][c]) for c in classes]
    assert [len(_rows(out, s)[0]) for s in ("val", "test")] == [0, 0]
    assert summary["split_files"]["train"]["missing"] == 16546 - 9
    assert summary["skipped_by_reason"]["not_in_split_files"] == 21 - 9
    # signal: the CSN chain of the record, as without split files
    raw = wfdb.rdrecord(str(shared_data / "csn/cinc2021/JS20001")).p_signal.T
    b, a = sps.butter(5, [0.67, 40.0], btype="bandpass", fs=100)
    want = sps.filtfilt(b, a, sps.resample(_minmax(raw), 1000, axis=1), axis=1)
    np.testing.assert_allclose(x[names.index("JS20001")], want, atol=1e-5)


def test_split_files_paper_resolves_checks_and_explains(shared_data, tmp_path, monkeypatch):
    from datasets.preprocess import splits

    monkeypatch.delenv(splits.PAPER_SPLITS_ENV, raising=False)
    monkeypatch.setattr(splits, "REPO_ROOT", tmp_path / "repo")  # no fetched copy, no shared folder beside it
    with pytest.raises(SystemExit) as err:
        splits.resolve_split_files(["paper"], "icbeb")
    msg = str(err.value)
    assert str(tmp_path / "repo/datasets/paper_splits") in msg and str(tmp_path / "shared/data/splits") in msg
    assert "scripts/fetch_paper_splits.sh" in msg and splits.PAPER_SPLITS_ENV in msg
    # the shared folder beside the repository is the last place looked in
    monkeypatch.setattr(splits, "REPO_ROOT", shared_data.parent.parent / "main")
    paths, source = splits.resolve_split_files(["paper"], "chapman")
    assert [p.name for p in paths] == ["chapman_train.csv", "chapman_val.csv", "chapman_test.csv"]
    assert "shared data" in source
    # $HEARTLANG_PAPER_SPLITS wins, and a changed file is refused by its SHA-256
    copy = tmp_path / "mine"
    shutil.copytree(shared_data / "splits", copy)
    monkeypatch.setenv(splits.PAPER_SPLITS_ENV, str(copy))
    assert splits.resolve_split_files(["paper"], "icbeb")[0][0] == copy / "icbeb_train.csv"
    (copy / "icbeb_val.csv").chmod(0o644)
    (copy / "icbeb_val.csv").write_text((copy / "icbeb_val.csv").read_text().replace("A2600", "A2601"))
    with pytest.raises(SystemExit, match="icbeb_val.csv is not the published file"):
        splits.resolve_split_files(["paper"], "icbeb")
    monkeypatch.setenv(splits.PAPER_SPLITS_ENV, str(tmp_path / "empty"))  # explicit: no fallback
    with pytest.raises(SystemExit, match="not found in\n  \\$HEARTLANG_PAPER_SPLITS"):
        splits.resolve_split_files(["paper"], "icbeb")
    with pytest.raises(SystemExit, match="TRAIN.csv VAL.csv TEST.csv or the word 'paper'"):
        splits.resolve_split_files(["a.csv", "b.csv"], "icbeb")
    with pytest.raises(SystemExit, match="no published paper split"):
        splits.resolve_split_files(["paper"], None)


def test_cpsc_split_files_paper_end_to_end(shared_data, tmp_path, monkeypatch):
    from datasets.preprocess import splits

    monkeypatch.setenv(splits.PAPER_SPLITS_ENV, str(shared_data / "splits"))
    out = tmp_path / "cpsc_paper"
    raw = tmp_path / "raw"
    raw.mkdir()
    for n in ("A1980", "A1982", "A1983"):  # train, val, test in the paper's split
        shutil.copy(shared_data / f"cpsc2018/icbeb2018/{n}.mat", raw / f"{n}.mat")
    summary = cpsc2018.main(["--dataset_path", str(raw), "--output_path", str(out), "--num_workers", "1",
                             "--split_files", "paper"])  # fmt: skip
    assert summary["split"].startswith("paper splits ($HEARTLANG_PAPER_SPLITS")
    assert {s: _rows(out, s)[0] for s in ("train", "val", "test")} == {
        "train": ["A1980"],
        "val": ["A1982"],
        "test": ["A1983"],
    }


def test_records_in_two_split_files_are_refused(shared_data, tmp_path):
    for s, names in (("train", ["A1980", "A1981"]), ("val", ["A1981"]), ("test", ["A1982"])):
        write_split_csv(tmp_path / f"{s}.csv", names, np.ones((len(names), 1), dtype=np.int64), ["X"])
    argv = ["--dataset_path", str(shared_data / "cpsc2018/icbeb2018"), "--output_path", str(tmp_path / "o"),
            "--num_workers", "1", "--split_files", *(str(tmp_path / f"{s}.csv") for s in ("train", "val", "test"))]  # fmt: skip
    with pytest.raises(SystemExit, match="record A1981 is listed in both train.csv and val.csv"):
        cpsc2018.main(argv)
