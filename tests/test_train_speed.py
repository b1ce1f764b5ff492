"""Speed features of the training stages (issue 13): cached pre-training targets, the probe without autograd
through the backbone, --compile, fused AdamW, batch-level loader reads, the GPU check's CPU dry path."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch

from datasets.ecg_dataset import build_sentence_dataset
from engine.pretrain import PretrainStep, load_tokenizer
from engine.targets import ensure_targets, problems, target_files, tokenizer_sha256
from modeling import create_model
from tests._train_data import make_downstream, make_pretrain, write_qrs_split

CPU = torch.device("cpu")


def _save_tokenizer(path: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    model = create_model("vqhbr_tiny", codebook_size=64, codebook_dim=16)
    torch.save({"model": model.state_dict(), "model_config": dataclasses.asdict(model.config),
                "args": {"model": "vqhbr_tiny"}}, path)  # fmt: skip
    return path


@pytest.fixture()
def pre(tmp_path):
    folder = make_pretrain(tmp_path, n_train=12, n_val=6)
    tok = _save_tokenizer(tmp_path / "tok.pth", 0)
    return folder, tok


def _ensure(ds, tok: Path, with_ids: bool = False, log=None, write: bool = True, batch_size: int = 5):
    messages = []
    ensure_targets(ds, tokenizer_sha256(str(tok)), 64, with_ids, lambda: load_tokenizer("vqhbr_tiny", str(tok), CPU),
                   CPU, write=write, batch_size=batch_size, log=log or messages.append)  # fmt: skip
    return messages


@pytest.mark.parametrize("with_ids", [False, True])
def test_cached_targets_equal_on_the_fly(pre, with_ids):
    """Targets cached in chunks of 5 == the tokenizer called on the loader's batches of 4 (fp32 CPU)."""
    folder, tok = pre
    ds = build_sentence_dataset(folder, "train", with_labels=False)
    _ensure(ds, tok, with_ids)
    tokenizer = load_tokenizer("vqhbr_tiny", str(tok), CPU)
    step = PretrainStep(tokenizer, CPU, targets_with_ids=with_ids)
    loader = torch.utils.data.DataLoader(ds, batch_size=4)
    n = 0
    for x, c, t, cached in loader:
        assert cached.dtype == torch.int64 and cached.shape == (x.shape[0], 256)
        assert torch.equal(cached, step.targets(x, c, t))
        n += x.shape[0]
    assert n == len(ds) == 12
    # The two variants are two files; ids change the targets (the tiny tokenizer embeds lead/time ids).
    assert target_files(ds.parts[0].root, "train", with_ids)[0].is_file()
    assert not target_files(ds.parts[0].root, "train", not with_ids)[0].exists()


def test_stale_targets_are_recomputed_with_the_reason(pre, tmp_path):
    folder, tok = pre
    ds = build_sentence_dataset(folder, "train", with_labels=False)
    part = ds.parts[0]
    first = _ensure(ds, tok)
    assert len(first) == 2 and all(m.startswith("wrote") for m in first)  # one per batch folder
    assert (
        _ensure(build_sentence_dataset(folder, "train", with_labels=False), tok) == []
    )  # up to date: reused
    # Another tokenizer: recomputed, and the message says why.
    other = _save_tokenizer(tmp_path / "other.pth", 1)
    msgs = _ensure(build_sentence_dataset(folder, "train", with_labels=False), other)
    assert any("stale" in m and "tokenizer_sha256" in m for m in msgs)
    # Rewritten sentences (the QRS tokenizer ran again): recomputed.
    write_qrs_split(part.root, "train", len(part), None, 99)
    msgs = _ensure(build_sentence_dataset(folder, "train", with_labels=False), other)
    assert any("stale" in m and "train_data.npy" in m for m in msgs)
    # A truncated targets file: recomputed, named.
    path = target_files(part.root, "train", False)[0]
    path.write_bytes(path.read_bytes()[:10])
    msgs = _ensure(build_sentence_dataset(folder, "train", with_labels=False), other)
    assert any("damaged" in m and path.name in m for m in msgs)
    # A rank that must only read refuses stale files instead of computing them.
    shutil.copy(tok, tmp_path / "third.pth")
    with pytest.raises(RuntimeError, match="not usable"):
        _ensure(build_sentence_dataset(folder, "train", with_labels=False), tok, write=False)
    assert problems(part, tokenizer_sha256(str(other)), 64, False) == []


def test_targets_do_not_change_the_dataset_identity(pre):
    from utils.integrity import folder_identity

    folder, tok = pre
    before = folder_identity(folder)
    _ensure(build_sentence_dataset(folder, "train", with_labels=False), tok)
    assert folder_identity(folder) == before  # a resumed run still sees the same input data set


def _pretrain(tmp_path: Path, folder: Path, tok: Path, mode: str, extra=()) -> list[dict]:
    from tests.test_train_stages import _run_inprocess

    out = tmp_path / f"run_{mode}_{len(extra)}"
    _run_inprocess("run_heartlang_pretraining.py", [
        "--model", "HeartLang_tiny", "--tokenizer_model", "vqhbr_tiny", "--tokenizer_weight", str(tok),
        "--codebook_size", "64", "--dataset_dir", str(folder), "--output_dir", str(out), "--batch_size", "4",
        "--num_workers", "0",
        "--warmup_epochs", "1", "--epochs", "1", "--val_freq", "1", "--targets", mode, *extra,
    ])  # fmt: skip
    return [json.loads(line) for line in (out / "log.txt").read_text().splitlines()]


def test_pretraining_with_cached_targets_trains_exactly_as_on_the_fly(pre, tmp_path):
    folder, tok = pre
    cached = _pretrain(tmp_path, folder, tok, "cached")
    fly = _pretrain(tmp_path, folder, tok, "on_the_fly")
    assert cached == fly  # same masks, same targets, same losses and accuracies, bit for bit
    assert target_files(folder / "batch_0", "val", False)[0].is_file()  # the val split got its targets too


def test_train_mode_probe_runs_no_autograd_through_the_backbone(tmp_path):
    """Official train-mode probe: every backbone activation is computed without grad; only mlp_head learns."""
    from engine.config import OptimConfig, RunConfig
    from engine.finetune import FinetuneStage

    folder = make_downstream(tmp_path)
    run = RunConfig(stage="finetune", output_dir=str(tmp_path / "o"), recipe={"probe_backbone_eval": False,
                    "padding_attention_mask": False})  # fmt: skip
    optim = OptimConfig(
        lr=1e-3, min_lr=0, weight_decay=0, warmup_epochs=0, warmup_steps=-1, epochs=1, batch_size=4
    )
    stage = FinetuneStage(
        run, optim, str(folder), "HeartLang_finetune_tiny", 3, True, "linear", "", 1.0, "random"
    )
    model = stage.build_model(load_weights=False)
    stage.device = CPU
    stage.set_train_mode(model)
    assert model.backbone.training  # Official behaviour: dropout on in the frozen backbone
    seen = []
    hooks = [m.register_forward_hook(lambda m, i, o: seen.append(o)) for m in model.backbone.modules()]
    batch = next(iter(torch.utils.data.DataLoader(stage.train_set(), batch_size=4)))
    loss, _ = stage.step(model.mlp_head, batch)
    for h in hooks:
        h.remove()
    tensors = [o for o in seen if torch.is_tensor(o)]
    assert len(tensors) > 10 and not any(o.requires_grad for o in tensors)
    loss.backward()
    assert model.mlp_head.weight.grad is not None
    assert all(p.grad is None for p in model.backbone.parameters())
