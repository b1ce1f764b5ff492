"""Speed features of the training stages: cached pre-training targets, the probe without autograd
through the backbone, --compile, fused AdamW, batch-level loader reads, the GPU check's CPU dry path."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch

from engine.pretrain import PretrainStep, load_tokenizer
from engine.targets import ensure_targets, problems, target_files, tokenizer_sha256
from modeling import create_model
from sentences.dataset import build_sentence_dataset
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


def test_train_mode_probe_runs_no_autograd_through_the_backbone(tmp_path):
    """Official train-mode probe: every backbone activation is computed without grad; only mlp_head learns."""
    from engine.config import OptimConfig, RunConfig
    from engine.finetune import Finetuning, finetune_task
    from engine.task import Env

    folder = make_downstream(tmp_path)
    run = RunConfig(stage="finetune", output_dir=str(tmp_path / "o"), recipe={"probe_backbone_eval": False,
                    "padding_attention_mask": False})  # fmt: skip
    optim = OptimConfig(
        lr=1e-3, min_lr=0, weight_decay=0, warmup_epochs=0, warmup_steps=-1, epochs=1, batch_size=4
    )
    cfg = Finetuning.create(run, optim, dataset_dir=str(folder), model="HeartLang_finetune_tiny", nb_classes=3,
                            is_binary=True, trainable="linear", finetune="", split_ratio=1.0, sampling_method="random")  # fmt: skip
    torch.manual_seed(0)
    task = finetune_task(cfg, Env(CPU))
    model = task.model
    assert task.trains is model.mlp_head
    task.set_train_mode()
    assert model.backbone.training  # Official behaviour: dropout on in the frozen backbone
    seen = []
    hooks = [m.register_forward_hook(lambda m, i, o: seen.append(o)) for m in model.backbone.modules()]
    batch = next(iter(torch.utils.data.DataLoader(task.train_set, batch_size=4)))
    loss, _ = task.step(task.trains, batch)
    for h in hooks:
        h.remove()
    tensors = [o for o in seen if torch.is_tensor(o)]
    assert len(tensors) > 10 and not any(o.requires_grad for o in tensors)
    loss.backward()
    assert model.mlp_head.weight.grad is not None
    assert all(p.grad is None for p in model.backbone.parameters())
    # --compile: the probe compiles the head AND the frozen backbone's feature function; same loss.
    torch.manual_seed(0)
    compiled = finetune_task(dataclasses.replace(cfg, run=dataclasses.replace(run, compile=True, compile_backend="eager")),
                             Env(CPU))  # fmt: skip
    assert compiled.features.fn != compiled.model.forward_features
    compiled.model.eval()
    model.eval()
    head = torch.compile(compiled.trains, backend="eager")
    assert torch.equal(compiled.step(head, batch)[0], task.step(task.trains, batch)[0])


# ------------------------------------------------------------------------------------------ --compile
def _pretrain_run(tmp_path: Path, folder: Path, tok: Path, name: str, extra=()) -> Path:
    from tests.test_train_stages import _run_inprocess

    out = tmp_path / name
    _run_inprocess("run_heartlang_pretraining.py", [
        "--model", "HeartLang_tiny", "--tokenizer_model", "vqhbr_tiny", "--tokenizer_weight", str(tok),
        "--codebook_size", "64", "--dataset_dir", str(folder), "--output_dir", str(out), "--batch_size", "4",
        "--num_workers", "0", "--warmup_epochs", "1", "--epochs", "1", *extra,
    ])  # fmt: skip
    return out


def test_cached_targets_and_compile_train_exactly_as_the_original_way(pre, tmp_path):
    """One pre-training epoch with validation, three ways: --targets cached (default), --targets on_the_fly
    (the original's way) and cached + --compile (dynamo's "eager" backend here: the same kernels, so the same
    numbers; inductor's parity is measured in benchmarks/compile_bench.py). Same masks, targets, losses and
    accuracies bit for bit; the compiled run's checkpoint keeps the plain key tree."""
    from modeling.accel import use_torch_dropout

    folder, tok = pre
    cached = _pretrain_run(tmp_path, folder, tok, "cached", ["--val_freq", "1"])
    fly = _pretrain_run(tmp_path, folder, tok, "fly", ["--val_freq", "1", "--targets", "on_the_fly"])
    log = (cached / "log.txt").read_text()
    assert "val_mlm_acc" in log and target_files(folder / "batch_0", "val", False)[0].is_file()
    assert (fly / "log.txt").read_text() == log
    # Compiled graphs draw dropout masks with torch's dropout (modeling/accel), so the compiled run is
    # compared with an eager run that does too.
    with use_torch_dropout():
        eager = _pretrain_run(tmp_path, folder, tok, "eager_torch_dropout", ["--val_freq", "1"])
        comp = _pretrain_run(
            tmp_path, folder, tok, "compiled", ["--val_freq", "1", "--compile", "--compile_backend", "eager"]
        )
    assert (eager / "log.txt").read_text() != log  # other masks, other numbers: the comparison below can fail
    assert (comp / "log.txt").read_text() == (eager / "log.txt").read_text()
    assert json.loads((eager / "run.json").read_text())["dropout_masks"] == "torch"
    assert json.loads((cached / "run.json").read_text())["dropout_masks"].startswith("splitmix64")
    state = torch.load(comp / "checkpoint.pth", map_location="cpu", weights_only=False)
    keys = list(state["model"])
    assert keys == list(
        torch.load(cached / "checkpoint.pth", map_location="cpu", weights_only=False)["model"]
    )
    assert not any("_orig_mod" in k or k.startswith("module.") for k in keys)
    run = json.loads((comp / "run.json").read_text())
    assert "compile" not in run["fingerprint"]["settings"]  # a run may be resumed with or without --compile
    assert run["fingerprint"]["settings"]["targets"] == "cached"


def test_adamw_impl_choice_and_equivalence():
    from utils.optim import adamw_kwargs

    params = [torch.nn.Parameter(torch.randn(3))]
    assert adamw_kwargs("auto", params) == {"fused": True}
    assert adamw_kwargs("for_loop", params) == {"foreach": False}
    with pytest.raises(ValueError, match="--adamw_impl"):
        adamw_kwargs("fast", params)
    # fused == for-loop AdamW to rounding over 20 steps (the kernels differ, the update rule does not).
    torch.manual_seed(0)
    ref = create_model("HeartLang_finetune_tiny", num_classes=3)
    finals = []
    for impl in ("for_loop", "fused"):
        model = create_model("HeartLang_finetune_tiny", num_classes=3)
        model.load_state_dict(ref.state_dict())
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05, **adamw_kwargs(impl, []))
        g = torch.Generator().manual_seed(1)
        for _ in range(20):
            for p in model.parameters():
                p.grad = torch.randn(p.shape, generator=g)
            opt.step()
        finals.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.allclose(finals[0], finals[1], rtol=0, atol=1e-6)


