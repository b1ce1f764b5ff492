"""Feature export (export_features.py) and the Python API (modeling.api, inference): shapes, determinism, CLI == API,
and the released-checkpoint loading path against the official key lists (paper Sec. 3.3, DESIGN Sec. 3)."""

from __future__ import annotations

import dataclasses
import json
import types

import numpy as np
import pytest
import torch

import export_features
from inference import embed_ecg, embed_sentences
from modeling import create_model, load_pretrained
from modeling.checkpoint import compare_key_contract, state_dict_spec
from tests._train_data import make_downstream


def _save_ours(path, name: str, seed: int = 0):
    """A checkpoint in our training format: weights + the model config + the args naming the model."""
    torch.manual_seed(seed)
    model = create_model(name)
    state = {"model": model.state_dict(), "model_config": dataclasses.asdict(model.config),
             "args": {"model": name}, "epoch": 0}  # fmt: skip
    torch.save(state, path)
    return model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    pre = _save_ours(root / "pretrain.pth", "HeartLang_tiny")
    data = make_downstream(root, n_train=4, n_val=4, n_test=10, n_classes=3)
    return types.SimpleNamespace(root=root, ckpt=root / "pretrain.pth", model=pre, data=data)


def _split(data, split="test"):
    return (np.load(data / f"{split}_data.npy"), np.load(data / f"{split}_data_in_chans.npy"),
            np.load(data / f"{split}_data_in_times.npy"))  # fmt: skip


def test_api_shapes_pools_and_determinism(tiny):
    model = load_pretrained(tiny.ckpt)  # the config comes from the checkpoint
    assert not model.training and model.config == tiny.model.config
    x, c, t = _split(tiny.data)
    cls = embed_sentences(model, x, c, t, pool="cls")
    mean = embed_sentences(model, x, c, t, pool="mean")
    both = embed_sentences(model, x, c, t, pool="both")
    assert cls.shape == mean.shape == (10, 32) and both.shape == (10, 2, 32)
    assert torch.equal(both[:, 0], cls) and torch.equal(both[:, 1], mean)
    assert torch.equal(embed_sentences(model, x, c, t), cls)  # eval mode: dropout off, deterministic
    # mean pools the real words only: padding rows do not change it.
    feats = model(torch.from_numpy(x), None, torch.from_numpy(c).long(), torch.from_numpy(t).long(),
                  return_all_tokens=True)  # fmt: skip
    k = int((c[0] != 0).sum())
    torch.testing.assert_close(mean[0], feats[0, 1 : k + 1].mean(0))
    # The CLS feature is the one the linear probe reads.
    clf = load_pretrained(tiny.ckpt, model="HeartLang_finetune_tiny", num_classes=3)
    torch.testing.assert_close(clf.forward_features(torch.from_numpy(x), torch.from_numpy(c).long(),
                               torch.from_numpy(t).long()), cls)  # fmt: skip
    torch.testing.assert_close(embed_sentences(clf, x, c, t, pool="both"), both)


def test_cli_matches_api_and_writes_metadata(tiny):
    out = tiny.root / "feats" / "test.npy"
    args = export_features.get_args_parser().parse_args(
        [
            "--checkpoint",
            str(tiny.ckpt),
            "--dataset_dir",
            str(tiny.data),
            "--split",
            "test",
            "--output",
            str(out),
            "--pool",
            "both",
            "--batch_size",
            "3",
            "--device",
            "cpu",
        ]  # fmt: skip
    )
    export_features.main(args)
    got = np.load(out)
    want = embed_sentences(load_pretrained(tiny.ckpt), *_split(tiny.data), pool="both").numpy()
    assert got.shape == (10, 2, 32) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)  # batch 3 vs 10: same numbers
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["shape"] == [10, 2, 32] and meta["pool"] == "both"
    np.testing.assert_array_equal(np.load(meta["labels"]), np.load(tiny.data / "test_labels.npy"))
    args.pool, args.output = "mean", tiny.root / "feats" / "mean.npy"
    np.testing.assert_allclose(export_features.main(args), got[:, 1], rtol=1e-5, atol=1e-6)


