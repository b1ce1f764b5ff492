"""End-to-end demo (scripts/run_demo.py --smoke): every stage of paper Sec. 3-4 through torchrun (2 gloo processes)
on CPU, from the session's shared run (tests/conftest.demo_smoke); table assembly; --dry_run."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from reporting.tables import collect_probe_results, probe_table

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.dist
def test_demo_smoke_runs_every_stage_and_reports(demo_smoke):
    """The shared smoke run (tests/conftest.demo_smoke: ``run_demo.py --smoke --nproc 2``)."""
    out, log = demo_smoke.out, demo_smoke.log
    # Each stage prints the real command it runs.
    for cli in ("datasets.synthetic", "mimic_preprocess.py", "datasets.preprocess.ptbxl", "QRSTokenizer.py",
                "run_vqhbr_training.py", "run_heartlang_pretraining.py", "run_class_finetuning.py", "--eval"):  # fmt: skip
        assert cli in log, cli
    assert "torchrun" in log or "torch.distributed.run" in log
    assert (
        log.count("--standalone --nproc_per_node=2") == 2 + 2 * 2
    )  # VQ-HBR, pre-training, 2 x (probe, eval)

    for path in ("ecg_datasets/MIMIC-IV/batch_0/train_data.npy", "ecg_datasets/MIMIC-IV_QRS/batch_0/train_data.npy",
                 "ecg_datasets/PTBXL_QRS/superdiagnostic/test_labels.npy", "checkpoints/vqhbr/checkpoint-1.pth",
                 "checkpoints/pretrain/checkpoint-1.pth", "plots/training_curves.png", "plots/codebook_usage.png",
                 "plots/linear_probe_val_auc.png", "results/demo_table.md"):  # fmt: skip
        assert (out / path).is_file(), path
    assert list((out / "plots").glob("tokenised_record_*.png"))
    # The console keeps the last lines of each stage; the full output of every stage is kept beside it.
    assert "run_vqhbr_training.py" in demo_smoke.stage_log("vqhbr").splitlines()[0]
    assert len(list((out / "log" / "stages").glob("*.log"))) == 5 + 2 + 2 * 2

    rows = collect_probe_results(out / "results" / "finetune_results.csv", out / "checkpoints" / "finetune")
    assert {(r["task"], r["ratio"], r["init"]) for r in rows} == {
        ("superdiagnostic", 1.0, "pre-trained"),
        ("superdiagnostic", 1.0, "random init"),
    }
    assert all(math.isfinite(r["macro_auc"]) and 0 <= r["macro_auc"] <= 1 and r["n_test"] > 0 for r in rows)
    table = (out / "results" / "demo_table.md").read_text()
    assert table.strip() == probe_table(rows).strip()
    assert (
        "| superdiagnostic | 1 | pre-trained |" in table and "| superdiagnostic | 1 | random init |" in table
    )
    # --results_json: the run as a results file, with intervals and the paired difference, and no path of
    # this machine.
    text = (out / "results" / "demo.json").read_text()
    assert str(out) not in text and str(REPO_ROOT) not in text
    result = json.loads(text)
    assert result["table"].strip() == table.strip()
    assert {(p["init"], p["macro_auc"], tuple(p["macro_auc_ci"])) for p in result["probes"]} == {
        (r["init"], r["macro_auc"], tuple(r["macro_auc_ci"])) for r in rows
    }
    (diff,) = result["paired_differences"]
    assert diff["paired"] and diff["n_test"] == rows[0]["n_test"]
    low, high = diff["macro_auc_diff_ci"]
    assert low <= diff["macro_auc_diff"] <= high


def test_demo_table_pairs_pretrained_and_random(tmp_path):
    csv_path = tmp_path / "r.csv"
    head = "dataset,subset,leads,ratio,sampling,seed,trainable,model,finetune,macro_auc,macro_f1,accuracy,n_test,classes_without_auc,output_dir\n"
    rows = [
        "PTBXL,rhythm,12,0.01,random,0,linear,m,/p.pth,0.700000,0,0,50,,{d}/a\n",
        "PTBXL,rhythm,12,0.01,random,0,linear,m,,0.600000,0,0,50,,{d}/b\n",
        "PTBXL,rhythm,12,0.01,random,0,linear,m,,0.550000,0,0,50,,{d}/b\n",  # re-run: the last row counts
        "PTBXL,rhythm,12,0.01,random,0,linear,m,,0.990000,0,0,50,,/elsewhere/c\n",  # another demo's row
    ]
    csv_path.write_text(head + "".join(r.format(d=tmp_path / "ft") for r in rows))
    got = collect_probe_results(csv_path, tmp_path / "ft")
    assert [(r["init"], r["macro_auc"]) for r in got] == [("pre-trained", 0.7), ("random init", 0.55)]
    table = probe_table(got)
    # An older file has no predictions: the difference without an interval, AUPRC not available.
    assert "| rhythm (n_test 50) | 0.01 | 0 | 0.7000 | 0.5500 | +0.1500 | n/a |" in table


def test_demo_dry_run_prints_commands_without_running(tmp_path, repo_root):
    proc = subprocess.run(
        [sys.executable, "scripts/run_demo.py", "--dry_run", "--output_dir", str(tmp_path / "d")],
        cwd=repo_root, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    # default: one task x (pre-trained, random) x 3 ratios x (train, --eval)
    assert proc.stdout.count("run_class_finetuning.py") == 2 * 3 * 2
    assert not (tmp_path / "d" / "raw").exists()


def test_demo_results_file_keeps_the_earlier_runs(tmp_path):
    sys.path.insert(0, str(REPO_ROOT / "scripts"))
    from run_demo import earlier_runs

    path = tmp_path / "demo.json"
    assert earlier_runs(path) == []
    path.write_text(json.dumps({"date": "b", "earlier_runs": [{"date": "a"}]}))
    assert earlier_runs(path) == [{"date": "b"}, {"date": "a"}]  # newest first, nothing lost
    path.write_text('{"date": ')
    with pytest.raises(SystemExit, match=rf"{path}: not a results file"):
        earlier_runs(path)

