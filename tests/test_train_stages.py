"""The three training entry scripts (paper Sec. 3.2, 3.3, 4): seed flags, torchrun smoke runs, resume, --eval."""

from __future__ import annotations

import csv
import json
import os
import re
import shlex
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from tests._train_data import make_downstream, make_pretrain
from tests.conftest import run_torchrun

SCRIPTS = ("run_vqhbr_training.py", "run_heartlang_pretraining.py", "run_class_finetuning.py")
TINY_VQ = ["--model", "vqhbr_tiny", "--codebook_n_emd", "64", "--codebook_emd_dim", "16"]
COMMON = ["--batch_size", "4", "--num_workers", "0", "--warmup_epochs", "1"]


def _parser(script: str):
    import importlib

    return importlib.import_module(script[:-3]).get_args_parser()


def seed_commands(seed_dir: Path) -> list[tuple[str, list[str]]]:
    """(script, argv) of every ``torchrun ... run_*.py --flags`` command in the original README."""
    text = "\n".join(p.read_text(encoding="utf-8", errors="replace") for p in sorted(seed_dir.glob("*.txt")))
    text = text.replace("\\\n", " ")
    found = []
    for line in text.splitlines():
        if "torchrun" not in line:
            continue
        tokens = shlex.split(line)
        script = next(t for t in tokens if t.endswith(".py"))
        found.append((script, tokens[tokens.index(script) + 1 :]))
    return found


def test_every_seed_command_parses_with_seed_values(shared_data):
    commands = seed_commands(shared_data.parent / "seed")
    assert {s for s, _ in commands} == set(SCRIPTS), commands
    for script, argv in commands:
        args = _parser(script).parse_args(argv)
        # Every value given in the seed arrives under its own name.
        for flag, value in re.findall(r"--(\w+)(?: ([^-][^ ]*))?", " ".join(argv)):
            got = getattr(args, "update_freq" if flag == "gradient_accumulation_steps" else flag)
            if value:
                expected = type(got[0] if isinstance(got, list) else got)(value) if got is not None else value
                assert expected in got if isinstance(got, list) else got == expected, (script, flag, got)
            else:
                assert got is True, (script, flag)


def test_stage_defaults_follow_the_seed():
    vq = _parser("run_vqhbr_training.py").parse_args([])
    assert (vq.lr, vq.min_lr, vq.opt_betas, vq.weight_decay, vq.warmup_epochs, vq.epochs, vq.batch_size) == (
        5e-5, 1e-5, [0.9, 0.99], 1e-4, 10, 100, 64,
    )  # fmt: skip
    pt = _parser("run_heartlang_pretraining.py").parse_args([])
    assert (pt.lr, pt.opt_betas, pt.opt_eps, pt.weight_decay, pt.warmup_epochs, pt.epochs, pt.clip_grad) == (
        5e-4, [0.9, 0.98], 1e-8, 0.05, 5, 200, 3.0,
    )  # fmt: skip
    ft = _parser("run_class_finetuning.py").parse_args([])
    assert (ft.layer_decay, ft.trainable, ft.sampling_method, ft.split_ratio) == (
        0.9,
        "linear",
        "random",
        1.0,
    )


def _torchrun(script: str, argv: list[str]) -> str:
    """``script`` under torchrun with 2 gloo processes (tests/conftest.run_torchrun); its stdout."""
    proc = run_torchrun([script, *argv], nproc=2)
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc.stdout


