"""Hostile inputs for the three training stages (classes 1, 3, 4 and 5 of docs/robustness.md, "Training stages").

Each test is one case: a bad input or command given to one stage, and the exact outcome asserted - refused
with a message naming the cause (and nothing written or changed), resumed/redone with correct outputs, or
reported. ``@case(cls, stage, outcome)`` tags it; `python -m benchmarks robustness` counts the cases per class.
Tiny models on the toy folders of tests/_train_data.py; the concurrent-writer cases run a 2-process torchrun
on CPU, kill its launcher with SIGKILL and relaunch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tests._train_data import make_downstream, make_pretrain
from utils.integrity import BusyOutputDirError, NonFiniteError, OutputDirLock, StaleOutputError

SETTINGS, CONCURRENT, NONFINITE, ARGS = (
    "changed_settings",
    "concurrent_writers",
    "nonfinite_degenerate",
    "bad_arguments",
)
VQ, PT, FT = "run_vqhbr_training.py", "run_heartlang_pretraining.py", "run_class_finetuning.py"
COMMON = ["--batch_size", "4", "--num_workers", "0", "--warmup_epochs", "1"]
TINY_VQ = ["--model", "vqhbr_tiny", "--codebook_n_emd", "64", "--codebook_emd_dim", "16"]


def case(cls: str, stage: str, outcome: str):
    """Tag a test: issue class, stage, expected outcome (refused | resumed | redone | kept | reported)."""

    def tag(fn):
        fn.robustness = {"class": cls, "stage": stage, "outcome": outcome}
        return fn

    return tag


def _main(script: str, argv: list[str]):
    os.environ["HEARTLANG_NO_PROGRESS"] = "1"
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "TORCHELASTIC_RUN_ID"):
        os.environ.pop(var, None)
    module = importlib.import_module(script[:-3])
    return module.main(module.get_args_parser().parse_args([str(a) for a in argv]))


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _snapshot(folder: Path) -> dict:
    """Content of every file in a run folder except the lock (what a refused command must leave as it was)."""
    return {p.name: _sha(p) for p in sorted(folder.iterdir()) if p.is_file() and p.name != ".lock"}


def _perturbed_copy(src: Path, dst: Path, value: float | None = None) -> Path:
    """A checkpoint with the same layout and other weights (``value``: one tensor entry set to it)."""
    state = torch.load(src, weights_only=True, map_location="cpu")
    key = next(k for k, v in state["model"].items() if v.is_floating_point() and v.numel() > 1)
    t = state["model"][key].clone()
    t.view(-1)[0] = value if value is not None else t.view(-1)[0] + 0.5
    state["model"][key] = t
    torch.save(state, dst)
    return dst


# ------------------------------------------------------------------------------------ trained folders
@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One finished run of each stage (1 epoch each): VQ-HBR -> pre-training -> linear probe."""
    root = tmp_path_factory.mktemp("robust_train")
    pre, down = make_pretrain(root), make_downstream(root)
    vq, pt, ft = root / "vq", root / "pt", root / "ft"
    vq_argv = [*TINY_VQ, "--dataset_dir", pre, "--epochs", "1", *COMMON]
    _main(VQ, [*vq_argv, "--output_dir", vq])
    pt_argv = ["--model", "HeartLang_tiny", "--tokenizer_model", "vqhbr_tiny", "--tokenizer_weight",
               vq / "checkpoint.pth", "--codebook_size", "64", "--codebook_dim", "16", "--dataset_dir", pre,
               "--epochs", "1", *COMMON]  # fmt: skip
    _main(PT, [*pt_argv, "--output_dir", pt])
    ft_argv = ["--model", "HeartLang_finetune_tiny", "--trainable", "linear", "--nb_classes", "3", "--is_binary",
               "--dataset_dir", down, "--finetune", pt / "checkpoint.pth", "--epochs", "1", *COMMON]  # fmt: skip
    _main(FT, [*ft_argv, "--output_dir", ft])
    return dataclasses.make_dataclass("Runs", ["root", "pre", "down", "vq", "pt", "ft", "vq_argv", "pt_argv", "ft_argv"])(
        root, pre, down, vq, pt, ft, vq_argv, pt_argv, ft_argv
    )  # fmt: skip


