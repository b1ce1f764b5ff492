"""Synthetic cohort (datasets/synthetic/cohort.py): raw formats, label tables, determinism, CLI."""

from __future__ import annotations

import ast
import filecmp
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import wfdb

from datasets.synthetic.cohort import (
    MIMIC_LEADS,
    PTBXL_COLUMNS,
    PTBXL_LEADS,
    generate_mimic_like,
    generate_ptbxl_like,
    get_args_parser,
    main,
)
from datasets.synthetic.labels import SCP_COLUMNS


@pytest.fixture(scope="module")
def mimic_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("mimic")
    generate_mimic_like(out, 8, seed=3, num_workers=1, nan_fraction=0.5)
    return out


@pytest.fixture(scope="module")
def ptbxl_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ptbxl")
    generate_ptbxl_like(out, 40, seed=3, num_workers=1, with_500hz=True)
    return out


def test_mimic_record_list_and_wfdb_records(mimic_dir):
    rl = pd.read_csv(mimic_dir / "record_list.csv")
    assert list(rl.columns) == ["subject_id", "study_id", "file_name", "ecg_time", "path"]
    assert len(rl) == 8 and rl["study_id"].is_unique
    assert (rl["study_id"] == rl["file_name"]).all()
    pd.to_datetime(rl["ecg_time"], format="%Y-%m-%d %H:%M:%S")  # raises on a malformed time
    n_nan = 0
    for row in rl.itertuples():
        assert re.fullmatch(rf"files/p1000/p{row.subject_id}/s{row.study_id}/{row.study_id}", row.path)
        rec = wfdb.rdrecord(str(mimic_dir / row.path))
        assert rec.fs == 500 and rec.sig_len == 5000 and rec.n_sig == 12
        assert tuple(rec.sig_name) == MIMIC_LEADS  # aVF stored before aVL, as in MIMIC-IV-ECG
        assert rec.units == ["mV"] * 12 and rec.fmt == ["16"] * 12 and rec.adc_gain == [200.0] * 12
        x = rec.p_signal
        n_nan += int(np.isnan(x).any())
        x = np.nan_to_num(x)
        assert 0.2 < np.abs(x).max() < 10.0, f"{row.path}: amplitude not in a plausible mV range"
        # Einthoven: III = II - I (up to the 5 uV quantisation of two samples)
        assert np.abs(x[:, 2] - (x[:, 1] - x[:, 0]))[~np.isnan(rec.p_signal[:, :3]).any(1)].max() < 0.011
    assert n_nan > 0, "nan_fraction=0.5 should give records with a NaN stretch"


def test_ptbxl_database_and_statements(ptbxl_dir):
    db = pd.read_csv(ptbxl_dir / "ptbxl_database.csv", index_col="ecg_id")
    assert ["ecg_id", *db.columns] == PTBXL_COLUMNS
    assert list(db.index) == list(range(1, 41))
    st = pd.read_csv(ptbxl_dir / "scp_statements.csv", index_col=0)
    assert list(st.columns) == SCP_COLUMNS
    assert set(st.loc[st.diagnostic == 1, "diagnostic_class"]) == {"NORM", "MI", "STTC", "CD", "HYP"}
    used = set()
    for s in db["scp_codes"]:
        codes = ast.literal_eval(s)
        assert isinstance(codes, dict) and codes
        used |= set(codes)
        assert sum(st.loc[list(codes), "rhythm"].fillna(0)) == 1, f"exactly one rhythm statement in {s}"
        assert st.loc[list(codes), "diagnostic"].fillna(0).sum() >= 1
    assert used <= set(st.index)
    assert set(db["strat_fold"]) == set(range(1, 11))
    assert db.groupby("patient_id")["strat_fold"].nunique().max() == 1, "a patient spans two folds"


def test_ptbxl_records_read_back(ptbxl_dir):
    db = pd.read_csv(ptbxl_dir / "ptbxl_database.csv", index_col="ecg_id")
    for ecg_id in (1, 17, 40):
        lr = wfdb.rdrecord(str(ptbxl_dir / db.loc[ecg_id, "filename_lr"]))
        hr = wfdb.rdrecord(str(ptbxl_dir / db.loc[ecg_id, "filename_hr"]))
        assert (lr.fs, lr.sig_len, hr.fs, hr.sig_len) == (100, 1000, 500, 5000)
        assert tuple(lr.sig_name) == PTBXL_LEADS == tuple(hr.sig_name)
        assert lr.units == ["mV"] * 12 and lr.adc_gain == [1000.0] * 12
        # the 100 Hz record is the decimated 500 Hz one (compare away from the filter's edges)
        diff = lr.p_signal[50:-50] - hr.p_signal[::5][50:-50]
        assert np.abs(diff).max() < 0.05 * np.abs(hr.p_signal).max()