def test_fine_tuned_checkpoint_and_clear_errors(tiny):
    clf = _save_ours(tiny.root / "clf.pth", "HeartLang_finetune_tiny", seed=1)
    loaded = load_pretrained(tiny.root / "clf.pth")
    assert type(loaded).__name__ == "HeartLangClassifier" and loaded.mlp_head.out_features == 5
    for k, v in clf.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    torch.save({"model": tiny.model.state_dict()}, tiny.root / "released_like.pth")
    with pytest.raises(ValueError, match="pass model="):
        load_pretrained(tiny.root / "released_like.pth")
    with pytest.raises(ValueError, match="wrong|size|missing|unexpected"):
        load_pretrained(tiny.root / "released_like.pth", model="HeartLang_small")
    with pytest.raises(ValueError, match="pool"):
        embed_sentences(loaded, *_split(tiny.data), pool="max")


def test_embed_raw_ecg_record(tiny, shared_data):
    import wfdb

    from datasets.qrs.tokenizer import tokenize_record

    rec = wfdb.rdrecord(str(shared_data / "ptbxl" / "records100" / "00000" / "00002_lr"))
    signal = rec.p_signal.T.astype(np.float32)  # (12, 1000), 100 Hz
    model = load_pretrained(tiny.ckpt)
    emb = embed_ecg(model, signal, pool="cls")
    assert emb.shape == (1, 32) and torch.isfinite(emb).all()
    w, c, t, _ = tokenize_record(signal)
    torch.testing.assert_close(emb, embed_sentences(model, w[None], c[None], t[None]))
    batch = embed_ecg(model, np.stack([signal, signal[:, ::-1].copy()]), pool="both")
    assert batch.shape == (2, 2, 32)
    torch.testing.assert_close(batch[0, 0], emb[0])


def test_released_checkpoints_load_through_the_cli_paths(tmp_path, ref_fixtures):
    """Full-size random weights saved as the released files ({"model": state_dict}), loaded strictly by
    the code the CLIs use, and checked against the official key lists."""
    import run_class_finetuning
    import run_heartlang_pretraining

    ref = {n: json.loads((ref_fixtures / f"keys_{n}.json").read_text())["state_dict"]
           for n in ("vqhbr", "heartlang", "finetune")}  # fmt: skip
    torch.manual_seed(0)
    vq = create_model("vqhbr")
    torch.save({"model": vq.state_dict()}, tmp_path / "vqhbr.pth")
    del vq
    hl = create_model("HeartLang")
    assert compare_key_contract(hl, ref["heartlang"]) == []
    torch.save({"model": hl.state_dict()}, tmp_path / "heartlang.pth")
    probe = hl.state_dict()["transformer.layers.11.1.net.4.weight"].clone()
    del hl

    # Pre-training tokenizer: run_heartlang_pretraining.load_tokenizer (the seed's flag values).
    pt_args = run_heartlang_pretraining.get_args_parser().parse_args(
        [
            "--tokenizer_model",
            "vqhbr",
            "--tokenizer_weight",
            str(tmp_path / "vqhbr.pth"),
            "--codebook_size",
            "8192",
            "--codebook_dim",
            "128",
        ]  # fmt: skip
    )
    tok = run_heartlang_pretraining.load_tokenizer(pt_args, torch.device("cpu"))
    # (the frozen tokenizer has requires_grad False everywhere, so compare keys, order and shapes)
    assert [(e["key"], e["shape"]) for e in state_dict_spec(tok)] == [
        (e["key"], e["shape"]) for e in ref["vqhbr"]
    ]
    del tok
    # Linear probe: run_class_finetuning.build_model with --finetune (drops lm_head, new mlp_head).
    ft_args = run_class_finetuning.get_args_parser().parse_args(
        [
            "--model",
            "HeartLang_finetune_base",
            "--finetune",
            str(tmp_path / "heartlang.pth"),
            "--nb_classes",
            "5",
        ]
    )
    clf = run_class_finetuning.build_model(ft_args, torch.device("cpu"))
    assert compare_key_contract(clf, ref["finetune"]) == []
    assert torch.equal(clf.state_dict()["backbone.transformer.layers.11.1.net.4.weight"], probe)
    del clf
    # Feature API on the released file (registry name needed: it stores no config).
    api = load_pretrained(tmp_path / "heartlang.pth", model="HeartLang")
    assert torch.equal(api.state_dict()["transformer.layers.11.1.net.4.weight"], probe)
    x = torch.zeros(1, 256, 96)
    x[0, :20] = torch.randn(20, 96)
    c = torch.zeros(1, 256, dtype=torch.long)
    c[0, :20] = 1
    assert embed_sentences(api, x, c, c, pool="both").shape == (1, 2, 768)