# ------------------------------------------------------------------------------------- batch-level reads
def test_batch_level_reads_equal_row_reads(pre, tmp_path):
    """SentenceDataset/ConcatSentenceDataset.__getitems__ (+ collate_sentences) == one __getitem__ per row,
    in the sampler's order, across batch_k parts, with cached targets, and through a Subset of labelled rows."""
    from torch.utils.data import Subset, default_collate

    from sentences.loader import make_loader

    folder, tok = pre
    ds = build_sentence_dataset(folder, "train", with_labels=False)
    _ensure(ds, tok)
    labelled = build_sentence_dataset(make_downstream(tmp_path), "train")
    for dataset in (
        ds,
        build_sentence_dataset(folder, "val", with_labels=False),
        Subset(labelled, [5, 1, 9, 3, 0]),
    ):
        loader = make_loader(dataset, 4, 0, 1, True)
        loader.sampler.set_epoch(3)
        order = list(loader.batch_sampler)
        for got, idx in zip(loader, order):
            want = default_collate([dataset[i] for i in idx])
            assert len(got) == 4 and all(torch.equal(a, b) for a, b in zip(got, want))
            assert got[0].dtype == torch.float32 and got[1].dtype == torch.int64


def test_targets_command_writes_what_a_run_reuses(pre, capsys):
    from engine.targets import main as targets_main

    folder, tok = pre
    targets_main(["--dataset_dir", str(folder), "--tokenizer_weight", str(tok), "--tokenizer_model", "vqhbr_tiny",
                  "--device", "cpu", "--splits", "train", "val"])  # fmt: skip
    assert "cached targets of 12 sentences up to date" in capsys.readouterr().out
    ds = build_sentence_dataset(folder, "val", with_labels=False)
    assert _ensure(ds, tok) == []  # nothing recomputed: the run reads what the command wrote


def test_target_cache_on_a_full_disk_is_refused_before_computing(pre, monkeypatch):
    """Not enough free space for a split's targets: an error naming the file and the sizes before any
    tokenizer forward, and no target file or half-written temp file left."""
    import shutil

    folder, tok = pre
    ds = build_sentence_dataset(folder, "train", with_labels=False)
    usage = shutil.disk_usage(folder)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage._replace(free=1000))
    path = target_files(ds.parts[0].root, "train", False)[0]
    n, length = ds.parts[0].lead_ids.shape  # uint16 targets: 2 bytes each
    with pytest.raises(OSError, match=rf"writing {path} needs {n * length * 2 / 1024:.1f} KiB, .* has 1000 bytes free"):
        _ensure(ds, tok)
    assert not path.exists() and not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    monkeypatch.undo()
    _ensure(ds, tok)
    assert path.stat().st_size == n * length * 2
