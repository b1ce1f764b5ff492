"""datasets.synthetic.scale: MIMIC-IV-ECG-like raw records at scale, in the real layout, readable by wfdb and
by the MIMIC preprocessing, byte-identical whatever the number of workers."""

from __future__ import annotations

import csv
import hashlib

import numpy as np
import pytest
import wfdb

from datasets.preprocess.mimic import process_record
from datasets.synthetic.scale import generate_mimic_scale, main


def _digest(root):
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(root)).encode() + path.read_bytes())
    return h.hexdigest()


def test_layout_format_and_determinism(tmp_path):
    size = generate_mimic_scale(tmp_path / "a", 23, seed=1, num_workers=1, pool_size=3, chunk=5)
    generate_mimic_scale(tmp_path / "b", 23, seed=1, num_workers=2, pool_size=3, chunk=5)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert size == sum(p.stat().st_size for p in (tmp_path / "a").rglob("*") if p.is_file())
    rows = list(csv.DictReader(open(tmp_path / "a" / "record_list.csv")))
    assert len(rows) == 23 and list(rows[0]) == ["subject_id", "study_id", "file_name", "ecg_time", "path"]
    assert len({r["study_id"] for r in rows}) == 23
    signals = []
    for r in rows:
        sub, study = r["subject_id"], r["study_id"]
        assert (
            r["path"] == f"files/p{sub[:4]}/p{sub}/s{study}/{study}" and 10_000_000 <= int(sub) < 20_000_000
        )
        rec = wfdb.rdrecord(str(tmp_path / "a" / r["path"]))  # header checksums and format as wfdb expects
        assert (rec.fs, rec.sig_len, rec.n_sig) == (500, 5000, 12) and rec.sig_name[4] == "aVF"
        assert f"{rec.base_date} {rec.base_time}" == r["ecg_time"]
        signals.append(rec.p_signal)
        array, reason, _ = process_record(str(tmp_path / "a" / r["path"]))
        assert reason == "" and array.shape == (12, 1000) and np.isfinite(array).all()
    # records that share a pool signal still differ (own gains and noise)
    assert not np.allclose(signals[0], signals[3])
    assert 0.05 < np.abs(signals[0]).max() < 10  # millivolts


def test_cli_refuses_no_records(tmp_path):
    with pytest.raises(ValueError, match="n_records must be positive"):
        main(["--output_dir", str(tmp_path), "--n_records", "0"])