@pytest.mark.dist
@pytest.mark.slow
def test_pipeline_under_torchrun_two_processes(tmp_path, demo_smoke):
    """VQ-HBR -> pre-training (targets from that tokenizer) -> fine-tuning -> --eval, 2 gloo ranks each.

    VQ-HBR, pre-training, the linear probes and their --eval come from the session's shared smoke run
    (tests/conftest.demo_smoke, ``run_demo.py --smoke --nproc 2``); the full fine-tuning (``--trainable all``:
    the whole backbone under DDP) runs here on that run's data and pre-trained checkpoint.
    """
    from modeling import get_config
    from sentences.labels import load_class_names

    out, ckpt = demo_smoke.out, demo_smoke.out / "checkpoints"
    vq_out, pt_out = demo_smoke.stage_log("vqhbr"), demo_smoke.stage_log("pretrain")
    batch = int(re.search(r"--batch_size (\d+)", vq_out.splitlines()[0]).group(1))
    for stage_out in (vq_out, pt_out):
        assert "x 2 process(es)" in stage_out and f"effective batch {2 * batch}" in stage_out, stage_out[
            -2000:
        ]
    vq_dir, pt_dir = ckpt / "vqhbr", ckpt / "pretrain"
    log = json.loads((vq_dir / "log.txt").read_text().splitlines()[-1])
    assert {"train_rec_loss", "train_quant_loss", "val_unused_codes", "val_perplexity"} <= set(log)
    n_codes = get_config("vqhbr_tiny").codebook_size
    assert f"--codebook_n_emd {n_codes}" in vq_out.splitlines()[0]
    assert json.loads((vq_dir / "args.json").read_text())["model_config"]["codebook_size"] == n_codes
    assert any((out / "log" / "vqhbr").iterdir())  # TensorBoard (--log_dir)
    assert f"--tokenizer_weight {vq_dir / 'checkpoint-1.pth'}" in pt_out.splitlines()[0]
    log = json.loads((pt_dir / "log.txt").read_text().splitlines()[-1])
    assert 0 <= log["train_mlm_acc"] <= 1 and log["train_loss"] > 0
    assert 0 <= log["val_mlm_acc"] <= 1 and log["val_loss"] > 0
    down = out / "ecg_datasets" / "PTBXL_QRS" / "superdiagnostic"
    n_classes, n_test = (
        int(np.load(down / "train_labels.npy").shape[1]),
        len(np.load(down / "test_labels.npy")),
    )
    names = load_class_names(down, n_classes)
    assert names != [f"class_{c}" for c in range(n_classes)]
    for name in ("superdiagnostic_pretrained_1", "superdiagnostic_random_1"):
        assert "x 2 process(es)" in demo_smoke.stage_log(f"probe_{name}")
        assert (ckpt / "finetune" / name / "checkpoint-best.pth").is_file()
        lines = demo_smoke.stage_log(f"eval_{name}").splitlines()  # the per-class table, then macro
        assert all(any(line.split()[:1] == [c] for line in lines) for c in [*names, "macro"]), lines
    rows = list(csv.DictReader((out / "results" / "finetune_results.csv").open()))
    assert len(rows) == 2  # one row per --eval: rank 0 only
    for row in rows:
        assert (row["dataset"], row["subset"], row["ratio"], row["sampling"], row["seed"]) == (
            "PTBXL", "superdiagnostic", "1.0", "random", "0",
        )  # fmt: skip
        assert int(row["n_test"]) == n_test and 0 <= float(row["macro_auc"]) <= 1

    # The whole backbone trained under DDP (the probes above train only the head).
    ft_dir = tmp_path / "ft"
    _torchrun(SCRIPTS[2], ["--model", "HeartLang_finetune_tiny", "--trainable", "all", "--nb_classes", str(n_classes),
              "--is_binary", "--output_dir", str(ft_dir), "--dataset_dir", str(down), "--seed", "0", *COMMON,
              "--finetune", str(pt_dir / "checkpoint.pth"), "--epochs", "1"])  # fmt: skip
    assert (ft_dir / "checkpoint-best.pth").is_file()
    log = json.loads((ft_dir / "log.txt").read_text().splitlines()[-1])
    assert log["train_loss"] > 0 and 0 <= log["val_macro_auc"] <= 1


def _run_inprocess(script: str, argv: list[str]) -> None:
    os.environ["HEARTLANG_NO_PROGRESS"] = "1"
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        os.environ.pop(var, None)
    module = __import__(script[:-3])
    module.main(module.get_args_parser().parse_args(argv))


