"""The training recipe equals the original's (../shared/fixtures/recipe_original.json), checked through the
plan that ``--dry_run`` writes, i.e. through the same code paths a run uses: parameter groups (weight decay,
lr scale) of the four cases, schedules and batch arithmetic of the six cases, the twelve --split_ratio
subsets, and the dropout modules active while the linear probe trains.

Tolerances: schedules are compared with rtol 1e-12 (both sides are float64 numpy arithmetic); everything else
exactly."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from tests._train_data import write_qrs_split

SCRIPTS = {"vqhbr": "run_vqhbr_training.py", "pretrain": "run_heartlang_pretraining.py",
           "finetune": "run_class_finetuning.py"}  # fmt: skip


@pytest.fixture(scope="module")
def recipe(ref_fixtures) -> dict:
    return json.loads((ref_fixtures / "recipe_original.json").read_text())


def sparse_split(folder: Path, split: str, n: int, labels: np.ndarray | None = None) -> Path:
    """A sentence split of ``n`` rows whose arrays are never written (sparse files): a plan reads only shapes."""
    folder.mkdir(parents=True, exist_ok=True)
    for suffix, shape, dtype in (("data", (n, 256, 96), np.float32), ("data_in_chans", (n, 256), np.int32),
                                 ("data_in_times", (n, 256), np.int32)):  # fmt: skip
        del_ = np.lib.format.open_memmap(folder / f"{split}_{suffix}.npy", mode="w+", dtype=dtype, shape=shape)
        del del_
    if labels is not None:
        np.save(folder / f"{split}_labels.npy", labels.astype(np.float32))
    return folder


def dry_run(stage: str, argv: list[str], out: Path) -> dict:
    import importlib

    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "TORCHELASTIC_RUN_ID"):
        os.environ.pop(var, None)
    module = importlib.import_module(SCRIPTS[stage][:-3])
    module.main(module.get_args_parser().parse_args([*argv, "--output_dir", str(out), "--dry_run"]))
    return json.loads((out / "plan.json").read_text())


VQ_SEED = ["--model", "vqhbr", "--codebook_n_emd", "8192", "--codebook_emd_dim", "128", "--quantize_kmeans_init",
           "--batch_size", "64", "--opt", "adamw", "--opt_betas", "0.9", "0.99", "--weight_decay", "1e-4",
           "--warmup_epochs", "10", "--epochs", "100", "--world_size", "8", "--lr", "5e-5", "--min_lr", "1e-5"]  # fmt: skip
PT_SEED = ["--model", "HeartLang", "--tokenizer_model", "vqhbr", "--tokenizer_weight", "not/needed.pth",
           "--batch_size", "64", "--lr", "5e-4", "--warmup_epochs", "5", "--clip_grad", "3.0", "--opt_betas", "0.9",
           "0.98", "--opt_eps", "1e-8", "--epochs", "200", "--codebook_size", "8192", "--codebook_dim", "128",
           "--gradient_accumulation_steps", "1", "--world_size", "8"]  # fmt: skip
FT_SEED = ["--model", "HeartLang_finetune_base", "--finetune", "not/needed.pth", "--split_ratio", "1",
           "--sampling_method", "random", "--weight_decay", "0.05", "--batch_size", "256", "--lr", "5e-3",
           "--update_freq", "1", "--warmup_epochs", "10", "--epochs", "100", "--layer_decay", "0.9", "--seed", "0",
           "--is_binary", "--nb_classes", "5", "--world_size", "1"]  # fmt: skip


def _labels(n: int, c: int = 5, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random((n, c)) < 0.3).astype(np.float32)


@pytest.mark.parametrize("case", ["vqhbr", "pretrain", "finetune_linear", "finetune_all"])
def test_parameter_groups_match_the_original(case, recipe, tmp_path):
    want = recipe["param_groups"][case]
    if case.startswith("finetune"):
        data = sparse_split(tmp_path / "d", "train", 64, _labels(64))
        argv = [*FT_SEED, "--trainable", case.split("_")[1]]
        plan = dry_run("finetune", [*argv, "--dataset_dir", str(data)], tmp_path / "o")
    else:
        data = sparse_split(tmp_path / "d", "train", 8 * 64)
        plan = dry_run(case, [*(VQ_SEED if case == "vqhbr" else PT_SEED), "--dataset_dir", str(data)], tmp_path / "o")
    got = plan["param_groups"]
    if case == "finetune_all":
        # The classifier never uses backbone.lm_head (its gradient is None, so AdamW never touches it in the
        # original either); we freeze it so that DDP has no unused trainable parameter.
        assert set(want) - set(got) == {"backbone.lm_head.weight", "backbone.lm_head.bias"}
        want = {k: v for k, v in want.items() if not k.startswith("backbone.lm_head.")}
    assert set(got) == set(want)
    assert {k: v["weight_decay"] for k, v in got.items()} == {k: v["weight_decay"] for k, v in want.items()}
    if case != "finetune_all":  # our layer decay stays on purpose for --trainable all (tests/test_optim.py)
        assert {k: v["lr_scale"] for k, v in got.items()} == {k: v["lr_scale"] for k, v in want.items()}


def test_corrected_recipe_exempts_embeddings_from_decay(recipe, tmp_path):
    data = sparse_split(tmp_path / "d", "train", 8 * 64)
    plan = dry_run("pretrain", [*PT_SEED, "--dataset_dir", str(data), "--recipe", "corrected"], tmp_path / "o")
    wd = {k: v["weight_decay"] for k, v in plan["param_groups"].items()}
    for name in ("pos_embed", "mask_token", "spa_embed.embed.weight", "tem_embed.embed.weight",
                 "token_embed.tokenConv.weight", "cls_token"):  # fmt: skip
        assert wd[name] == 0.0, name
    assert wd["transformer.layers.0.0.to_qkv.weight"] == 0.05
    assert plan["recipe"]["no_decay_embeddings"] and plan["recipe"]["mask_before_conv"]
    # variants switched back off under --recipe corrected: the negation (--no_NAME, or NAME without its
    # "no_" prefix) wins over --recipe
    plan = dry_run("pretrain", [*PT_SEED, "--dataset_dir", str(data), "--recipe", "corrected",
                                "--decay_embeddings", "--no_mask_before_conv"], tmp_path / "o2")  # fmt: skip
    assert not plan["recipe"]["no_decay_embeddings"] and not plan["recipe"]["mask_before_conv"]
    assert plan["recipe"]["mask_real_words_only"] and plan["recipe"]["padding_attention_mask"]
    assert {k: v["weight_decay"] for k, v in plan["param_groups"].items()}["pos_embed"] == 0.05


@pytest.mark.parametrize("case", ["vqhbr", "pretrain", "finetune_n49", "finetune_n170", "finetune_n1708",
                                  "finetune_n17084"])  # fmt: skip
def test_schedules_and_batch_arithmetic_match_the_original(case, recipe, tmp_path):
    want = recipe["schedules"][case]
    n = want["n_train"]
    if case.startswith("finetune"):
        data = sparse_split(tmp_path / "d", "train", n, _labels(n))
        plan = dry_run("finetune", [*FT_SEED, "--trainable", "linear", "--dataset_dir", str(data)], tmp_path / "o")
        assert plan["batch_size_requested"] == want["batch_size_requested"]
    else:
        data = sparse_split(tmp_path / "d", "train", n)
        plan = dry_run(case, [*(VQ_SEED if case == "vqhbr" else PT_SEED), "--dataset_dir", str(data)], tmp_path / "o")
        assert plan["weight_decay"] == pytest.approx(want["wd"], rel=1e-12)
    assert (plan["world_size"], plan["batch_size"], plan["iters_per_epoch"]) == (
        want["world_size"], want["batch_size"], want["iters_per_epoch"],
    )  # fmt: skip
    assert plan["peak_lr"] == pytest.approx(want["peak_lr"], rel=1e-12)
    assert len(plan["lr"]) == len(want["lr"])
    np.testing.assert_allclose(plan["lr"], want["lr"], rtol=1e-12, atol=0)


@pytest.mark.parametrize("method", ["random", "stratified"])
@pytest.mark.parametrize("ratio", ["0.01", "0.1"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_split_ratio_rows_match_the_original(method, ratio, seed, recipe, tmp_path):
    sub = recipe["subset_indices"]
    labels = np.asarray(sub["labels"], np.float32)
    data = sparse_split(tmp_path / "d", "train", len(labels), labels)
    argv = [*FT_SEED, "--trainable", "linear", "--dataset_dir", str(data), "--split_ratio", ratio,
            "--sampling_method", method, "--seed", str(seed), "--batch_size", "2"]  # fmt: skip
    plan = dry_run("finetune", argv, tmp_path / "o")
    assert plan["train_rows"] == sub["selected_rows_in_order"][f"{method}_{ratio}_seed{seed}"]


def test_probe_dropout_modules_match_the_original(recipe, tmp_path):
    data = sparse_split(tmp_path / "d", "train", 64, _labels(64))
    argv = [*FT_SEED, "--trainable", "linear", "--dataset_dir", str(data)]
    plan = dry_run("finetune", argv, tmp_path / "official")
    assert plan["dropout_active"] == sorted(recipe["probe_train_mode"]["dropout_modules_active"])
    assert recipe["probe_train_mode"]["dropout_p"] == [0.1]
    plan = dry_run("finetune", [*argv, "--probe_backbone_eval"], tmp_path / "corrected")
    assert plan["dropout_active"] == []


def test_dry_run_needs_only_the_data_and_prints_a_summary(tmp_path, capsys):
    data = sparse_split(tmp_path / "d", "train", 600)
    plan = dry_run("pretrain", [*PT_SEED, "--dataset_dir", str(data)], tmp_path / "o")
    out = capsys.readouterr().out
    assert "8 process(es) x batch 64" in out and "effective batch 512" in out and "plan.json" in out
    assert plan["iters_per_epoch"] == 1 and not (tmp_path / "o" / "checkpoint.pth").exists()
    assert not Path("not/needed.pth").exists()  # neither tokenizer nor --finetune is read by a plan


def test_small_training_set_is_refused_with_a_message(tmp_path):
    data = sparse_split(tmp_path / "d", "train", 100)
    with pytest.raises(ValueError, match="fewer than one optimizer step"):
        dry_run("pretrain", [*PT_SEED, "--dataset_dir", str(data)], tmp_path / "o")


def test_write_qrs_split_helper_still_used_elsewhere(tmp_path):
    # The tiny real-valued splits of tests/_train_data.py plan as well (labels of another width are refused).
    write_qrs_split(tmp_path / "d", "train", 8, 3, 0)
    with pytest.raises(ValueError, match="--nb_classes"):
        dry_run("finetune", [*FT_SEED, "--dataset_dir", str(tmp_path / "d"), "--trainable", "linear"], tmp_path / "o")
