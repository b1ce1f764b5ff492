"""Paper-table reproduction driver (scripts/reproduce_paper.py, paper Table 1): table assembly on a hand-made
CSV, and the whole driver (2 seeds, torchrun, resume) on the tiny synthetic PTB-XL cohort and tiny pre-trained
model of the session's shared smoke run (tests/conftest.demo_smoke)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from scripts import reproduce_paper as rp

HEAD = "dataset,subset,leads,ratio,sampling,seed,trainable,model,finetune,macro_auc,macro_f1,accuracy,n_test,classes_without_auc,output_dir\n"


def test_table_mean_std_and_paper_numbers(tmp_path):
    out = tmp_path / "runs"
    rows = [
        ("PTBXL", "superdiagnostic", 0.01, 0, 0.80, "a"), ("PTBXL", "superdiagnostic", 0.01, 1, 0.82, "b"),
        ("PTBXL", "superdiagnostic", 0.01, 2, 0.84, "c"), ("PTBXL", "superdiagnostic", 1.0, 0, 0.5, "d"),
        ("PTBXL", "superdiagnostic", 1.0, 0, 0.87, "d"),  # re-evaluated: the last row counts
        ("CPSC2018", "all", 0.1, 0, 0.66, "e"),
    ]  # fmt: skip
    lines = [
        f"{d},{s},12,{r},random,{seed},linear,m,x.pth,{auc},0,0,9,,{out / name}\n"
        for d, s, r, seed, auc, name in rows
    ]
    lines.append(
        f"PTBXL,superdiagnostic,12,0.01,random,5,linear,m,x.pth,0.1,0,0,9,,{tmp_path / 'other' / 'z'}\n"
    )
    (tmp_path / "r.csv").write_text(HEAD + "".join(lines))
    res = rp.collect(tmp_path / "r.csv", out)
    assert sorted(res) == [("cpsc2018", 0.1), ("ptbxl_super", 0.01), ("ptbxl_super", 1.0)]
    assert res[("ptbxl_super", 0.01)] == pytest.approx([80.0, 82.0, 84.0])
    table = rp.format_table(res)
    assert "| PTB-XL super | 82.00 +- 2.00 (n=3) | 78.94 | - | 85.59 | 87.00 (n=1) | 87.52 |" in table
    assert "| CPSC2018 | - | 60.44 | 66.00 (n=1) | 66.26 | - | 77.87 |" in table
    assert "CSN" not in table  # tasks without any result are left out
    # The random-init baseline: rows without --finetune, side by side with the pre-trained ones.
    (tmp_path / "r.csv").write_text(
        (tmp_path / "r.csv").read_text()
        + f"PTBXL,superdiagnostic,12,0.01,random,0,linear,m,,0.70,0,0,9,,{out / 'r0'}\n"
        + f"PTBXL,superdiagnostic,12,0.01,random,1,linear,m,,0.72,0,0,9,,{out / 'r1'}\n"
    )
    assert rp.collect(tmp_path / "r.csv", out) == res
    rnd = rp.collect(tmp_path / "r.csv", out, rp.RANDOM)
    assert rnd == {("ptbxl_super", 0.01): pytest.approx([70.0, 72.0])}
    both = rp.format_table(res, baseline=rnd)
    assert both.splitlines()[0].startswith("| task | 1 % ours | 1 % random init | 1 % paper | 10 % ours |")
    assert "| PTB-XL super | 82.00 +- 2.00 (n=3) | 71.00 +- 1.41 (n=2) | 78.94 | - | - | 85.59 |" in both
    (tmp_path / "bad.csv").write_text(HEAD + f"MITBIH,all,12,1,random,0,linear,m,x,0.5,0,0,9,,{out / 'q'}\n")
    with pytest.raises(ValueError, match="unknown data set"):
        rp.collect(tmp_path / "bad.csv", out)


@pytest.mark.slow
@pytest.mark.dist
def test_driver_end_to_end_on_synthetic_cohort(tmp_path, repo_root, demo_smoke):
    """The driver on the shared smoke run's tokenised PTB-XL cohort (60 synthetic records) and its pre-trained
    HeartLang_tiny checkpoint (tests/conftest.demo_smoke); the driver's own runs go to tmp_path."""
    env = dict(os.environ, OMP_NUM_THREADS="1", HEARTLANG_NO_PROGRESS="1", PYTHONPATH=str(repo_root))

    def sh(*cmd):
        proc = subprocess.run(
            [sys.executable, *cmd], cwd=repo_root, env=env, capture_output=True, text=True, timeout=200
        )
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        return proc.stdout

    data, ckpt = (
        demo_smoke.out / "ecg_datasets",
        demo_smoke.out / "checkpoints" / "pretrain" / "checkpoint-1.pth",
    )
    assert ckpt.is_file() and (data / "PTBXL_QRS" / "superdiagnostic" / "train_labels.npy").is_file()
    argv = ["scripts/reproduce_paper.py", "--finetune", str(ckpt), "--model", "HeartLang_finetune_tiny",
            "--data_root", str(data), "--output_dir", str(tmp_path / "runs"), "--tasks", "ptbxl_super",
            "--ratios", "1", "--seeds", "0", "--epochs", "1", "--warmup_epochs", "1", "--batch_size", "8",
            "--num_workers", "0"]  # fmt: skip
    log = sh(*argv)
    # One seed x (pre-trained, random init by default) x (train, --eval); several seeds: the table test above.
    assert log.count("run_class_finetuning.py") == 4 and log.count("--eval") == 2
    table = (tmp_path / "runs" / "table.md").read_text()
    assert "| PTB-XL super | " in table and "(n=1) | 87.52 |" in table and "100 % random init" in table
    assert "AUC difference [95 % CI]" in table and "plain,1000,seed0" in table
    res = rp.collect(tmp_path / "runs" / "results.csv", tmp_path / "runs")
    assert list(res) == [("ptbxl_super", 1.0)] and all(0 <= v <= 100 for v in res[("ptbxl_super", 1.0)])
    # A second call skips the finished training runs (resume) and re-evaluates.
    again = sh(*argv)
    assert again.count("skipped") == 2
    assert rp.collect(tmp_path / "runs" / "results.csv", tmp_path / "runs") == res