def _copy_run(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / src.name
    shutil.copytree(src, dst)  # copy2 keeps the files' mtimes: the same inputs, the same outputs
    return dst


def _with(argv: list, flag: str, value) -> list:
    """``argv`` with ``flag`` set to ``value`` (replaced when present, else appended)."""
    argv = list(argv)
    if flag in argv:
        argv[argv.index(flag) + 1] = value
        return argv
    return [*argv, flag, value]


# ------------------------------------------------------------------------------ 1. changed settings
@pytest.mark.parametrize(
    "flag,value,named",
    [
        ("--seed", "1", "--seed: 0 -> 1"),
        ("--split_ratio", "0.5", "--split_ratio: 1.0 -> 0.5"),
        ("--lr", "0.01", "--lr: 0.005 -> 0.01"),
        ("--finetune", "OTHER", "input finetune_sha256: "),
    ],
)
@case(SETTINGS, "finetune", "refused")
def test_finetune_rerun_with_other_settings_is_refused(runs, tmp_path, capsys, flag, value, named):
    """The reported case: the same --output_dir with another --seed/--split_ratio/--finetune trained nothing
    ("training time 0.0 s") and reported the old model under the new settings."""
    out = _copy_run(runs.ft, tmp_path)
    if value == "OTHER":
        value = _perturbed_copy(runs.pt / "checkpoint.pth", tmp_path / "other.pth")
    before = _snapshot(out)
    with pytest.raises(StaleOutputError, match="holds a run made with other settings") as err:
        _main(FT, _with([*runs.ft_argv, "--output_dir", out], flag, value))
    assert named in str(err.value) and "--resume" in str(err.value)
    assert len(str(err.value).split("\n  ")) == 2, str(err.value)  # exactly the one differing setting named
    assert "training time" not in capsys.readouterr().out
    assert _snapshot(out) == before


@case(SETTINGS, "finetune", "kept")
def test_finetune_finished_run_with_same_settings_says_so(runs, tmp_path, capsys):
    out = _copy_run(runs.ft, tmp_path)
    before = _snapshot(out)
    # Harmless flags (engine.config.HARMLESS_SETTINGS) do not make it another run.
    _main(FT, [*runs.ft_argv, "--output_dir", out, "--dist_eval", "--save_ckpt_freq", "7", "--no_pin_mem"])
    text = capsys.readouterr().out
    assert "all 1 epochs are already done with the same settings" in text and "training time" not in text
    assert {k: v for k, v in _snapshot(out).items() if k not in ("run.json", "args.json", "training_curves.png")} == {
        k: v for k, v in before.items() if k not in ("run.json", "args.json", "training_curves.png")
    }  # fmt: skip


@case(SETTINGS, "finetune", "resumed")
def test_finetune_resume_path_continues_deliberately(runs, tmp_path, capsys):
    out = _copy_run(runs.ft, tmp_path)
    argv = _with(_with([*runs.ft_argv, "--output_dir", out], "--seed", "1"), "--epochs", "2")
    _main(FT, [*argv, "--resume", out / "checkpoint.pth"])
    text = capsys.readouterr().out
    assert (
        "WARNING: --resume given: continuing although the settings changed" in text
        and "--seed: 0 -> 1" in text
    )
    log = [json.loads(line) for line in (out / "log.txt").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [0, 1]  # epoch 0 kept, epoch 1 trained, nothing twice
    assert json.loads((out / "run.json").read_text())["fingerprint"]["settings"]["seed"] == 1


@pytest.mark.parametrize("flag,value", [("--seed", "1"), ("--split_ratio", "0.1")])
@case(SETTINGS, "finetune_eval", "refused")
def test_eval_of_a_folder_trained_with_other_settings_is_refused(runs, tmp_path, flag, value):
    out = _copy_run(runs.ft, tmp_path)
    csv_path = tmp_path / "results.csv"
    argv = _with([*runs.ft_argv, "--output_dir", out, "--eval", "--results_csv", csv_path], flag, value)
    with pytest.raises(StaleOutputError, match=rf"--eval: .* other settings .*\n  {flag}: "):
        _main(FT, argv)
    assert not csv_path.exists()


@case(SETTINGS, "finetune", "refused")
def test_finetune_rerun_after_the_data_changed_names_the_file(runs, tmp_path):
    down = tmp_path / "data"
    shutil.copytree(runs.down, down)
    out = _copy_run(runs.ft, tmp_path)
    (out / "run.json").write_text((out / "run.json").read_text())  # same record, data folder moved
    argv = _with([*runs.ft_argv, "--output_dir", out], "--dataset_dir", down)
    _main(FT, argv)  # a moved (copied with its mtimes) data folder is the same input: nothing to train
    labels = np.load(down / "train_labels.npy")
    labels[:, 1] = 1 - labels[:, 1]
    np.save(down / "train_labels.npy", labels)
    with pytest.raises(
        StaleOutputError, match=r"input dataset: 1 file\(s\) changed: train_labels.npy \(rewritten\)"
    ):
        _main(FT, argv)


@case(SETTINGS, "finetune", "refused")
def test_no_save_ckpt_run_cannot_be_mixed_with_another(runs, tmp_path):
    """--no_save_ckpt leaves only log.txt: another seed would have appended its epochs to that log."""
    out = tmp_path / "nockpt"
    argv = [*runs.ft_argv, "--output_dir", out, "--no_save_ckpt"]
    _main(FT, argv)
    with pytest.raises(StaleOutputError, match=r"--seed: 0 -> 2"):
        _main(FT, _with(argv, "--seed", "2"))
    assert len((out / "log.txt").read_text().splitlines()) == 1


@case(SETTINGS, "finetune", "redone")
def test_same_command_without_checkpoint_retrains_without_duplicate_log_lines(runs, tmp_path):
    out = tmp_path / "nockpt"
    argv = [*runs.ft_argv, "--output_dir", out, "--no_save_ckpt"]
    _main(FT, argv)
    _main(FT, argv)  # nothing to resume from: epoch 0 is trained again, its old log line replaced
    assert [json.loads(line)["epoch"] for line in (out / "log.txt").read_text().splitlines()] == [0]


@case(SETTINGS, "vqhbr", "refused")
def test_vqhbr_rerun_with_another_codebook_is_refused(runs, tmp_path):
    out = _copy_run(runs.vq, tmp_path)
    before = _snapshot(out)
    with pytest.raises(StaleOutputError, match=r"--codebook_n_emd: 64 -> 32"):
        _main(VQ, _with([*runs.vq_argv, "--output_dir", out], "--codebook_n_emd", "32"))
    assert _snapshot(out) == before


@case(SETTINGS, "pretrain", "refused")
def test_pretrain_rerun_with_another_tokenizer_is_refused(runs, tmp_path):
    out = _copy_run(runs.pt, tmp_path)
    other = _perturbed_copy(runs.vq / "checkpoint.pth", tmp_path / "other_vq.pth")
    before = _snapshot(out)
    with pytest.raises(StaleOutputError, match=r"input tokenizer_sha256: "):
        _main(PT, _with([*runs.pt_argv, "--output_dir", out], "--tokenizer_weight", other))
    assert _snapshot(out) == before


# ---------------------------------------------------------------------------- 4. concurrent writers
def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ")[-1][0] != "Z"  # a zombie is dead
    except FileNotFoundError:
        return False


def _torchrun_cmd(argv: list) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        *map(str, argv),
    ]


def _env() -> dict:
    root = str(Path(__file__).resolve().parents[1])
    return {**os.environ, "OMP_NUM_THREADS": "1", "HEARTLANG_NO_PROGRESS": "1", "PYTHONPATH": root}


@pytest.fixture(scope="module")
def killed_run(runs):
    """A 2-process torchrun fine-tuning (6 epochs). Once it has logged an epoch, its workers are paused
    (SIGSTOP: the test then does not depend on machine speed) and the same command is launched again;
    then the first launcher gets kill -9 and its workers SIGCONT (a pending parent-death SIGTERM acts then;
    without it they would go on training); then the same command once more."""
    out = runs.root / "ft_torchrun"
    argv = [FT, *_with(_with(runs.ft_argv, "--epochs", "6"), "--trainable", "all"), "--output_dir", out]
    root = Path(__file__).resolve().parents[1]
    first = subprocess.Popen(_torchrun_cmd(argv), cwd=root, env=_env(), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT)  # fmt: skip
    workers: list[int] = []
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not (
            (out / "log.txt").is_file() and (out / "log.txt").stat().st_size
        ):
            assert first.poll() is None, first.stdout.read().decode()[-3000:]
            time.sleep(0.05)
        workers = _children(first.pid)
        for p in workers:
            os.kill(p, signal.SIGSTOP)
        log_at_kill = (out / "log.txt").read_text().splitlines()
        second = subprocess.run(_torchrun_cmd(argv), cwd=root, env=_env(), capture_output=True, text=True,
                                timeout=120)  # fmt: skip
        first.send_signal(signal.SIGKILL)
        first.wait()
        t_kill = time.time()
        for p in workers:
            os.kill(p, signal.SIGCONT)
        while time.time() - t_kill < 15 and any(_alive(p) for p in workers):
            time.sleep(0.05)
        survivors = [p for p in workers if _alive(p)]
        seconds_to_die = time.time() - t_kill
    finally:
        if first.poll() is None:
            first.kill()
        for p in workers:  # never leave a stray trainer behind, whatever the test says
            if _alive(p):
                os.kill(p, signal.SIGKILL)
    third = subprocess.run(
        _torchrun_cmd(argv), cwd=root, env=_env(), capture_output=True, text=True, timeout=180
    )
    return dataclasses.make_dataclass("Killed", ["out", "first_pid", "workers", "second", "log_at_kill",
                                                 "survivors", "seconds_to_die", "third"])(
        out, first.pid, workers, second, log_at_kill, survivors, seconds_to_die, third
    )  # fmt: skip


@pytest.mark.dist
@pytest.mark.slow
@case(CONCURRENT, "finetune_torchrun", "refused")
def test_second_launch_into_a_busy_folder_is_refused_naming_the_holder(killed_run):
    k = killed_run
    text = k.second.stdout + k.second.stderr
    assert k.second.returncode != 0, text[-3000:]
    assert "BusyOutputDirError" in text and f"{k.out} is in use by another run" in text
    holder = [p for p in k.workers if f'"pid":{p}' in text]
    assert holder, f"the refusal does not name a worker of the running launch {k.workers}:\n{text[-2000:]}"


@pytest.mark.dist
@pytest.mark.slow
@case(CONCURRENT, "finetune_torchrun", "stopped")
def test_kill9_of_the_launcher_leaves_no_worker(killed_run):
    k = killed_run
    assert len(k.workers) == 2
    assert k.survivors == [], f"workers {k.survivors} survived kill -9 of their launcher {k.first_pid}"
    assert k.seconds_to_die < 10


@pytest.mark.dist
@pytest.mark.slow
@case(CONCURRENT, "finetune_torchrun", "resumed")
def test_relaunch_after_kill9_resumes_and_logs_every_epoch_once(killed_run):
    k = killed_run
    assert k.third.returncode == 0, (k.third.stdout + k.third.stderr)[-3000:]
    assert 1 <= len(k.log_at_kill) < 6  # it was killed mid-run
    log = (k.out / "log.txt").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in log] == list(range(6))  # every epoch once, none lost
    assert (
        log[: len(k.log_at_kill)] == k.log_at_kill
    )  # resumed: the killed run's epochs were kept, not redone
    assert torch.load(k.out / "checkpoint.pth", weights_only=True)["epoch"] == 5
    assert json.loads((k.out / ".lock").read_text())["pid"] != k.first_pid


