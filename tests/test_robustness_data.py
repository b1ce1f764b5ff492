"""Hostile inputs for the data stages (classes 2, 3 and 5 of docs/robustness.md).

Each test is one case: a bad input given to one stage, and the exact outcome asserted - refused with a
message naming the cause, redone with correct outputs, or reported and skipped with everything else
intact. ``@case(cls, stage, outcome)`` tags it; `python -m benchmarks robustness --data_only` counts the cases per class.
Data: the synthetic cohort writers and tiny hand-made WFDB records in tmp_path (about 20 s on 2 cores).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import wfdb

import QRSTokenizer
from datasets.preprocess import cpsc2018, csn, mimic, ptbxl
from datasets.synthetic.cohort import generate_mimic_like, generate_ptbxl_like, simulate_cohort

STALE, NONFINITE, ARGS = "stale_outputs", "nonfinite_degenerate", "bad_arguments"


def case(cls: str, stage: str, outcome: str):
    """Tag a test: issue class, stage, expected outcome (refused | redone | reported_skipped | skipped_same)."""

    def tag(fn):
        fn.robustness = {"class": cls, "stage": stage, "outcome": outcome}
        return fn

    return tag


# ------------------------------------------------------------------------------------------ raw data
@pytest.fixture(scope="module")
def mimic_raw(tmp_path_factory):
    root = tmp_path_factory.mktemp("mimic_raw")
    generate_mimic_like(root, 6, seed=3)
    return root


@pytest.fixture(scope="module")
def ptbxl_raw(tmp_path_factory):
    root = tmp_path_factory.mktemp("ptbxl_raw")
    generate_ptbxl_like(root, 24, seed=3)
    return root


@pytest.fixture
def mraw(mimic_raw, tmp_path):
    shutil.copytree(mimic_raw, tmp_path / "raw")
    return tmp_path / "raw"


@pytest.fixture
def praw(ptbxl_raw, tmp_path):
    shutil.copytree(ptbxl_raw, tmp_path / "raw")
    return tmp_path / "raw"


def _mimic(root, out, **kw):
    argv = ["--dataset_path", str(root), "--output_path", str(out), "--num_workers", "1", "--batch_size", "3"]
    for k, v in kw.items():
        argv += [f"--{k}", str(v)]
    return mimic.main(argv)


def _ptbxl(root, out, subsets=("superdiagnostic",)):
    argv = [
        "--dataset_path",
        str(root),
        "--output_path",
        str(out),
        "--num_workers",
        "1",
        "--subsets",
        *subsets,
    ]
    return ptbxl.main(argv)


def _set_gain(hea: Path, gain: str) -> None:
    """Rewrite every signal line's ADC gain (e.g. '1e-6' makes the physical values 1e6 times larger)."""
    lines = hea.read_text().splitlines()
    out = [lines[0]]
    for line in lines[1:]:
        parts = line.split()
        if len(parts) > 2 and "/mV" in parts[2]:
            parts[2] = f"{gain}(0)/mV"
        out.append(" ".join(parts))
    hea.write_text("\n".join(out) + "\n")


def _record_list(root) -> pd.DataFrame:
    return pd.read_csv(root / "record_list.csv", dtype=str)


def _wrsamp(folder: Path, name: str, sig: np.ndarray, fs: float, leads, comments=()) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    wfdb.wrsamp(name, fs=fs, units=["mV"] * len(leads), sig_name=list(leads), p_signal=sig.T, fmt=["16"] * len(leads),
                adc_gain=[200.0] * len(leads), baseline=[0] * len(leads), comments=list(comments),
                write_dir=str(folder))  # fmt: skip


