"""Feature export (export_features.py) and the Python API (modeling.load_model, inference): shapes, determinism, CLI == API,
and clear loading errors (paper Sec. 3.3); released full-size files and the Hub path: tests/test_model_load.py."""

from __future__ import annotations

import dataclasses
import json
import types

import numpy as np
import pytest
import torch

import export_features
from inference import embed_ecg, embed_sentences
from modeling import create_model, load_model
from tests._train_data import make_downstream
from utils.integrity import sha256_file


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
    model = load_model(tiny.ckpt)  # the config comes from the checkpoint
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
    clf = load_model(tiny.ckpt, "HeartLang_finetune_tiny", num_classes=3)
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
    want = embed_sentences(load_model(tiny.ckpt), *_split(tiny.data), pool="both").numpy()
    assert got.shape == (10, 2, 32) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)  # batch 3 vs 10: same numbers
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["shape"] == [10, 2, 32] and meta["pool"] == "both"
    # Traceable: the model actually loaded (no --model given), the weights' hash, the code version.
    assert meta["model_name"] == "HeartLang_tiny" and meta["model_name_given"] is None
    assert meta["checkpoint_sha256"] == sha256_file(tiny.ckpt) and meta["git_commit"] and meta["utc"]
    np.testing.assert_array_equal(np.load(meta["labels"]), np.load(tiny.data / "test_labels.npy"))
    args.pool, args.output = "mean", tiny.root / "feats" / "mean.npy"
    np.testing.assert_allclose(export_features.main(args), got[:, 1], rtol=1e-5, atol=1e-6)


def test_fine_tuned_checkpoint_and_clear_errors(tiny):
    clf = _save_ours(tiny.root / "clf.pth", "HeartLang_finetune_tiny", seed=1)
    loaded = load_model(tiny.root / "clf.pth")
    assert type(loaded).__name__ == "HeartLangClassifier" and loaded.mlp_head.out_features == 5
    for k, v in clf.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    torch.save({"model": tiny.model.state_dict()}, tiny.root / "released_like.pth")
    # A released-like file (no config, no name): the registry name is inferred from kind + shapes.
    released = load_model(tiny.root / "released_like.pth")
    assert released.checkpoint_info.name == "HeartLang_tiny" and released.config == tiny.model.config
    with pytest.raises(ValueError, match="wrong|size|missing|unexpected"):
        load_model(tiny.root / "released_like.pth", "HeartLang_small")
    odd = create_model("HeartLang_tiny", embed_dim=48)
    torch.save(odd.state_dict(), tiny.root / "odd_size.pth")
    with pytest.raises(ValueError, match="(?s)odd_size.pth stores no model config.*pass name="):
        load_model(tiny.root / "odd_size.pth")
    # Our checkpoint asked for as another size: refused, naming the differing fields.
    with pytest.raises(ValueError, match="embed_dim=32 in the file, 128 in 'HeartLang_small'"):
        load_model(tiny.ckpt, "HeartLang_small")
    with pytest.raises(ValueError, match="pool"):
        embed_sentences(loaded, *_split(tiny.data), pool="max")


def test_embed_raw_ecg_record(tiny, shared_data):
    """The raw-record API on one 100 Hz PTB-XL record (the other sources and rules: test_inference_records.py)."""
    import wfdb

    from datasets.qrs.tokenizer import tokenize_record
    from inference import ECGRecord, prepare_record

    rec = wfdb.rdrecord(str(shared_data / "ptbxl" / "records100" / "00000" / "00002_lr"))
    signal = rec.p_signal.T.astype(np.float32)  # (12, 1000), 100 Hz, standard lead order
    model = load_model(tiny.ckpt)
    emb = embed_ecg(model, signal, fs=100, pool="cls")  # default chain: mimic (band-pass)
    assert emb.shape == (1, 32) and torch.isfinite(emb).all()
    w, c, t, _ = tokenize_record(prepare_record(ECGRecord("r", signal, 100), "mimic"))
    torch.testing.assert_close(emb, embed_sentences(model, w[None], c[None], t[None]))
    batch = embed_ecg(model, np.stack([signal, signal[:, ::-1].copy()]), fs=100, pool="both")
    assert batch.shape == (2, 2, 32)
    torch.testing.assert_close(batch[0, 0], emb[0])
