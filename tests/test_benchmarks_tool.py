"""The benchmark tool: ``python -m benchmarks`` subcommands, the shared results writer (command, date, machine,
no absolute paths), peak memory of a process tree, and the scale rehearsal end to end at a tiny N."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from benchmarks import common
from benchmarks.__main__ import SUBCOMMANDS
from benchmarks.__main__ import main as tool_main
from benchmarks.scale import check_requirements
from benchmarks.scale import main as scale_main


def test_results_carry_command_date_machine_and_refuse_absolute_paths(tmp_path):
    out = common.write_results("demo", {"value": 1.5, "dir": "data/x"}, ["--work_dir", str(tmp_path), "--n", "3"],
                               out=tmp_path / "r.json")  # fmt: skip
    common.write_results("demo", {"value": 2.5}, [], label="other", out=out)
    stored = json.loads(out.read_text())
    assert stored["benchmark"] == "demo" and list(stored["runs"]) == ["latest", "other"]  # a run keeps the others
    record = stored["runs"]["latest"]
    assert record["command"] == "python -m benchmarks demo --work_dir <outside the repository> --n 3"
    assert record["value"] == 1.5 and record["date"].endswith("UTC") and record["machine"]["cores"] >= 1
    inside = common.portable_arg(f"--out={common.REPO / 'benchmarks' / 'results' / 'a.json'}")
    assert inside == "--out=benchmarks/results/a.json"
    for bad in ({"path": str(tmp_path)}, {"runs": [{"cmd": f"tool --in {tmp_path}"}]}, {"x": str(common.REPO)}):
        with pytest.raises(ValueError, match="absolute paths"):
            common.write_results("demo", bad, [], out=tmp_path / "bad.json")
    assert not (tmp_path / "bad.json").exists()


def test_peak_memory_sees_the_children():
    code = "import subprocess,sys; subprocess.run([sys.executable,'-c','b=bytearray(200*2**20); import time; time.sleep(1)'])"
    res = common.run_measured([sys.executable, "-c", code])
    assert res["peak_anon_mb"] > 200 and res["peak_rss_mb"] >= res["peak_anon_mb"] and res["wall_s"] >= 1
    with pytest.raises(RuntimeError, match="failed \\(exit 3\\)"):
        common.run_measured([sys.executable, "-c", "import sys; sys.exit(3)"])


def test_tool_lists_and_dispatches(capsys):
    assert tool_main([]) == 0
    listing = capsys.readouterr().out
    assert all(f"  {name} " in listing for name in SUBCOMMANDS)
    assert tool_main(["no_such_bench"]) == 2
    run = subprocess.run([sys.executable, "-m", "benchmarks", "scale", "--help"], capture_output=True, text=True,
                         cwd=common.REPO)  # fmt: skip
    assert run.returncode == 0 and "--batch_folders" in run.stdout


def _run(n, cpu_ms, anon, startup_s=0.0):
    cpu_s = startup_s + cpu_ms * n / 1000
    stages = {s: {"cpu_ms_per_record": 1000 * cpu_s / n, "cpu_s": cpu_s, "records": n, "peak_anon_mb": anon,
                  "peak_rss_mb": anon, "wall_s": n / 100}
              for s in ("generate", "preprocess", "tokenize", "targets", "loader")}  # fmt: skip
    return {"records": n, "stages": stages}


def test_marginal_cost_leaves_the_fixed_startup_out():
    # 6 s of start-up + 0.5 ms per record: CPU per record falls with N, the cost per added record does not.
    flat = check_requirements([_run(n, 0.5, 300, startup_s=6.0) for n in (1000, 10000, 50000)])["tokenize"]
    assert flat["cpu_per_record_ratio"] < 0.85 and not flat["time_ok"]
    assert flat["marginal_cpu_ms_per_record"] == [0.5, 0.5] and flat["marginal_ratio"] == 1.0
    grows = check_requirements([_run(1000, 0.5, 300), _run(10000, 0.5, 300), _run(50000, 0.7, 300)])["tokenize"]
    assert grows["marginal_ratio"] > 1.15


def test_requirements_compare_the_two_largest_sizes():
    ok = check_requirements([_run(1000, 9.0, 100), _run(10000, 2.0, 300), _run(50000, 2.2, 330)])
    assert ok["preprocess"]["from_to"] == [10000, 50000]
    assert ok["preprocess"]["time_ok"] and ok["preprocess"]["memory_ok"]
    bad = check_requirements([_run(1000, 9.0, 100), _run(10000, 2.0, 300), _run(50000, 2.4, 400)])["tokenize"]
    assert (bad["cpu_per_record_ratio"], bad["time_ok"], bad["memory_ok"]) == (1.2, False, False)


@pytest.mark.slow
def test_scale_rehearsal_runs_every_stage_at_tiny_n(tmp_path):
    out = tmp_path / "scale.json"
    result = scale_main(["--sizes", "24", "--batch_folders", "4", "--num_workers", "1", "--loader_batch_size", "4",
                         "--work_dir", str(tmp_path / "work"), "--out", str(out)])  # fmt: skip
    run = result["sizes"][0]
    assert run["batch_folders"] == ["batch_0", "batch_1", "batch_2", "batch_3"] and run["batch_size"] == 6
    stages = run["stages"]
    assert set(stages) == {"generate", "preprocess", "tokenize", "targets", "loader"}
    for row in stages.values():
        assert row["wall_s"] > 0 and row["peak_rss_mb"] > 0 and row["records_per_s"] > 0
    assert stages["generate"]["bytes_written"] > 24 * 120_000
    # 4 folders of 6 records, 1 validation record each (ceil(0.1 * 6)): 20 train sentences, 5 full batches of 4
    assert stages["loader"]["records"] == 20 and stages["loader"]["folders"] == 4
    # a fifth of the epoch (4 samples: one batch), then the whole epoch; the CPU per added sample between them
    assert stages["loader"]["first_fifth"]["samples"] == 4
    assert stages["loader"]["epoch_cpu_s"] >= 0 and stages["loader"]["cpu_ms_per_added_sample"] is not None
    assert stages["targets"]["bytes_written"] > 24 * 256 * 2  # uint16 targets of every sentence + stamps
    assert not (tmp_path / "work" / "n24").exists()  # generated data deleted
    assert json.loads(out.read_text())["runs"]["latest"]["sizes"][0]["records"] == 24


def test_gpu_check_cpu_dry_path(tmp_path):
    """The gpu benchmark (prepared for one H100/H200) runs end to end on CPU with tiny models."""
    import benchmarks.gpu as gpu_check

    out = tmp_path / "gpu_check.json"
    res = gpu_check.main(["--device", "cpu", "--models", "tiny", "--steps", "1", "--warmup", "0", "--batch_size", "2",
                          "--compile_backend", "eager", "--stages", "pretrain_cached", "probe_train_mode", "--out", str(out),
                          "--ddp_steps", "2", "--ddp_backend", "gloo", "--nproc", "2", "--ddp_stages", "vqhbr"])  # fmt: skip
    rows = json.loads(out.read_text())["runs"]["latest"]["rows"]
    assert len(rows) == len(res["rows"]) == 2 * 5  # 2 stages x (bf16/fp16 x SDPA/plain + compiled)
    assert {(r["attention"], r["compiled"]) for r in rows} == {
        ("sdpa", False),
        ("plain", False),
        ("sdpa", True),
    }
    assert all(r["samples_per_s"] > 0 and r["mfu"] is None for r in rows)  # no GPU peak to divide by on CPU
    assert res["agreement"]["plain_vs_sdpa_max_abs_logit_diff"] < 1e-4
    # the 1-node data-parallel run: 2 gloo processes, VQ-HBR in bf16 and fp16 (CPU: fp32), each rank its batch
    ddp = json.loads(out.read_text())["runs"]["latest"]["ddp"]
    assert [(r["stage"], r["precision_requested"], r["world_size"], r["steps"]) for r in ddp] == [
        ("vqhbr", "bf16", 2, 2),
        ("vqhbr", "fp16", 2, 2),
    ]
    assert all(r["samples_per_s"] == pytest.approx(2 * 2 / r["step_s"]) and r["mfu"] is None for r in ddp)


def test_mfu_arithmetic():
    from benchmarks.gpu import mfu

    # 989 TFLOP/s peak, 98.9 TFLOP per step in 0.25 s: 395.6 TFLOP/s achieved = 40 %
    assert mfu(98.9e12, 0.25, 989.0) == pytest.approx(0.40)
    assert mfu(1e12, 1.0, None) is None and mfu(1e12, 1.0, 0.0) is None


def test_gpu_flags_parse_without_a_gpu():
    from benchmarks.gpu import main as gpu_main

    with pytest.raises(SystemExit, match="no CUDA device here"):  # parsed, then refused before any work
        gpu_main(["--ddp_steps", "300", "--ddp_stages", "vqhbr", "finetune_all", "--nproc", "8"])


def test_profile_measures_the_step_shares_and_the_tokenizer_paths(tmp_path):
    """``python -m benchmarks profile`` at the test sizes: tiny models, 8 real records (when shared/data has them)."""
    import torch

    from benchmarks.profile import main as profile_main
    from benchmarks.profile import ptbxl_heads

    threads = torch.get_num_threads()
    out = tmp_path / "profile.json"
    res = profile_main(["--models", "tiny", "--batch_sizes", "2", "--records", "8", "--out", str(out)])
    assert torch.get_num_threads() == threads  # the process's thread count is restored
    stored = json.loads(out.read_text())["runs"]["latest"]
    assert stored["command"].startswith("python -m benchmarks profile --models tiny")
    row = stored["pretraining"]["by_batch_size"]["2"]
    for side in ("original", "ours"):
        r = row[side]
        assert r["step_ms"] > 0 and 0 < r["matrix_products_pct"] < 100 and 0 < r["optimizer_step_pct"] < 100
    # the original's step runs the tokenizer forward and torch's dropout; ours neither (cached targets, fast dropout)
    assert row["original"]["tokenizer_forward_pct"] > 0 and row["original"]["torch_dropout_pct"] > 0
    assert row["ours"]["tokenizer_forward_pct"] == 0 and row["ours"]["torch_dropout_pct"] == 0
    pre = stored["pretraining"]
    assert 0 < pre["tokenizer_forward_pct_of_original_step_flops"] < 100
    tok = stored["tokenizer"]
    if not ptbxl_heads():
        assert "skipped" in tok
        return
    assert tok["records"] == 8 and tok["workers"] == 2
    assert 0 < tok["reference_xqrs_detect_pct"] <= 100 and 0 < tok["ours_xqrs_fast_detect_pct"] <= 100
    assert tok["reference_xqrs_detect_cpu_ms_per_record"] <= tok["reference_path_cpu_ms_per_record"]
    assert tok["ours_workers_main_process_cpu_ms_per_record"] > 0 and res["tokenizer"] == tok


def test_target_cache_memory_mode_measures_one_split_per_size(tmp_path):
    out = tmp_path / "scale.json"
    result = scale_main(["--target_cache_splits", "8", "20", "--work_dir", str(tmp_path), "--out", str(out),
                         "--label", "targets"])  # fmt: skip
    rows = result["target_cache_one_split"]
    assert [r["sentences"] for r in rows] == [8, 20]
    assert all(r["peak_anon_mb"] > 0 and r["cpu_s"] > 0 for r in rows)
    assert json.loads(out.read_text())["runs"]["targets"]["target_cache_one_split"][1]["sentences"] == 20
    assert [p.name for p in tmp_path.iterdir()] == ["scale.json"]  # the generated splits are removed


def test_contention_times_both_wait_policies_per_setting(tmp_path):
    from benchmarks.contention import main as contention_main

    out = tmp_path / "contention.json"
    result = contention_main(["--threads", "1", "--busy", "0", "1", "--steps", "1", "--rounds", "1", "--out", str(out)])
    rows = result["rows"]
    assert [(r["busy_processes"], r["wait_policy"]) for r in rows] == [
        (0, "default"), (0, "PASSIVE"), (1, "default"), (1, "PASSIVE")
    ]
    assert all(r["seconds"] > 0 and r["slowdown_vs_idle_default"] > 0 for r in rows)
    assert rows[0]["slowdown_vs_idle_default"] == 1.0
    assert json.loads(out.read_text())["runs"]["latest"]["rows"] == rows