def _resume_matches(tmp_path: Path, script: str, argv: list[str], run=None) -> None:
    """2 uninterrupted epochs == 1 epoch, killed, resumed from what it left (checkpoint-1.pth) to 2."""
    run = run or _run_inprocess
    full, cut = tmp_path / f"{script}_full", tmp_path / f"{script}_cut"
    run(script, [*argv, "--output_dir", str(full), "--epochs", "2", "--save_ckpt_freq", "1"])
    cut.mkdir()
    # All that a run killed during epoch 2 leaves behind: checkpoint-1.pth and one log line.
    shutil.copy(full / "checkpoint-1.pth", cut / "checkpoint-1.pth")
    shutil.copy(full / "run.json", cut / "run.json")  # written at the start of every run
    (cut / "log.txt").write_text((full / "log.txt").read_text().splitlines()[0] + "\n")
    run(script, [*argv, "--output_dir", str(cut), "--epochs", "2", "--save_ckpt_freq", "1"])
    a = [json.loads(line) for line in (full / "log.txt").read_text().splitlines()]
    b = [json.loads(line) for line in (cut / "log.txt").read_text().splitlines()]
    assert len(a) == len(b) == 2
    assert a[1] == b[1], f"resumed epoch differs:\n{a[1]}\n{b[1]}"


@pytest.mark.dist
@pytest.mark.slow
def test_resume_gives_the_same_metrics_pretraining(tmp_path):
    pre = make_pretrain(tmp_path)
    vq = tmp_path / "vq"
    _run_inprocess(
        SCRIPTS[0], [*TINY_VQ, "--output_dir", str(vq), "--dataset_dir", str(pre), "--epochs", "1", *COMMON]
    )
    # Dropout and masking draw from the RNG every step: a resumed run must draw the same.
    argv = ["--model", "HeartLang_tiny", "--tokenizer_model", "vqhbr_tiny", "--tokenizer_weight",
            str(vq / "checkpoint.pth"), "--codebook_size", "64", "--codebook_dim", "16", "--dataset_dir", str(pre),
            "--update_freq", "2", *COMMON]  # fmt: skip
    # Two ranks: each must get back its own masking / dropout stream, not rank 0's.
    _resume_matches(tmp_path, SCRIPTS[1], argv, run=_torchrun)


def test_resume_gives_the_same_metrics_linear_probe(tmp_path):
    down = make_downstream(tmp_path)
    argv = ["--model", "HeartLang_finetune_tiny", "--trainable", "linear", "--nb_classes", "3", "--is_binary",
            "--dataset_dir", str(down), *COMMON]  # fmt: skip
    _resume_matches(tmp_path, SCRIPTS[2], argv)


def test_eval_without_best_checkpoint_names_the_file(tmp_path):
    down = make_downstream(tmp_path)
    with pytest.raises(FileNotFoundError, match="checkpoint-best.pth"):
        _run_inprocess(SCRIPTS[2], ["--model", "HeartLang_finetune_tiny", "--eval", "--nb_classes", "3",
                       "--dataset_dir", str(down), "--output_dir", str(tmp_path / "none"), *COMMON])  # fmt: skip


def test_generated_scripts_are_current_and_every_command_parses(repo_root):
    sys.path.insert(0, str(repo_root / "scripts"))
    import make_finetune_scripts as gen

    assert gen.main(["--check"]) == 0, (
        "scripts/finetune is stale: run python scripts/make_finetune_scripts.py"
    )
    shells = sorted((repo_root / "scripts").rglob("*.sh"))
    seen = 0
    for path in shells:
        text = path.read_text().replace("\\\n", " ")
        # each script's own defaults (VAR=${VAR:-default}), as a run without those variables set sees them
        env = dict(re.findall(r"^(?:export )?(\w+)=\$\{\1:-\"?([^}\"]*)\"?\}", text, re.M))
        env.update({"RATIO": "0.1", "NAME": "n"})
        for line in text.splitlines():
            if "torchrun" not in line or line.lstrip().startswith("#"):
                continue
            # ports and process counts come from the environment, never hard-coded
            assert not re.search(r"--(master_port|nproc_per_node)[= ]\d", line), (path, line)
            line = re.sub(r"\$\{?(\w+|@)\}?", lambda m, env=env: env.get(m.group(1), ""), line)
            tokens = [t for t in shlex.split(line) if t]
            script = next(t for t in tokens if t.endswith(".py"))
            _parser(script).parse_args(tokens[tokens.index(script) + 1 :])
            seen += 1
    assert seen == 2 + 2 * len(gen.all_scripts())


