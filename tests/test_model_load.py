"""modeling.load_model: rebuild from the stored config, infer the registry name of released files, refuse
the wrong kind / size / NaN weights, and load released-format full-size files from an offline Hub cache
through hf:// specs (HF_HUB_OFFLINE=1, HF_HUB_CACHE in tmp_path: no network)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from engine.checkpoint import build_state, save_checkpoint
from modeling import (
    compare_key_contract,
    create_model,
    load_model,
    make_header,
    resolve_checkpoint,
    tokenizer_size,
)
from modeling.hub import parse_hf_spec
from tests._train_data import make_downstream
from utils.integrity import NonFiniteError

REPO = "PKUDigitalHealth/HeartLang"
REV = "0123456789abcdef0123456789abcdef01234567"
# Stand-in file names: the real repo's file names were not verified (no network here; docs/models.md).
VQ_FILE, HL_FILE = "vqhbr_tokenizer.pth", "heartlang_pretrained.pth"


def _ours(tmp_path, name: str, **overrides):
    """A checkpoint as our training stages wrote it before the header existed (build_state + save_checkpoint,
    the model's name in the flag dict)."""
    torch.manual_seed(0)
    model = create_model(name, **overrides)
    state = build_state(model, 3, args={"model": name}, model_config=dataclasses.asdict(model.config))
    return model, save_checkpoint(tmp_path, f"{name}.pth", state)


@pytest.mark.parametrize(
    "name, overrides",
    [("vqhbr_tiny", {"codebook_size": 32, "padding_attention_mask": True}),
     ("HeartLang_tiny", {"codebook_size": 48, "mask_before_conv": True}),
     ("HeartLang_finetune_tiny", {"num_classes": 7})],
)  # fmt: skip
def test_stored_config_round_trips(tmp_path, name, overrides):
    model, path = _ours(tmp_path, name, **overrides)
    loaded = load_model(path)
    assert type(loaded) is type(model) and loaded.config == model.config and not loaded.training
    assert loaded.checkpoint_info.name == name and loaded.checkpoint_info.path == path
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


@pytest.mark.parametrize(
    "name, overrides",
    [("vqhbr_tiny", {"codebook_size": 32, "padding_attention_mask": True}),
     ("HeartLang_tiny", {"codebook_size": 48, "mask_before_conv": True}),
     ("HeartLang_finetune_tiny", {"num_classes": 7})],
)  # fmt: skip
def test_header_alone_rebuilds_the_model_without_the_flag_dict(tmp_path, name, overrides):
    """A checkpoint of this version: its header names the model; the flag dict is not read (here it names
    another model, and the legacy model_config beside the weights is absent)."""
    torch.manual_seed(0)
    model = create_model(name, **overrides)
    header = make_header(name, dataclasses.asdict(model.config), {"padding_attention_mask": True})
    state = build_state(model, 0, args={"model": "no_such_model"}, header=header)
    path = save_checkpoint(tmp_path, f"{name}.pth", state)
    loaded = load_model(path)
    assert loaded.config == model.config and loaded.checkpoint_info.name == name
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_model_config_in_the_original_spellings_still_loads(tmp_path):
    """model_config written before the one-name-per-concept rename (n_code, code_dim, encoder_depth)."""
    vq = create_model("vqhbr_tiny")
    old = dataclasses.asdict(vq.config)
    old["n_code"], old["code_dim"], old["encoder_depth"] = (
        old.pop("codebook_size"),
        old.pop("codebook_dim"),
        old.pop("depth"),
    )
    torch.save(
        {"model": vq.state_dict(), "model_config": old, "args": {"model": "vqhbr_tiny"}}, tmp_path / "vq.pth"
    )
    assert load_model(tmp_path / "vq.pth").config == vq.config
    clf = create_model("HeartLang_finetune_tiny", num_classes=4)
    old = dataclasses.asdict(clf.config)
    old["backbone_vocab_size"] = old.pop("backbone_codebook_size")
    torch.save({"model": clf.state_dict(), "model_config": old}, tmp_path / "clf.pth")  # no name stored
    loaded = load_model(tmp_path / "clf.pth")
    assert loaded.config == clf.config and loaded.checkpoint_info.name is None


def test_wrong_kind_is_refused_by_name(tmp_path):
    _, vq = _ours(tmp_path, "vqhbr_tiny")
    # A VQ-HBR checkpoint given where a pre-training checkpoint is expected (--finetune).
    with pytest.raises(
        ValueError,
        match=r"vqhbr_tiny.pth holds a VQ-HBR tokenizer checkpoint; expected a HeartLang pre-training model",
    ):
        load_model(vq, "HeartLang_finetune_tiny", kind="heartlang", num_classes=3)
    with pytest.raises(ValueError, match="model 'HeartLang_finetune_tiny' is a HeartLang classifier"):
        load_model(vq, "HeartLang_finetune_tiny")
    _, hl = _ours(tmp_path, "HeartLang_tiny")
    with pytest.raises(ValueError, match="expected a VQ-HBR tokenizer"):
        tokenizer_size(hl)
    with pytest.raises(ValueError, match="expected a VQ-HBR tokenizer"):
        load_model(hl, kind="vqhbr")


def test_pretraining_checkpoint_into_classifier_as_finetune(tmp_path):
    pre, path = _ours(tmp_path, "HeartLang_tiny")
    clf = load_model(
        path, "HeartLang_finetune_tiny", kind="heartlang", num_classes=3, padding_attention_mask=True
    )
    assert clf.mlp_head.out_features == 3 and clf.config.padding_attention_mask
    assert clf.backbone.lm_head.out_features == 1024  # the original's unused head, kept at its init
    for key, value in pre.state_dict().items():
        if not key.startswith("lm_head"):
            assert torch.equal(clf.state_dict()[f"backbone.{key}"], value), key


def test_non_finite_weights_are_refused(tmp_path):
    model = create_model("HeartLang_tiny")
    sd = model.state_dict()
    sd["transformer.layers.1.0.to_qkv.weight"][0, 3] = float("inf")
    torch.save({"model": sd}, tmp_path / "inf.pth")
    with pytest.raises(
        NonFiniteError, match=r"inf.pth: tensor transformer.layers.1.0.to_qkv.weight: 1 non-finite"
    ):
        load_model(tmp_path / "inf.pth")


def test_hub_spec_parsing_and_missing_package(monkeypatch):
    assert parse_hf_spec(f"hf://{REPO}/a/b.pth") == (REPO, "a/b.pth", None)
    assert parse_hf_spec(f"hf://{REPO}@v1.0/b.pth") == (REPO, "b.pth", "v1.0")
    with pytest.raises(ValueError, match="hf://<org>/<repo>"):
        parse_hf_spec("hf://PKUDigitalHealth/b.pth")
    with pytest.raises(ValueError, match="both repo_id= and filename="):
        resolve_checkpoint(repo_id=REPO)
    assert str(resolve_checkpoint("ckpt/x.pth")) == "ckpt/x.pth"
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # as if it were not installed
    with pytest.raises(ImportError, match="pip install 'huggingface_hub"):
        resolve_checkpoint(f"hf://{REPO}/{HL_FILE}")


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory):
    """A Hub cache in the standard layout holding full-size checkpoints in the released formats:
    models--<org>--<name>/snapshots/<rev>/<file> and refs/main -> <rev>."""
    pytest.importorskip("huggingface_hub")
    cache = tmp_path_factory.mktemp("hf_hub")
    repo = cache / f"models--{REPO.replace('/', '--')}"
    snap = repo / "snapshots" / REV
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(REV)
    torch.manual_seed(0)
    torch.save(create_model("vqhbr").state_dict(), snap / VQ_FILE)  # a bare state_dict
    hl = create_model("HeartLang")
    torch.save({"model": hl.state_dict()}, snap / HL_FILE)  # {"model": state_dict}
    probe = hl.state_dict()["transformer.layers.11.1.net.4.weight"][:4, :4].clone()
    return cache, snap, probe