@pytest.mark.parametrize("script", [VQ, PT, FT])
@case(CONCURRENT, "all", "refused")
def test_live_lock_holder_refuses_every_stage(runs, tmp_path, script):
    argv = {VQ: runs.vq_argv, PT: runs.pt_argv, FT: runs.ft_argv}[script]
    out = tmp_path / "busy"
    holder = OutputDirLock(out).acquire()  # another open file description: conflicts like another process
    try:
        with pytest.raises(BusyOutputDirError, match=rf"in use by another run .*\"pid\":{os.getpid()}"):
            _main(script, [*argv, "--output_dir", out])
    finally:
        holder.release()
    assert sorted(p.name for p in out.iterdir()) == [".lock"]  # nothing written


@case(CONCURRENT, "pretrain", "resumed")
def test_stale_lock_of_a_dead_process_is_taken_over(runs, tmp_path):
    out = _copy_run(runs.pt, tmp_path)
    dead = subprocess.Popen(["true"])
    dead.wait()
    (out / ".lock").write_text(json.dumps({"pid": dead.pid, "host": os.uname().nodename, "argv": "old"}))
    _main(
        PT, [*runs.pt_argv, "--output_dir", out]
    )  # finished run, same settings: takes the lock, trains nothing
    assert json.loads((out / ".lock").read_text())["pid"] == os.getpid()