def test_finetune_scripts_read_what_pretraining_writes(repo_root):
    """The fine-tuning scripts' default checkpoint is the last one scripts/pretrain/MIMIC-IV.sh writes."""
    pre = (repo_root / "scripts" / "pretrain" / "MIMIC-IV.sh").read_text()
    out_dir = re.search(r"^OUTPUT_DIR=\$\{OUTPUT_DIR:-([^}]*)\}", pre, re.M).group(1)
    epochs = re.search(r"^\s+--epochs (\d+)", pre, re.M).group(1)
    written = f"{out_dir.rstrip('/')}/checkpoint-{epochs}.pth"  # engine.checkpoint: checkpoint-{epochs}.pth
    vq = (repo_root / "scripts" / "vqhbr" / "MIMIC-IV.sh").read_text()
    vq_written = "{}/checkpoint-{}.pth".format(
        re.search(r"^OUTPUT_DIR=\$\{OUTPUT_DIR:-([^}]*)\}", vq, re.M).group(1).rstrip("/"),
        re.search(r"^\s+--epochs (\d+)", vq, re.M).group(1),
    )
    assert f"TOKENIZER_WEIGHT=${{TOKENIZER_WEIGHT:-{vq_written}}}" in pre
    for path in (repo_root / "scripts" / "finetune").rglob("*.sh"):
        assert f"FINETUNE=${{FINETUNE:-{written}}}" in path.read_text(), path


def test_describe_dataset_dir():
    from reporting.results import describe_dataset_dir

    assert describe_dataset_dir("datasets/ecg_datasets/PTBXL_QRS/form/") == ("PTBXL", "form")
    assert describe_dataset_dir("datasets/ecg_datasets/PTBXL_QRS_3Leads/rhythm") == ("PTBXL", "rhythm")
    assert describe_dataset_dir("datasets/ecg_datasets/CPSC2018_QRS") == ("CPSC2018", "all")


def test_label_fraction_smaller_than_one_batch_still_trains(tmp_path):
    """1 % of a training set can be fewer records than --batch_size (256 in the original scripts): one partial batch."""
    down = make_downstream(tmp_path)
    out = tmp_path / "small"
    _run_inprocess(SCRIPTS[2], ["--model", "HeartLang_finetune_tiny", "--nb_classes", "3", "--is_binary",
                   "--dataset_dir", str(down), "--output_dir", str(out), "--split_ratio", "0.5",
                   "--sampling_method", "random", "--batch_size", "256", "--num_workers", "0", "--epochs", "1"])  # fmt: skip
    log = json.loads((out / "log.txt").read_text())
    assert log["train_loss"] > 0 and (out / "checkpoint-best.pth").is_file()


def test_cached_features_linear_probe_equals_the_plain_one(tmp_path):
    down = make_downstream(tmp_path)
    argv = ["--model", "HeartLang_finetune_tiny", "--trainable", "linear", "--nb_classes", "3", "--is_binary",
            "--dataset_dir", str(down), "--epochs", "2", "--probe_backbone_eval", *COMMON]  # fmt: skip
    _run_inprocess(SCRIPTS[2], [*argv, "--output_dir", str(tmp_path / "plain")])
    _run_inprocess(SCRIPTS[2], [*argv, "--output_dir", str(tmp_path / "cached"), "--cache_features"])
    a = [json.loads(line) for line in (tmp_path / "plain" / "log.txt").read_text().splitlines()]
    b = [json.loads(line) for line in (tmp_path / "cached" / "log.txt").read_text().splitlines()]
    for x, y in zip(a, b):
        for key in ("train_loss", "val_loss", "val_macro_auc", "train_lr"):
            assert y[key] == pytest.approx(x[key], rel=1e-5, abs=1e-6), key
    with pytest.raises(ValueError, match="--trainable linear"):
        _run_inprocess(
            SCRIPTS[2], [*argv[:3], "all", *argv[4:], "--output_dir", str(tmp_path / "x"), "--cache_features"]
        )