def test_released_full_size_files_load_as_the_clis_load_them(hub_cache, ref_fixtures):
    """The full-size released formats through load_model as --tokenizer_weight / --finetune / export take
    them (from the cache snapshot as a plain local path), checked against the official key lists."""
    _, snap, probe = hub_cache
    ref = {
        n: json.loads((ref_fixtures / f"keys_{n}.json").read_text())["state_dict"]
        for n in ("vqhbr", "finetune")
    }
    tok = load_model(snap / VQ_FILE, kind="vqhbr")
    assert tok.checkpoint_info.name == "vqhbr" and tokenizer_size(snap / VQ_FILE) == (8192, 128)
    assert [k for k in tok.state_dict()] == [e["key"] for e in ref["vqhbr"]]
    del tok
    clf = load_model(snap / HL_FILE, "HeartLang_finetune_base", kind="heartlang", num_classes=5)
    assert compare_key_contract(clf, ref["finetune"]) == []
    assert torch.equal(clf.state_dict()["backbone.transformer.layers.11.1.net.4.weight"][:4, :4], probe)


def test_hub_specs_load_offline_from_the_standard_cache(hub_cache, tmp_path, repo_root):
    """A fresh process with HF_HUB_CACHE / HF_HUB_OFFLINE in its environment, as a user would run it:
    hf:// spec, repo_id=/filename=, tokenizer_size and export_features.py --checkpoint hf://..."""
    cache, snap, probe = hub_cache
    data = make_downstream(tmp_path, n_train=2, n_val=2, n_test=3, n_classes=2)
    script = textwrap.dedent(f"""
        import json, sys, torch
        sys.path.insert(0, {str(repo_root)!r})
        import export_features
        from modeling import load_model, tokenizer_size
        out = {{}}
        tok = load_model("hf://{REPO}/{VQ_FILE}", kind="vqhbr")
        out["tok"] = [tok.checkpoint_info.name, str(tok.checkpoint_info.path), list(tok.quantize.embedding.weight.shape)]
        out["size"] = list(tokenizer_size("hf://{REPO}@main/{VQ_FILE}"))
        del tok
        hl = load_model(repo_id="{REPO}", filename="{HL_FILE}")
        out["hl"] = [hl.checkpoint_info.name, hl.state_dict()["transformer.layers.11.1.net.4.weight"][:4, :4].tolist()]
        del hl
        args = export_features.get_args_parser().parse_args(["--checkpoint", "hf://{REPO}/{HL_FILE}",
            "--dataset_dir", {str(data)!r}, "--output", {str(tmp_path / "f.npy")!r}, "--pool", "cls", "--device", "cpu"])
        out["export"] = list(export_features.main(args).shape)
        try:
            load_model("hf://{REPO}/not_there.pth")
        except FileNotFoundError as exc:
            out["missing"] = str(exc)
        print("RESULT " + json.dumps(out))
    """)  # fmt: skip
    env = dict(os.environ, HF_HUB_CACHE=str(cache), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    env.pop("HF_HOME", None)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300,
                          cwd=repo_root)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.split("RESULT ", 1)[1])
    assert out["tok"][0] == "vqhbr" and out["tok"][2] == [8192, 128]
    assert out["tok"][1] == str(snap / VQ_FILE)  # read from the cache snapshot, nothing downloaded
    assert out["size"] == [8192, 128]
    assert out["hl"][0] == "HeartLang"  # inferred from the kind and the shapes
    torch.testing.assert_close(torch.tensor(out["hl"][1]), probe, rtol=0, atol=0)
    assert out["export"] == [3, 768]
    assert "not in the Hub cache" in out["missing"] and f"hf download {REPO} not_there.pth" in out["missing"]
    meta = json.loads((tmp_path / "f.json").read_text())
    assert meta["model_name"] == "HeartLang" and f"hf://{REPO}/{HL_FILE}" in meta.values()
