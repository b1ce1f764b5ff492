"""The original README's commands run as written: each one, with ``--dry_run`` appended, is run as a
separate process from a working folder that holds tiny sparse data sets at the original README's default paths, and
must exit 0 and write its plan. Also the original CPSC2018 / CSN scripts' ``--dist_eval``.

Parsing alone is covered by tests/test_train_stages.py::test_every_seed_command_parses_with_seed_values;
here the whole command (flags -> configs -> data -> model -> schedule -> plan) runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.test_recipe import sparse_split
from tests.test_train_stages import seed_commands


def _labels(n: int, c: int) -> np.ndarray:
    y = (np.random.default_rng(c).random((n, c)) < 0.3).astype(np.float32)
    y[np.arange(n), np.arange(n) % c] = 1.0  # every class present
    return y


def _seed_layout(root: Path) -> None:
    """The folders the original README's commands name, as sparse files (a plan reads only shapes)."""
    mimic = root / "datasets" / "ecg_datasets" / "MIMIC-IV_QRS"
    sparse_split(mimic / "batch_0", "train", 8 * 64)  # one optimizer step of the original's 8 x 64
    sparse_split(mimic / "batch_1", "train", 8)  # left out by the original's folder list
    for name, classes in (("PTBXL_QRS/form", 19), ("CPSC2018_QRS", 9), ("CSN_QRS", 38)):
        folder = root / "datasets" / "ecg_datasets" / name
        for split, n in (("train", 300), ("val", 40), ("test", 40)):
            sparse_split(folder, split, n, _labels(n, classes))


def _run(repo_root: Path, cwd: Path, script: str, argv: list[str]) -> subprocess.CompletedProcess:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "TORCHELASTIC_RUN_ID")
    }
    env.update(OMP_NUM_THREADS="1", HEARTLANG_NO_PROGRESS="1", PYTHONPATH=str(repo_root))
    return subprocess.run([sys.executable, str(repo_root / script), *argv], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip


def _flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


@pytest.mark.slow
def test_every_seed_command_runs_as_written_with_dry_run(shared_data, repo_root, tmp_path):
    commands = seed_commands(shared_data.parent / "seed")
    assert [s for s, _ in commands] == [
        "run_vqhbr_training.py", "run_heartlang_pretraining.py", "run_class_finetuning.py", "run_class_finetuning.py",
    ]  # fmt: skip
    _seed_layout(tmp_path)
    for script, argv in commands:
        proc = _run(repo_root, tmp_path, script, [*argv, "--dry_run"])
        assert proc.returncode == 0, (
            f"{script} {' '.join(argv)} --dry_run:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
        )
        out = tmp_path / _flag(argv, "--output_dir")
        if "--eval" in argv:
            plan = json.loads((out / "plan_eval.json").read_text())
            # Nothing was trained, so the evaluation would not start, and the plan says why.
            assert (
                plan["eval"] and not plan["ready"] and "checkpoint-best.pth is missing" in plan["problems"][0]
            )
            assert (plan["n_test"], plan["nb_classes"], plan["batch_size"]) == (40, 19, 256)
            # the training command's plan.json (same --output_dir) is left alone
            assert "eval" not in json.loads((out / "plan.json").read_text())
            continue
        plan = json.loads((out / "plan.json").read_text())
        assert plan["world_size"] == int(_flag(argv, "--world_size"))
        assert not (out / "checkpoint.pth").exists() and not (out / "run.json").exists()  # nothing trained
        assert "dry run: nothing trained" in proc.stdout
        if script == "run_vqhbr_training.py":
            # 8 x 64 on the 512 sentences of batch_0 (batch_1 left out): 1 step, lr scaled to 2e-4.
            assert (plan["n_train"], plan["iters_per_epoch"], plan["peak_lr"]) == (
                512,
                1,
                pytest.approx(2e-4),
            )
        elif script == "run_heartlang_pretraining.py":
            # --tokenizer_weight does not exist here: a plan does not need it.
            assert (plan["n_train"], plan["iters_per_epoch"], plan["peak_lr"]) == (512, 1, 5e-4)
        else:
            assert (plan["batch_size"], plan["iters_per_epoch"], len(plan["train_rows"])) == (256, 1, 300)
            assert len(plan["dropout_active"]) == 49  # the official train-mode probe: backbone dropout on


@pytest.mark.slow
@pytest.mark.parametrize("dataset,classes", [("CPSC2018_QRS", 9), ("CSN_QRS", 38)])
def test_original_cpsc2018_csn_scripts_dist_eval_is_accepted(
    dataset, classes, shared_data, repo_root, tmp_path
):
    """The original's CPSC2018 / CSN scripts add --dist_eval to the original README's probe command."""
    _seed_layout(tmp_path)
    (script, argv) = next(
        c
        for c in seed_commands(shared_data.parent / "seed")
        if "--trainable" in c[1] and "--eval" not in c[1]
    )
    argv = list(argv)
    argv[argv.index("--dataset_dir") + 1] = f"datasets/ecg_datasets/{dataset}"
    argv[argv.index("--nb_classes") + 1] = str(classes)
    proc = _run(repo_root, tmp_path, script, [*argv, "--dist_eval", "--dry_run"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    plan = json.loads((tmp_path / _flag(argv, "--output_dir") / "plan.json").read_text())
    assert plan["param_groups"].keys() == {"mlp_head.weight", "mlp_head.bias"}


def test_every_flag_is_in_the_defaults_section_of_training_md(repo_root):
    """docs/training.md lists every flag of the three entry scripts in "Flags whose default differs from the
    original's" (as known to differ, known to agree, or original default unknown)."""
    import importlib

    text = (repo_root / "docs" / "training.md").read_text()
    section = text.split("## Flags whose default differs from the original's", 1)[1].split("\n## ", 1)[0]
    missing = set()
    for module in ("run_vqhbr_training", "run_heartlang_pretraining", "run_class_finetuning"):
        for action in importlib.import_module(module).get_args_parser()._actions:
            flags = [f for f in action.option_strings if f.startswith("--") and f != "--help"]
            if flags and not any(f"`{f}`" in section for f in flags):
                missing.add(f"{module}: {flags[0]}")
    assert not missing, sorted(missing)
    assert "every flag has the original's default" not in text.lower()
