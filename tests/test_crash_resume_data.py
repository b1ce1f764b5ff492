"""kill -9 of each data stage (MIMIC-IV preprocessing, QRS tokenizer, target cache) once its first unit of work
is complete, then a rerun: outputs byte-identical to an uninterrupted run, and the finished unit is kept, not
redone. The same rehearsal at scale, with random kill moments: ``python -m benchmarks crash_resume`` (run here
with a few hundred records)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow


def test_killed_data_stages_resume_to_identical_outputs(tmp_path):
    out = tmp_path / "result.json"
    cmd = [sys.executable, "-m", "benchmarks", "crash_resume", "--n_records", "200", "--batch_size", "100",
           "--num_workers", "1", "--kill_after_first", "--work_dir", str(tmp_path), "--out", str(out)]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=540)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())["runs"]["latest"]
    rows = {row["stage"]: row for row in result["rows"]}
    assert set(rows) == {"preprocess", "tokenizer", "targets"}
    first_unit_files = {"preprocess": 4, "tokenizer": 3, "targets": 1}  # batch_0's folder; batch_0/train; its targets
    for stage, row in rows.items():
        assert not row["finished_before_kill"], row  # the kill landed mid-run
        assert row["identical_to_reference"], row
        assert row["outputs"] == result["references"][stage]["files"]
        assert row["kept_by_rerun"] >= first_unit_files[stage], row  # the finished unit was not redone
        assert row["written_by_rerun"] >= 1 and row["rerun_written_bytes_fraction"] < 1, row