def test_undefined_val_auc_keeps_last_epoch_as_best(tmp_path, capsys):
    """A val split where every class is all-positive or all-negative has no AUC: --eval must still work."""
    import numpy as np

    down = make_downstream(tmp_path)
    labels = np.load(down / "val_labels.npy")
    np.save(down / "val_labels.npy", np.ones_like(labels))  # no negatives -> AUC undefined for every class
    out = tmp_path / "noauc"
    argv = ["--model", "HeartLang_finetune_tiny", "--trainable", "linear", "--nb_classes", "3", "--is_binary",
            "--dataset_dir", str(down), "--output_dir", str(out), "--epochs", "2", *COMMON]  # fmt: skip
    _run_inprocess(SCRIPTS[2], argv)
    assert "undefined in every epoch" in capsys.readouterr().out
    best = json.loads((out / "log.txt").read_text().splitlines()[-1])
    assert best["epoch"] == 1
    import torch

    assert torch.load(out / "checkpoint-best.pth", weights_only=True)["epoch"] == 1
    _run_inprocess(SCRIPTS[2], [*argv, "--eval", "--results_csv", str(tmp_path / "r.csv"), "--log_dir",
                   str(tmp_path / "tb_eval")])  # fmt: skip
    # A traceable row: provenance, the model actually loaded, the recipe, a smoke caveat, the ROC figure.
    from utils.integrity import sha256_file

    (row,) = list(csv.DictReader((tmp_path / "r.csv").open()))
    assert row["checkpoint_sha256"] == sha256_file(out / "checkpoint-best.pth") and row["utc"].endswith("Z")
    assert row["model"] == "HeartLang_finetune_tiny" and row["recipe"] == "official" and row["caveat"]
    assert Path(row["roc_png"]).is_file() and (out / "training_curves.png").is_file()
    assert any((tmp_path / "tb_eval").iterdir())  # --eval metrics in TensorBoard


def test_corrected_variant_flags_reach_the_models(tmp_path):
    """--padding_attention_mask (all stages) and --mask_before_conv (pre-training) train and are recorded."""
    pre, down = make_pretrain(tmp_path), make_downstream(tmp_path)
    vq = tmp_path / "vq"
    _run_inprocess(SCRIPTS[0], [*TINY_VQ, "--dataset_dir", str(pre), "--output_dir", str(vq), "--epochs", "1",
                   "--padding_attention_mask", *COMMON])  # fmt: skip
    pt = tmp_path / "pt"
    _run_inprocess(SCRIPTS[1], ["--model", "HeartLang_tiny", "--tokenizer_model", "vqhbr_tiny", "--tokenizer_weight",
                   str(vq / "checkpoint.pth"), "--codebook_size", "64", "--codebook_dim", "16", "--dataset_dir",
                   str(pre), "--output_dir", str(pt), "--epochs", "1", "--mask_before_conv",
                   "--padding_attention_mask", *COMMON])  # fmt: skip
    ft = tmp_path / "ft"
    _run_inprocess(SCRIPTS[2], ["--model", "HeartLang_finetune_tiny", "--nb_classes", "3", "--is_binary",
                   "--dataset_dir", str(down), "--output_dir", str(ft), "--epochs", "1", "--padding_attention_mask",
                   *COMMON])  # fmt: skip
    configs = {d.name: json.loads((d / "args.json").read_text())["model_config"] for d in (vq, pt, ft)}
    assert all(c["padding_attention_mask"] for c in configs.values())
    assert configs["pt"]["mask_before_conv"]
    for d in (vq, pt, ft):
        assert json.loads((d / "log.txt").read_text().splitlines()[-1])["train_loss"] > 0