# ============================================================== class 2: changed inputs, old outputs
@case(STALE, "mimic_preprocess", "redone")
def test_mimic_truncated_batch_is_named_and_rebuilt(mraw, tmp_path, capsys):
    fresh = _mimic(mraw, tmp_path / "a")
    target = tmp_path / "a" / "batch_1" / "train_data.npy"
    good = target.read_bytes()
    with open(target, "r+b") as fh:
        fh.truncate(len(good) // 2)
    summary = _mimic(mraw, tmp_path / "a")
    assert summary["batches_resumed"] == [0] and list(summary["batches_redone"]) == ["1"]
    assert f"damaged output {target}" in summary["batches_redone"]["1"][0]
    assert str(target) in capsys.readouterr().err
    assert target.read_bytes() == good and summary["records_out"] == fresh["records_out"]


@case(STALE, "mimic_preprocess", "redone")
def test_mimic_changed_raw_record_redoes_its_batch(mraw, tmp_path):
    _mimic(mraw, tmp_path / "a")
    rec = mraw / (_record_list(mraw)["path"][4] + ".hea")  # batch 1
    _set_gain(rec, "100.0")  # the same samples now mean twice the voltage
    summary = _mimic(mraw, tmp_path / "a")
    assert summary["batches_resumed"] == [0]
    assert summary["batches_redone"]["1"][0].startswith("input raw_records: 1 file(s) changed: ")
    again = _mimic(mraw, tmp_path / "b")  # a fresh run from the changed raw data gives the same arrays
    for split in ("train", "val"):
        a = np.load(tmp_path / "a" / "batch_1" / f"{split}_data.npy")
        assert np.array_equal(a, np.load(tmp_path / "b" / "batch_1" / f"{split}_data.npy"))
    assert again["records_out"] == summary["records_out"]


@case(STALE, "ptbxl_preprocess", "skipped_same")
def test_ptbxl_rerun_same_inputs_reads_nothing_and_changed_input_redoes(praw, tmp_path, capsys):
    out = tmp_path / "out"
    _ptbxl(praw, out)
    before = (out / "superdiagnostic" / "train_data.npy").stat().st_mtime_ns
    _ptbxl(praw, out)
    assert "skipped" in capsys.readouterr().out
    assert (out / "superdiagnostic" / "train_data.npy").stat().st_mtime_ns == before
    _set_gain(praw / "records100/00000/00003_lr.hea", "500.0")
    _ptbxl(praw, out)
    assert "superdiagnostic: redone: input records:" in capsys.readouterr().out
    assert (out / "superdiagnostic" / "train_data.npy").stat().st_mtime_ns != before


@case(STALE, "ptbxl_preprocess", "redone")
def test_ptbxl_truncated_output_is_named_and_rebuilt(praw, tmp_path, capsys):
    out = tmp_path / "out"
    _ptbxl(praw, out)
    target = out / "superdiagnostic" / "test_labels.npy"
    good = target.read_bytes()
    target.write_bytes(good[:-8])
    _ptbxl(praw, out)
    assert f"damaged output {target}" in capsys.readouterr().out and target.read_bytes() == good


@case(STALE, "csn_preprocess", "redone")
def test_csn_changed_record_rebuilds_folder(tmp_path, capsys):
    raw, out = _csn_raw(tmp_path), tmp_path / "out"
    argv = ["--dataset_path", str(raw), "--output_path", str(out), "--num_workers", "1"]
    csn.main(argv)
    csn.main(argv)
    assert "skipped" in capsys.readouterr().out
    _wrsamp(raw, "R003", _ecg(3) * 1.5, 500, LEADS12, ["Dx: 164889003"])  # new samples, same label
    csn.main(argv)
    assert "redone: input records: 2 file(s) changed: R003.dat, R003.hea" in capsys.readouterr().out


@case(STALE, "qrs_tokenizer", "redone")
def test_tokenizer_new_input_array_is_retokenised_not_paired_with_old_sentences(tmp_path, capsys):
    x = simulate_cohort(8, seed=5)["signals"]
    src = tmp_path / "D" / "sub"
    src.mkdir(parents=True)
    np.save(src / "train_data.npy", x[:4])
    np.save(src / "train_labels.npy", np.eye(4, dtype=np.int64))
    _tokenize(tmp_path)
    np.save(src / "train_data.npy", x[4:])  # the preprocessing was rerun: new arrays, new labels
    np.save(src / "train_labels.npy", np.eye(4, dtype=np.int64)[::-1])
    _tokenize(tmp_path)
    assert "[sub/train] redone: input data: train_data.npy changed" in capsys.readouterr().err
    direct = tmp_path / "direct"
    from datasets.qrs.parallel import tokenize_array

    tokenize_array(x[4:], direct, "train", num_workers=1, progress=False, verbose=False)
    out = tmp_path / "D_QRS" / "sub"
    assert np.array_equal(np.load(out / "train_data.npy"), np.load(direct / "train_data.npy"))
    assert np.array_equal(np.load(out / "train_labels.npy"), np.eye(4, dtype=np.int64)[::-1])


@case(STALE, "qrs_tokenizer", "redone")
def test_tokenizer_truncated_sentences_are_named_and_redone(tmp_path, capsys):
    src = tmp_path / "D" / "sub"
    src.mkdir(parents=True)
    np.save(src / "val_data.npy", simulate_cohort(3, seed=6)["signals"])
    _tokenize(tmp_path)
    target = tmp_path / "D_QRS" / "sub" / "val_data_in_chans.npy"
    good = target.read_bytes()
    target.write_bytes(good[:200])
    _tokenize(tmp_path)
    assert f"damaged output {target}" in capsys.readouterr().err and target.read_bytes() == good


@case(STALE, "cpsc2018_preprocess", "redone")
def test_cpsc_changed_reference_labels_rebuild_folder(tmp_path, capsys):
    raw, out = _cpsc_raw(tmp_path), tmp_path / "out"
    argv = ["--dataset_path", str(raw), "--output_path", str(out), "--num_workers", "1"]
    cpsc2018.main(argv)
    ref = raw / "REFERENCE.csv"
    ref.write_text(ref.read_text().replace("R005,2", "R005,1"))  # AF -> Normal
    cpsc2018.main(argv)
    assert "redone: setting plan_sha256:" in capsys.readouterr().out
    classes = json.loads((out / "classes.json").read_text())
    for split in ("train", "val", "test"):
        names = json.loads((out / f"{split}_records.json").read_text())
        if "R005" in names:
            y = np.load(out / f"{split}_labels.npy")[names.index("R005")]
            assert [c for c, v in zip(classes, y) if v] == ["Normal"]


# ================================================================ class 3: non-finite and degenerate
@case(NONFINITE, "mimic_preprocess", "reported_skipped")
def test_mimic_gain_overflow_and_flat_record_are_skipped_and_named(mraw, tmp_path):
    paths = _record_list(mraw)["path"]
    _set_gain(mraw / (paths[1] + ".hea"), "1e-40")  # physical values ~1e42: inf in float32
    zero = mraw / (paths[2] + ".hea")
    _wrsamp(zero.parent, zero.stem, np.zeros((12, 5000)), 500, mimic_leads(zero))
    summary = _mimic(mraw, tmp_path / "a")
    assert summary["skipped_by_reason"] == {"flat_record": 1, "implausible_amplitude": 1}
    rows = list(csv.DictReader(open(tmp_path / "a" / "skipped_records.csv")))
    assert {r["record"]: r["reason"] for r in rows} == {
        str(mraw / paths[1]): "implausible_amplitude",
        str(mraw / paths[2]): "flat_record",
    }
    assert summary["records_out"]["train"] + summary["records_out"]["val"] == 4
    for f in (tmp_path / "a").glob("batch_*/*_data.npy"):
        assert np.isfinite(np.load(f)).all()


@case(NONFINITE, "ptbxl_preprocess", "reported_skipped")
def test_ptbxl_one_bad_gain_cannot_poison_the_scaler(praw, tmp_path):
    clean = _ptbxl(praw, tmp_path / "clean")
    bad_hea = praw / "records100/00000/00005_lr.hea"
    _set_gain(bad_hea, "1e-40")
    summary = _ptbxl(praw, tmp_path / "bad")
    assert summary["skipped_by_reason"] == {"implausible_amplitude": 1}
    out = tmp_path / "bad" / "superdiagnostic"
    for split in ("train", "val", "test"):
        x = np.load(out / f"{split}_data.npy")
        assert np.isfinite(x).all() and 5 not in np.load(out / f"{split}_ecg_ids.npy")
    scaler = summary["subsets"]["superdiagnostic"]["scaler"]
    assert np.isfinite(scaler["mean"]) and 0 < scaler["std"] < 10  # mV-scale, not 1e40
    assert abs(scaler["std"] - clean["subsets"]["superdiagnostic"]["scaler"]["std"]) < 0.2


@case(NONFINITE, "csn_preprocess", "reported_skipped")
def test_csn_flat_and_huge_records_are_skipped(tmp_path):
    raw = _csn_raw(tmp_path)
    _wrsamp(raw, "R001", np.zeros((12, 5000)), 500, LEADS12, ["Dx: 426783006"])
    _set_gain(raw / "R002.hea", "1e-6")
    summary = csn.main(
        ["--dataset_path", str(raw), "--output_path", str(tmp_path / "o"), "--num_workers", "1"]
    )
    assert summary["skipped_by_reason"] == {"flat_record": 1, "implausible_amplitude": 1}
    assert sum(summary["records_out"].values()) == 6


@case(NONFINITE, "qrs_tokenizer", "reported_skipped")
def test_tokenizer_nan_records_are_named_in_official_mode_and_skipped_or_zeroed_on_request(tmp_path, capsys):
    x = simulate_cohort(4, seed=7)["signals"]
    x[2, 5, 400:450] = np.nan  # NaN in aVF only: official output copies it into words
    src = tmp_path / "D" / "sub"
    src.mkdir(parents=True)
    np.save(src / "test_data.npy", x)
    (src / "test_records.json").write_text(json.dumps(["a", "b", "bad_one", "d"]))
    s = _tokenize(tmp_path)["splits"]["sub/test"]
    err = capsys.readouterr().err
    assert "WARNING [test]" in err and "bad_one (row 2)" in err and "loss is nan" in err
    assert s["records_with_nonfinite_words"] == 1 and s["nonfinite_records"] == [
        {"index": 2, "record": "bad_one (row 2)"}
    ]
    out = tmp_path / "D_QRS" / "sub"
    assert np.isnan(np.load(out / "test_data.npy")[2]).any()  # official behaviour kept, but reported
    assert (
        (out / "test_nonfinite_records.csv").read_text().splitlines()[1].startswith("2,bad_one (row 2),True,")
    )
    for policy in ("skip", "zero"):
        s = _tokenize(tmp_path, "--nan_policy", policy)["splits"]["sub/test"]
        data, chans = np.load(out / "test_data.npy"), np.load(out / "test_data_in_chans.npy")
        assert np.isfinite(data).all() and s["records_with_nonfinite_input"] == 1
        assert (chans[2] == 0).all() == (policy == "skip") and (chans[[0, 1, 3]] > 0).any(axis=1).all()
        assert s["records_skipped_nonfinite"] == (policy == "skip")


@case(NONFINITE, "cpsc2018_preprocess", "reported_skipped")
def test_cpsc_flat_first_5s_is_skipped_not_turned_into_a_step(tmp_path):
    raw = _cpsc_raw(tmp_path)
    sig = _ecg(1)
    sig[:, :2500] = 0.5  # the 5 s that are used carry no ECG
    _wrsamp(raw, "R001", sig, 500, LEADS12, ["Dx: "])
    summary = cpsc2018.main(
        ["--dataset_path", str(raw), "--output_path", str(tmp_path / "o"), "--num_workers", "1"]
    )
    assert summary["skipped_by_reason"] == {"flat_record": 1} and sum(summary["records_out"].values()) == 7


# ============================================================== class 5: arguments checked up front
@pytest.mark.parametrize(
    "kw, message",
    [
        ({"val_fraction": 1.0}, "--val_fraction must be in [0, 1), got 1.0"),
        ({"val_fraction": -0.1}, "--val_fraction must be in [0, 1), got -0.1"),
        ({"max_records": -1}, "--max_records must be >= 0"),
    ],
)
@case(ARGS, "mimic_preprocess", "refused")
def test_mimic_bad_numbers_refused_before_reading(mraw, tmp_path, kw, message):
    with pytest.raises(SystemExit, match=__import__("re").escape(message)):
        _mimic(mraw, tmp_path / "a", **kw)
    assert not (tmp_path / "a").exists()


@pytest.mark.parametrize(
    "content, message",
    [
        ("", "not a CSV with a header row"),
        ("files/p1/x/1\nfiles/p1/x/2\n", "no 'path' column"),
        ("subject_id,path\n", "header only, no record rows"),
        ("path\nfiles/ok\n../../etc/passwd\n", "row 3: path '../../etc/passwd' leaves the dataset root"),
        ("path\n/abs/record\n", "row 2: path '/abs/record' must be relative"),
    ],
)
@case(ARGS, "mimic_preprocess", "refused")
def test_mimic_bad_record_list_refused_naming_file_and_row(tmp_path, content, message):
    (tmp_path / "record_list.csv").write_text(content)
    with pytest.raises(SystemExit, match=__import__("re").escape(message)) as exc:
        _mimic(tmp_path, tmp_path / "out")
    assert "record_list.csv" in str(exc.value)


@case(ARGS, "ptbxl_preprocess", "refused")
def test_ptbxl_malformed_scp_codes_names_the_row(praw, tmp_path):
    db = pd.read_csv(praw / "ptbxl_database.csv")
    db.loc[db.ecg_id == 7, "scp_codes"] = "{'NORM': 100.0"
    db.to_csv(praw / "ptbxl_database.csv", index=False)
    with pytest.raises(SystemExit, match="ptbxl_database.csv, ecg_id 7: scp_codes .* is not a dict literal"):
        _ptbxl(praw, tmp_path / "out")


@case(ARGS, "ptbxl_preprocess", "refused")
def test_ptbxl_filename_escaping_the_root_is_refused(praw, tmp_path):
    db = pd.read_csv(praw / "ptbxl_database.csv")
    db.loc[db.ecg_id == 2, "filename_lr"] = "records100/../../outside/00002_lr"
    db.to_csv(praw / "ptbxl_database.csv", index=False)
    with pytest.raises(SystemExit, match="ecg_id 2 \\(filename_lr\\): path .* leaves the dataset root"):
        _ptbxl(praw, tmp_path / "out")


@case(ARGS, "ptbxl_preprocess", "reported_skipped")
def test_ptbxl_bad_strat_fold_rows_are_reported_not_silently_dropped(praw, tmp_path):
    db = pd.read_csv(praw / "ptbxl_database.csv")
    db["strat_fold"] = db["strat_fold"].astype(object)
    db.loc[db.ecg_id == 4, "strat_fold"] = None
    db.loc[db.ecg_id == 6, "strat_fold"] = 11
    db.to_csv(praw / "ptbxl_database.csv", index=False)
    summary = _ptbxl(praw, tmp_path / "out")
    assert summary["skipped_by_reason"] == {"bad_strat_fold": 2}
    rows = list(csv.DictReader(open(tmp_path / "out" / "skipped_records.csv")))
    assert [r["record"].split(" (")[0] for r in rows] == ["ecg_id 4", "ecg_id 6"]
    assert "strat_fold (missing) is not an integer 1-10" in rows[0]["detail"]
    assert "strat_fold 11.0 is not an integer 1-10" in rows[1]["detail"]
    assert summary["records_read"] == 22


@case(ARGS, "csn_preprocess", "reported_skipped")
def test_csn_non_snomed_dx_codes_never_become_classes(tmp_path, capsys):
    raw = _csn_raw(tmp_path)
    _wrsamp(raw, "R004", _ecg(4), 500, LEADS12, ["Dx: 426783006,sinus rhythm,1234"])
    summary = csn.main(
        ["--dataset_path", str(raw), "--output_path", str(tmp_path / "o"), "--num_workers", "1"]
    )
    assert json.loads((tmp_path / "o" / "classes.json").read_text()) == ["164889003", "426783006"]
    assert summary["invalid_dx_codes"] == {"R004": ["sinus rhythm", "1234"]}
    assert "R004.hea: ['sinus rhythm', '1234']" in capsys.readouterr().out
    (tmp_path / "cls.txt").write_text("426783006\nAF\n")
    with pytest.raises(SystemExit, match="cls.txt: classes must be distinct SNOMED-CT codes"):
        csn.main(["--dataset_path", str(raw), "--output_path", str(tmp_path / "p"), "--classes_file", str(tmp_path / "cls.txt")])  # fmt: skip


@case(ARGS, "cpsc2018_preprocess", "reported_skipped")
def test_cpsc_non_snomed_header_dx_is_reported_and_reference_used(tmp_path):
    raw = _cpsc_raw(tmp_path)
    _wrsamp(raw, "R002", _ecg(2), 500, LEADS12, ["Dx: AF,59118001x"])
    summary = cpsc2018.main(
        ["--dataset_path", str(raw), "--output_path", str(tmp_path / "o"), "--num_workers", "1"]
    )
    assert summary["invalid_dx_codes"] == {"R002": ["AF", "59118001x"]} and summary["unmapped_dx_codes"] == {}
    assert summary["label_origin"] == {"reference_csv": 8} and sum(summary["records_out"].values()) == 8


@case(ARGS, "qrs_tokenizer", "refused")
def test_tokenizer_refuses_labels_of_another_run(tmp_path):
    src = tmp_path / "D" / "sub"
    src.mkdir(parents=True)
    np.save(src / "train_data.npy", simulate_cohort(3, seed=8)["signals"])
    np.save(src / "train_labels.npy", np.zeros((5, 2), np.int64))
    with pytest.raises(SystemExit, match="train_labels.npy has 5 rows but .*train_data.npy has 3 records"):
        _tokenize(tmp_path)


# ------------------------------------------------------------------------------------------- helpers
LEADS12 = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")


def _ecg(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(5000) / 500
    beats = np.sin(2 * np.pi * 1.2 * t)[None] ** 21 * rng.uniform(0.5, 2, (12, 1))
    return beats + 0.02 * rng.normal(size=(12, 5000))


def _csn_raw(tmp_path: Path) -> Path:
    """8 CSN-like records (500 Hz, 10 s, #Dx: SNOMED codes)."""
    raw = tmp_path / "csn_raw"
    for i in range(8):
        _wrsamp(raw, f"R{i:03d}", _ecg(i), 500, LEADS12, [f"Dx: {'164889003' if i % 2 else '426783006'}"])
    return raw


def _cpsc_raw(tmp_path: Path) -> Path:
    """8 CPSC2018-like CinC 2020 records (blank Dx lines, labels in REFERENCE.csv: 1 Normal, 2 AF)."""
    raw = tmp_path / "cpsc_raw"
    for i in range(8):
        _wrsamp(raw, f"R{i:03d}", _ecg(i), 500, LEADS12, ["Dx: "])
    rows = ["Recording,First_label,Second_label,Third_label"] + [f"R{i:03d},{1 + i % 2},," for i in range(8)]
    (raw / "REFERENCE.csv").write_text("\n".join(rows) + "\n")
    return raw


def mimic_leads(hea: Path) -> list[str]:
    return [line.split()[-1] for line in hea.read_text().splitlines()[1:13]]


def _tokenize(root: Path, *extra: str) -> dict:
    argv = ["--dataset_name", "D", "--data_root", str(root), "--num_workers", "1", "--no_progress", *extra]
    return QRSTokenizer.main(QRSTokenizer.get_args_parser().parse_args(argv))


def test_every_case_is_tagged():
    tagged = [v for k, v in globals().items() if k.startswith("test_") and hasattr(v, "robustness")]
    assert len(tagged) == len([k for k in globals() if k.startswith("test_")]) - 1
    assert {t.robustness["class"] for t in tagged} == {STALE, NONFINITE, ARGS}
    assert os.path.basename(__file__) == "test_robustness_data.py"