def test_ptbxl_columns_match_the_real_files(ptbxl_dir, shared_data):
    real_db = pd.read_csv(shared_data / "ptbxl" / "ptbxl_database.csv", nrows=1)
    real_st = pd.read_csv(shared_data / "ptbxl" / "scp_statements.csv", index_col=0, nrows=1)
    assert list(real_db.columns) == PTBXL_COLUMNS
    assert list(pd.read_csv(ptbxl_dir / "scp_statements.csv", index_col=0).columns) == list(real_st.columns)
    real_hea = wfdb.rdheader(str(shared_data / "ptbxl" / "records100" / "00000" / "00002_lr"))
    ours = wfdb.rdheader(str(ptbxl_dir / "records100" / "00000" / "00002_lr"))
    assert (ours.sig_name, ours.fs, ours.sig_len, ours.fmt, ours.adc_gain, ours.units) == (
        real_hea.sig_name,
        real_hea.fs,
        real_hea.sig_len,
        real_hea.fmt,
        real_hea.adc_gain,
        real_hea.units,
    )


def _same_tree(a: Path, b: Path) -> bool:
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    return files_a == files_b and all(filecmp.cmp(a / f, b / f, shallow=False) for f in files_a)


def test_deterministic_across_workers_and_seed_sensitive(tmp_path):
    generate_ptbxl_like(tmp_path / "a", 12, seed=7, num_workers=1)
    generate_ptbxl_like(tmp_path / "b", 12, seed=7, num_workers=2)
    generate_ptbxl_like(tmp_path / "c", 12, seed=8, num_workers=1)
    generate_mimic_like(tmp_path / "ma", 6, seed=7, num_workers=2)
    generate_mimic_like(tmp_path / "mb", 6, seed=7, num_workers=1)
    assert _same_tree(tmp_path / "a", tmp_path / "b")
    assert _same_tree(tmp_path / "ma", tmp_path / "mb")
    dat_a = (tmp_path / "a" / "records100" / "00000" / "00001_lr.dat").read_bytes()
    dat_c = (tmp_path / "c" / "records100" / "00000" / "00001_lr.dat").read_bytes()
    assert dat_a != dat_c
    assert not filecmp.cmp(
        tmp_path / "a" / "ptbxl_database.csv", tmp_path / "c" / "ptbxl_database.csv", False
    )


def test_cli_writes_both_sources_and_prints_fold_counts(tmp_path, capsys):
    args = get_args_parser().parse_args(
        [
            "--output_dir",
            str(tmp_path),
            "--n_mimic",
            "3",
            "--n_ptbxl",
            "20",
            "--seed",
            "1",
            "--num_workers",
            "1",
        ]
    )
    main(args)
    out = capsys.readouterr().out
    assert "label counts per strat_fold" in out and "NORM" in out
    assert len(pd.read_csv(tmp_path / "mimic_iv_ecg" / "record_list.csv")) == 3
    assert len(pd.read_csv(tmp_path / "ptbxl" / "ptbxl_database.csv")) == 20
    assert not (tmp_path / "ptbxl" / "records500").exists()


def test_a_generator_killed_while_writing_an_index_leaves_no_index(tmp_path, monkeypatch):
    """The index CSVs are written last and whole: a run that dies while writing one leaves none (the demo
    takes an existing ptbxl_database.csv to mean a complete folder), never a truncated index."""
    real_to_csv = pd.DataFrame.to_csv

    def dies_halfway(self, buf=None, *args, **kwargs):
        if len(self) > 4:  # an index with records: write part of it, then die
            real_to_csv(self.head(2), buf, *args, **kwargs)
            raise KeyboardInterrupt("killed while writing the index")
        return real_to_csv(self, buf, *args, **kwargs)

    monkeypatch.setattr(pd.DataFrame, "to_csv", dies_halfway)
    for generate, index in ((generate_mimic_like, "record_list.csv"), (generate_ptbxl_like, "ptbxl_database.csv")):
        out = tmp_path / index
        with pytest.raises(KeyboardInterrupt):
            generate(out, 8, seed=1, num_workers=1)
        assert not (out / index).exists()
        assert not [p.name for p in out.iterdir() if p.suffix == ".tmp"]
    monkeypatch.setattr(pd.DataFrame, "to_csv", real_to_csv)
    generate_ptbxl_like(tmp_path / "whole", 8, seed=1, num_workers=1)
    assert len(pd.read_csv(tmp_path / "whole" / "ptbxl_database.csv")) == 8
