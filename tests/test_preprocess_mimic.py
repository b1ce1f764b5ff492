"""MIMIC-IV-ECG preprocessing: signal chain, skip rules, batching, resumability (docs/preprocessing.md)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import wfdb
from scipy import signal as sps

from datasets.preprocess import mimic
from datasets.preprocess.signal import STANDARD_LEADS, SignalError, fill_nonfinite, mimic_chain

MIMIC_ORDER = ["I", "II", "III", "aVR", "aVF", "aVL", "V1", "V2", "V3", "V4", "V5", "V6"]


def _ecg_like(seed: int, n: int = 5000, fs: float = 500.0) -> np.ndarray:
    """(n, 12) smooth signal in mV with a different waveform per lead (so a lead swap is visible)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / fs
    base = np.stack([np.sin(2 * np.pi * (1.1 + 0.07 * k) * t + k) for k in range(12)], axis=1)
    return base * rng.uniform(0.5, 2.0, size=12) + 0.02 * rng.normal(size=(n, 12)) + 0.3


def _write(root: Path, rel: str, sig: np.ndarray, names: list[str], fs: float = 500.0) -> None:
    folder = root / Path(rel).parent
    folder.mkdir(parents=True, exist_ok=True)
    wfdb.wrsamp(
        Path(rel).name,
        fs=fs,
        units=["mV"] * len(names),
        sig_name=names,
        p_signal=sig,
        fmt=["16"] * len(names),
        adc_gain=[1000.0] * len(names),
        baseline=[0] * len(names),
        write_dir=str(folder),
    )