_HOLDER = """
import fcntl, json, sys, time
fh = open(sys.argv[1], "a+")
fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
fh.seek(0); fh.truncate(); fh.write(json.dumps({"pid": int(sys.argv[2]), "host": sys.argv[3]})); fh.flush()
print("locked", flush=True)
time.sleep(float(sys.argv[4]))
"""


@case(CONCURRENT, "output_dir_lock", "resumed")
def test_lock_kept_by_children_of_a_dead_holder_is_waited_for(tmp_path):
    """A killed trainer's data-loader workers inherit its lock for a few seconds: wait, do not refuse."""
    dead = subprocess.Popen(["true"])
    dead.wait()
    child = subprocess.Popen([sys.executable, "-c", _HOLDER, str(tmp_path / ".lock"), str(dead.pid),
                              os.uname().nodename, "1.5"], stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert child.stdout.readline().strip() == "locked"
    t0 = time.time()
    with OutputDirLock(tmp_path):
        assert time.time() - t0 > 0.5
    child.wait()
    live = subprocess.Popen([sys.executable, "-c", _HOLDER, str(tmp_path / ".lock"), str(os.getpid()),
                             os.uname().nodename, "30"], stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert live.stdout.readline().strip() == "locked"
        t0 = time.time()
        with pytest.raises(BusyOutputDirError):
            OutputDirLock(tmp_path).acquire()
        assert time.time() - t0 < 2  # a live holder is refused at once
    finally:
        live.kill()
        live.wait()


# --------------------------------------------------------------------------------------- 3. non-finite
@case(NONFINITE, "finetune", "refused")
def test_finetune_checkpoint_with_nan_weights_is_refused(runs, tmp_path):
    bad = _perturbed_copy(runs.pt / "checkpoint.pth", tmp_path / "nan.pth", value=float("nan"))
    with pytest.raises(NonFiniteError, match=rf"checkpoint {bad}: tensor .*: 1 non-finite"):
        _main(FT, _with([*runs.ft_argv, "--output_dir", tmp_path / "out"], "--finetune", bad))
    assert not (tmp_path / "out" / "log.txt").exists()


@case(NONFINITE, "pretrain", "refused")
def test_tokenizer_with_inf_weights_is_refused(runs, tmp_path):
    bad = _perturbed_copy(runs.vq / "checkpoint.pth", tmp_path / "inf.pth", value=float("inf"))
    with pytest.raises(NonFiniteError, match=rf"checkpoint {bad}: tensor .*non-finite"):
        _main(PT, _with([*runs.pt_argv, "--output_dir", tmp_path / "out"], "--tokenizer_weight", bad))
    assert not (tmp_path / "out" / "log.txt").exists()


@case(NONFINITE, "vqhbr", "refused")
def test_resume_from_a_checkpoint_with_nan_weights_is_refused(runs, tmp_path):
    out = _copy_run(runs.vq, tmp_path)
    _perturbed_copy(out / "checkpoint.pth", out / "checkpoint.pth", value=float("nan"))
    with pytest.raises(NonFiniteError, match=rf"checkpoint {out / 'checkpoint.pth'}: tensor"):
        _main(VQ, [*runs.vq_argv, "--output_dir", out])


@case(NONFINITE, "export_features", "refused")
def test_export_features_refuses_nan_weights(runs, tmp_path):
    import export_features

    bad = _perturbed_copy(runs.pt / "checkpoint.pth", tmp_path / "nan.pth", value=float("nan"))
    args = export_features.get_args_parser().parse_args(
        ["--checkpoint", str(bad), "--dataset_dir", str(runs.down), "--output", str(tmp_path / "f.npy")]
    )
    with pytest.raises(NonFiniteError, match=rf"checkpoint {bad}: tensor"):
        export_features.main(args)
    assert not (tmp_path / "f.npy").exists()


def _poison(folder: Path, split: str, row: int) -> None:
    data = np.load(folder / f"{split}_data.npy")
    data[row, 3, 10] = np.nan
    np.save(folder / f"{split}_data.npy", data)


@pytest.mark.parametrize("script", [VQ, PT, FT])
@case(NONFINITE, "all", "refused")
def test_nan_sentence_stops_training_naming_the_record(runs, tmp_path, script):
    """NaN words (official tokenizer policy) make the loss NaN: the error names the record, not only the step."""
    if script == FT:
        data = tmp_path / "TOY_QRS" / "form"
        shutil.copytree(runs.down, data)
        _poison(data, "train", 5)
        where = f"{data}/train_data.npy row 5"
        argv = _with(runs.ft_argv, "--dataset_dir", data)
    else:
        data = tmp_path / "MIMIC-IV_QRS"
        shutil.copytree(runs.pre, data)
        _poison(data / "batch_2", "train", 3)
        where = f"{data / 'batch_2'}/train_data.npy row 3"
        argv = _with(runs.vq_argv if script == VQ else runs.pt_argv, "--dataset_dir", data)
    with pytest.raises(FloatingPointError, match=r"loss is nan at epoch 0") as err:
        _main(script, [*argv, "--output_dir", tmp_path / "out"])
    assert f"1 of the batch's 4 samples hold NaN/inf input or labels: {where}." in str(err.value)
    assert not (tmp_path / "out" / "checkpoint.pth").exists()


@case(NONFINITE, "finetune", "reported")
def test_diverging_loss_is_reported_as_divergence_with_its_records(runs, tmp_path):
    argv = _with(_with(runs.ft_argv, "--lr", "1e38"), "--epochs", "3")
    with pytest.raises(FloatingPointError, match=r"inputs are finite, so the optimisation diverged .* Its samples: "
                       rf"{runs.down}/train_data.npy row \d+"):  # fmt: skip
        _main(FT, [*argv, "--output_dir", tmp_path / "out", "--clip_grad", "1e38"])


# -------------------------------------------------------------------------------------- 5. arguments
@pytest.mark.parametrize(
    "script,flag,value,message",
    [
        (FT, "--split_ratio", "0", r"--split_ratio must be in \(0, 1\], got 0.0"),
        (FT, "--split_ratio", "1.5", r"--split_ratio must be in \(0, 1\], got 1.5"),
        (FT, "--epochs", "0", "--epochs must be >= 1, got 0"),
        (FT, "--batch_size", "0", "--batch_size must be >= 1, got 0"),
        (FT, "--nb_classes", "0", "--nb_classes must be >= 1, got 0"),
        (FT, "--clip_grad", "-1", r"--clip_grad must be > 0, got -1.0"),
        (PT, "--mask_ratio", "0", r"--mask_ratio must be in \(0, 1\), got 0.0"),
        (PT, "--mask_ratio", "1", r"--mask_ratio must be in \(0, 1\), got 1.0"),
        (PT, "--epochs", "-3", "--epochs must be >= 1, got -3"),
        (PT, "--codebook_size", "32", r"--codebook_size 32 does not match the tokenizer .* \(64\)"),
        (VQ, "--batch_size", "-2", "--batch_size must be >= 1, got -2"),
        (VQ, "--update_freq", "0", "--update_freq must be >= 1, got 0"),
        (VQ, "--ema_decay", "1.5", r"--ema_decay must be in \[0, 1\), got 1.5"),
        (VQ, "--lr", "0", "--lr must be > 0, got 0.0"),
    ],
)
@case(ARGS, "all", "refused")
def test_bad_argument_is_refused_before_anything_is_written(runs, tmp_path, script, flag, value, message):
    argv = {VQ: runs.vq_argv, PT: runs.pt_argv, FT: runs.ft_argv}[script]
    with pytest.raises(ValueError, match=message):
        _main(script, _with([*argv, "--output_dir", tmp_path / "out"], flag, value))
    assert not (tmp_path / "out").exists()


@case(ARGS, "finetune", "refused")
def test_nb_classes_other_than_the_label_width_is_refused_before_an_epoch(runs, tmp_path):
    with pytest.raises(ValueError, match=r"train_labels.npy has 3 label columns but --nb_classes is 5"):
        _main(FT, _with([*runs.ft_argv, "--output_dir", tmp_path / "out"], "--nb_classes", "5"))
    assert not (tmp_path / "out" / "log.txt").exists()


@case(ARGS, "finetune", "refused")
def test_empty_val_split_is_refused_before_an_epoch(runs, tmp_path):
    data = tmp_path / "TOY_QRS" / "form"
    shutil.copytree(runs.down, data)
    for name in ("val_data.npy", "val_data_in_chans.npy", "val_data_in_times.npy", "val_labels.npy"):
        a = np.load(data / name)
        np.save(data / name, a[:0])
    with pytest.raises(ValueError, match=rf"{data}: the val split has 0 records"):
        _main(FT, _with([*runs.ft_argv, "--output_dir", tmp_path / "out"], "--dataset_dir", data))
    assert not (tmp_path / "out" / "log.txt").exists()


@case(ARGS, "finetune_eval", "refused")
def test_empty_test_split_is_refused_by_eval(runs, tmp_path):
    data = tmp_path / "TOY_QRS" / "form"
    shutil.copytree(runs.down, data)
    for name in ("test_data.npy", "test_data_in_chans.npy", "test_data_in_times.npy", "test_labels.npy"):
        np.save(data / name, np.load(data / name)[:0])
    argv = _with([*runs.ft_argv, "--output_dir", tmp_path / "out"], "--dataset_dir", data)
    _main(FT, argv)
    csv_path = tmp_path / "r.csv"
    with pytest.raises(ValueError, match=rf"{data}: the test split has 0 records"):
        _main(FT, [*argv, "--eval", "--results_csv", csv_path])
    assert not csv_path.exists()


@case(ARGS, "finetune", "refused")
def test_vqhbr_checkpoint_as_finetune_is_refused(runs, tmp_path):
    vq = runs.vq / "checkpoint.pth"
    with pytest.raises(ValueError, match=rf"{vq} holds a VQ-HBR.* checkpoint; expected"):
        _main(FT, _with([*runs.ft_argv, "--output_dir", tmp_path / "out"], "--finetune", vq))
    assert not (tmp_path / "out" / "log.txt").exists()


@case(ARGS, "pretrain", "refused")
def test_heartlang_checkpoint_as_tokenizer_is_refused(runs, tmp_path):
    wrong = runs.pt / "checkpoint.pth"
    with pytest.raises(ValueError, match=rf"{wrong} holds .* checkpoint; expected .*VQ-HBR"):
        _main(PT, _with([*runs.pt_argv, "--output_dir", tmp_path / "out"], "--tokenizer_weight", wrong))
    assert not (tmp_path / "out").exists()  # refused before anything is written


@case(ARGS, "vqhbr", "refused")
def test_missing_dataset_dir_is_named(runs, tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match=rf"--dataset_dir {missing} does not exist"):
        _main(VQ, _with([*runs.vq_argv, "--output_dir", tmp_path / "out"], "--dataset_dir", missing))


def test_every_case_is_tagged():
    tests = {k: v for k, v in globals().items() if k.startswith("test_")}
    tagged = [v for v in tests.values() if hasattr(v, "robustness")]
    assert len(tagged) == len(tests) - 1
    assert {t.robustness["class"] for t in tagged} == {SETTINGS, CONCURRENT, NONFINITE, ARGS}