def _cohort(root: Path) -> dict[str, str]:
    """Synthetic MIMIC-like folder; returns {path: expected skip reason or ''}."""
    expected = {}
    rows = []
    for i in range(11):
        rel = f"files/p100/p1000{i:02d}/s{i}/{i}"
        sig, names, fs = _ecg_like(i), list(MIMIC_ORDER), 500.0
        reason = ""
        if i == 2:  # shuffled lead order: must be reordered by name
            perm = np.random.default_rng(2).permutation(12)
            sig, names = sig[:, perm], [names[p] for p in perm]
        elif i == 3:  # NaN runs (short and longer than the window)
            sig[1000:1003, 0] = np.nan
            sig[2000:2030, 7] = np.nan
        elif i == 5:
            fs, reason = 250.0, "wrong_fs"
        elif i == 6:
            sig[:, 4] = np.nan
            reason = "all_nan_lead"
        elif i == 8:
            names[9] = "X9"
            reason = "missing_leads"
        _write(root, rel, sig, names, fs)
        if i == 4:  # truncated .dat
            dat = root / (rel + ".dat")
            dat.write_bytes(dat.read_bytes()[:20000])
            reason = "unreadable"
        rows.append(
            {"subject_id": 1000 + i, "study_id": i, "file_name": i, "ecg_time": "2180-01-01", "path": rel}
        )
        expected[str(root / rel)] = reason
    with open(root / "record_list.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return expected


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("mimic_raw")
    return root, _cohort(root)


def _run(root: Path, out: Path, **kw) -> dict:
    kw = {"batch_size": 4, "num_workers": 2, **kw}
    argv = ["--dataset_path", str(root), "--output_path", str(out)]
    for k, v in kw.items():
        argv += [f"--{k}", str(v)]
    return mimic.main(argv)


def test_chain_matches_straightforward_scipy():
    rng = np.random.default_rng(0)
    raw = rng.normal(size=(12, 5000)).cumsum(axis=1) * 0.01
    perm = rng.permutation(12)
    names = [STANDARD_LEADS[p].upper() for p in perm]  # case-insensitive match
    got = mimic_chain(raw[perm].copy(), names)
    b, a = sps.butter(5, [0.67, 40.0], btype="bandpass", fs=100)
    want = sps.filtfilt(b, a, sps.resample(raw, 1000, axis=1), axis=1).astype(np.float32)
    assert got.shape == (12, 1000) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_fill_nonfinite_rules():
    x = np.arange(40, dtype=float)[None].repeat(2, 0)
    x[0, 20] = np.nan
    x[1, 10] = np.inf
    filled = fill_nonfinite(x)
    window = np.r_[14:20, 21:27].astype(float)
    assert filled[0, 20] == pytest.approx(window.mean())
    assert filled[1, 10] == pytest.approx(np.r_[4:10, 11:17].mean())
    long_run = np.ones((1, 100))
    long_run[0, 10:60] = np.nan
    assert np.isfinite(fill_nonfinite(long_run)).all()
    with pytest.raises(SignalError, match="all_nan_lead"):
        fill_nonfinite(np.full((2, 10), np.nan))


def test_mimic_pipeline_outputs_and_skips(cohort, tmp_path):
    root, expected = cohort
    summary = _run(root, tmp_path / "out")
    out = tmp_path / "out"
    n_ok = sum(1 for r in expected.values() if not r)
    assert summary["records_in"] == len(expected)
    assert summary["records_out"]["train"] + summary["records_out"]["val"] == n_ok
    assert summary["skipped"] == len(expected) - n_ok
    with open(out / "skipped_records.csv") as fh:
        got = {r["record"]: r["reason"] for r in csv.DictReader(fh)}
    assert got == {p: r for p, r in expected.items() if r}
    assert json.loads((out / "summary.json").read_text())["skipped_by_reason"]["wrong_fs"] == 1
    # every written row equals the chain applied to the record read by name
    batches = sorted(out.glob("batch_*"))
    assert [b.name for b in batches] == ["batch_0", "batch_1", "batch_2"]
    for b in batches:
        with open(b / "records.csv") as fh:
            for row in csv.DictReader(fh):
                arr = np.load(b / f"{row['split']}_data.npy", mmap_mode="r")[int(row["index"])]
                rec = wfdb.rdrecord(row["record"])
                np.testing.assert_array_equal(arr, mimic_chain(rec.p_signal.T, rec.sig_name))
                assert np.isfinite(arr).all()
    # the shuffled-lead record gives the same array as its data in standard order would
    rec2 = str(root / "files/p100/p100002/s2/2")
    sig, names = wfdb.rdrecord(rec2).p_signal.T, wfdb.rdrecord(rec2).sig_name
    std = sig[[names.index(n) for n in STANDARD_LEADS]]
    np.testing.assert_array_equal(mimic.process_record(rec2)[0], mimic_chain(std, list(STANDARD_LEADS)))


def test_resume_after_crash_is_identical(cohort, tmp_path, monkeypatch):
    root, _ = cohort
    fresh = tmp_path / "fresh"
    _run(root, fresh)
    out = tmp_path / "resumed"
    monkeypatch.setenv(mimic.ABORT_ENV, "6")  # batch_0 complete, batch_1 half-written
    with pytest.raises(mimic.SimulatedCrash):
        _run(root, out)
    assert (out / "batch_0" / "DONE.json").is_file()
    assert (out / "batch_1.tmp").is_dir() and not (out / "batch_1").exists()
    stamp = (out / "batch_0" / "DONE.json").stat().st_mtime_ns
    monkeypatch.delenv(mimic.ABORT_ENV)
    summary = _run(root, out)
    assert summary["batches_resumed"] == [0]
    assert (out / "batch_0" / "DONE.json").stat().st_mtime_ns == stamp
    assert not (out / "batch_1.tmp").exists()
    for f in sorted(fresh.glob("batch_*/*")):
        if f.name == "DONE.json":  # its stamp holds file times; everything else must be identical
            a, b = json.loads(f.read_text()), json.loads((out / f.relative_to(fresh)).read_text())
            assert {k: v for k, v in a.items() if k != "stamp"} == {
                k: v for k, v in b.items() if k != "stamp"
            }
            assert a["stamp"]["settings"] == b["stamp"]["settings"]
            continue
        assert f.read_bytes() == (out / f.relative_to(fresh)).read_bytes(), f
    with pytest.raises(SystemExit, match="other settings"):
        _run(root, out, seed=7)
    (out / "preprocess_config.json").write_text('{"batch_size": 2')  # damaged by hand
    with pytest.raises(SystemExit, match=rf"{out / 'preprocess_config.json'}: unreadable"):
        _run(root, out)


def test_batch_split_is_sklearns_train_test_split():
    from sklearn.model_selection import train_test_split

    x = np.arange(100100) * 3 + 7  # any per-record data: the split must pick the same rows, in the same order
    want_train, want_val = train_test_split(x, test_size=0.1, random_state=0)
    train, val = mimic.split_batch(100100)
    assert len(val) == 10010 and len(train) == 90090
    np.testing.assert_array_equal(x[train], want_train)
    np.testing.assert_array_equal(x[val], want_val)
    assert np.array_equal(mimic.split_batch(100100)[1], val)  # same random_state in every batch
    assert not np.array_equal(mimic.split_batch(100100, seed=1)[1], val)
    assert len(mimic.split_batch(3)[1]) == 1  # ceil(0.1 n)
    t, v = mimic.split_batch(1)  # train_test_split refuses one sample; it goes to train
    assert t.tolist() == [0] and v.size == 0


def test_written_rows_follow_train_test_split_per_batch(cohort, tmp_path):
    from sklearn.model_selection import train_test_split

    root, expected = cohort
    out = tmp_path / "out"
    _run(root, out)
    paths = list(expected)  # record_list.csv order
    for k in range(3):
        batch = paths[4 * k : 4 * k + 4]
        want = dict(zip(("train", "val"), train_test_split(batch, test_size=0.1, random_state=0)))
        with open(out / f"batch_{k}" / "records.csv") as fh:
            rows = list(csv.DictReader(fh))
        for split in ("train", "val"):
            got = [r["record"] for r in sorted(rows, key=lambda r: int(r["index"])) if r["split"] == split]
            assert got == [p for p in want[split] if not expected[p]], (k, split)  # skips leave a gap only


def test_max_records_and_single_process(cohort, tmp_path):
    root, expected = cohort
    summary = _run(root, tmp_path / "few", max_records=3, num_workers=1)
    assert summary["records_in"] == 3 and len(summary["batches"]) == 1
    assert summary["records_out"]["train"] + summary["records_out"]["val"] == 3
    assert np.load(tmp_path / "few/batch_0/train_data.npy").shape[1:] == (12, 1000)
