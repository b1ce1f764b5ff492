"""Key contract of the full-size models, registry, strict loading helpers and layer-decay groups."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from modeling import (
    compare_key_contract,
    create_model,
    load_checkpoint_file,
    load_model,
    load_pretrained_into_classifier,
    load_state_dict_strict,
    tokenizer_size,
)

FULL = {"vqhbr": "vqhbr", "HeartLang": "heartlang", "HeartLang_finetune_base": "finetune"}


@pytest.fixture(scope="module")
def full_models():
    """Each full-size model built once (construction only; they are never run here)."""
    return {name: create_model(name) for name in FULL}


@pytest.mark.parametrize("name", list(FULL))
def test_full_size_keys_and_shapes_equal_original(full_models, ref_fixtures, name):
    ref = json.loads((ref_fixtures / f"keys_{FULL[name]}.json").read_text())
    model = full_models[name]
    assert compare_key_contract(model, ref["state_dict"]) == []
    assert [k for k in model.state_dict()] == [e["key"] for e in ref["state_dict"]]
    assert sum(p.numel() for p in model.parameters()) == ref["num_parameters"]
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == ref["num_trainable_parameters"]
    assert sum(v.numel() for v in model.state_dict().values()) == ref["num_state_dict_elements"]


def test_full_size_defaults_equal_constructor_kwargs(full_models, ref_fixtures):
    hl = json.loads((ref_fixtures / "keys_heartlang.json").read_text())["constructor_kwargs"]
    cfg = full_models["HeartLang"].config
    for key in ("seq_len", "time_window", "embed_dim", "depth", "heads", "dim_head", "mlp_dim"):
        assert getattr(cfg, key) == hl[key], key
    assert cfg.codebook_size == hl["vocab_size"]
    assert (cfg.dropout, cfg.emb_dropout) == (hl["dropout"], hl["emb_dropout"])
    vq = json.loads((ref_fixtures / "keys_vqhbr.json").read_text())["constructor_kwargs"]
    vcfg = full_models["vqhbr"].config
    assert (vcfg.codebook_size, vcfg.codebook_dim, vcfg.decay, vcfg.beta) == (
        vq["n_embed"], vq["codebook_embed_dim"], vq["decay"], vq["beta"],
    )  # fmt: skip
    assert (vcfg.depth, vcfg.decoder_depth) == (
        vq["encoder_config"]["depth"],
        vq["decoder_config"]["depth"],
    )
    assert (vcfg.heads, vcfg.mlp_dim) == (vq["encoder_config"]["heads"], vq["encoder_config"]["mlp_dim"])
    assert float(full_models["vqhbr"].quantize.embedding.initted) == 1.0


def test_registry_rebuilds_from_config_and_rejects_unknown_kwargs():
    m = create_model("HeartLang_small")
    again = create_model("HeartLang_small", **dataclasses.asdict(m.config))
    assert again.config == m.config
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.config.depth = 3
    with pytest.raises(TypeError, match="unexpected keyword"):
        create_model("HeartLang_tiny", vocab_sise=10)
    with pytest.raises(TypeError, match="unexpected keyword"):
        create_model("HeartLang_finetune_tiny", vocab_size=10)
    with pytest.raises(KeyError, match="unknown model"):
        create_model("HeartLang_huge")
    # The original's spellings are accepted at the boundary and converted to one name each.
    vq = create_model("vqhbr_tiny", n_code=32, code_dim=8, decay=0.9, quantize_kmeans_init=True)
    assert vq.quantize.embedding.weight.shape == (32, 8) and float(vq.quantize.embedding.initted) == 0.0
    assert (vq.config.codebook_size, vq.config.codebook_dim) == (32, 8)
    assert create_model("vqhbr_tiny", encoder_depth=3).config.depth == 3
    assert create_model("HeartLang_tiny", vocab_size=10).config.codebook_size == 10
    with pytest.raises(TypeError, match="same setting"):
        create_model("vqhbr_tiny", n_code=32, codebook_size=64)
    with pytest.raises(TypeError, match="unexpected keyword"):
        create_model("HeartLang_tiny", encoder_depth=3)  # an alias of VQ-HBR only
    with pytest.raises(TypeError, match="unexpected keyword"):
        create_model("vqhbr_tiny", as_tokenzer=True)  # loading weights is load_model's job
    assert create_model("HeartLang_finetune_tiny", num_classes=9).mlp_head.out_features == 9
    # The demo sizes must agree on the vocabulary so that small pre-training can use small VQ-HBR targets.
    assert (
        create_model("vqhbr_small").config.codebook_size
        == create_model("HeartLang_small").config.codebook_size
    )


def test_tokenizer_loads_strictly_by_kind(tmp_path):
    src = create_model("vqhbr_tiny")
    path = tmp_path / "vq.pth"
    sd = {f"module.{k}": v for k, v in src.state_dict().items()}
    torch.save({"model": {**sd, "teacher.w": torch.ones(1)}, "epoch": 3}, path)  # released-like, no config
    tok = load_model(path, kind="vqhbr")  # name inferred from the kind and the shapes
    assert not tok.training and tok.checkpoint_info.name == "vqhbr_tiny"
    for key, value in src.state_dict().items():
        assert torch.equal(tok.state_dict()[key], value)
    assert tokenizer_size(path) == (64, 16)
    with pytest.raises(ValueError, match="codebook_size=64 in the file, 8192 requested"):
        load_model(path, "vqhbr_tiny", codebook_size=8192)


def test_load_checkpoint_file_formats(tmp_path):
    sd = {"a.weight": torch.ones(2), "b": torch.zeros(1)}
    torch.save({"model": {f"module._orig_mod.{k}": v for k, v in sd.items()}}, tmp_path / "wrapped.pth")
    torch.save(sd, tmp_path / "bare.pth")
    torch.save({"epoch": 1}, tmp_path / "bad.pth")
    for name in ("wrapped.pth", "bare.pth"):
        loaded = load_checkpoint_file(tmp_path / name)
        assert list(loaded) == list(sd)
    with pytest.raises(ValueError, match="bad.pth"):
        load_checkpoint_file(tmp_path / "bad.pth")
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        load_checkpoint_file(tmp_path / "missing.pth")
    (tmp_path / "corrupt.pth").write_bytes(b"not a checkpoint")  # e.g. an interrupted download
    with pytest.raises(RuntimeError, match="corrupt.pth"):
        load_checkpoint_file(tmp_path / "corrupt.pth")


def test_strict_loader_errors_name_the_problem():
    hl = create_model("HeartLang_tiny")
    with pytest.raises(ValueError, match="(?s)wrong model.*VQ-HBR"):
        load_state_dict_strict(hl, create_model("vqhbr_tiny").state_dict())
    bigger = create_model("HeartLang_tiny", embed_dim=48)
    with pytest.raises(
        ValueError, match=r"(?s)wrong size.*pos_embed: checkpoint \(1, 257, 48\) vs model \(1, 257, 32\)"
    ):
        load_state_dict_strict(hl, bigger.state_dict())
    partial = {k: v for k, v in hl.state_dict().items() if not k.startswith("norm_layer")}
    with pytest.raises(ValueError, match="(?s)missing keys.*norm_layer.weight"):
        load_state_dict_strict(hl, partial)
    report = load_state_dict_strict(hl, partial, allow_missing=("norm_layer.*",))
    assert report.missing == ["norm_layer.weight", "norm_layer.bias"]
    extra = dict(hl.state_dict(), **{"teacher.w": torch.ones(1)})
    with pytest.raises(ValueError, match="(?s)unexpected keys.*teacher.w"):
        load_state_dict_strict(hl, extra)


def test_pretrained_checkpoint_into_classifier():
    pre = create_model("HeartLang_tiny", vocab_size=8192)
    clf = create_model("HeartLang_finetune_tiny", num_classes=3)
    head_before = clf.mlp_head.weight.clone()
    lm_before = clf.backbone.lm_head.weight.clone()
    report = load_pretrained_into_classifier(clf, pre.state_dict())
    assert sorted(report.missing) == sorted(
        ["mlp_head.weight", "mlp_head.bias", "backbone.lm_head.weight", "backbone.lm_head.bias"]
    )
    assert report.unexpected == ["lm_head.weight", "lm_head.bias"]
    for key, value in pre.state_dict().items():
        if not key.startswith("lm_head"):
            assert torch.equal(clf.state_dict()[f"backbone.{key}"], value), key
    assert torch.equal(clf.mlp_head.weight, head_before) and torch.equal(
        clf.backbone.lm_head.weight, lm_before
    )
    with pytest.raises(ValueError, match="wrong size"):
        load_pretrained_into_classifier(
            create_model("HeartLang_finetune_tiny", embed_dim=48), pre.state_dict()
        )
    with pytest.raises(ValueError, match="already a classifier"):
        load_pretrained_into_classifier(clf, clf.state_dict())
    with pytest.raises(ValueError, match="missing keys"):
        load_pretrained_into_classifier(clf, create_model("vqhbr_tiny").state_dict())


@pytest.mark.parametrize(
    "name", ["vqhbr_tiny", "HeartLang_tiny", "HeartLang_finetune_tiny", "HeartLang_small"]
)
def test_layer_ids_give_depth_plus_two_groups(name):
    model = create_model(name)
    depth = model.get_num_layers()
    ids = {n: model.get_layer_id(n) for n, _ in model.named_parameters()}
    assert set(ids.values()) == set(range(depth + 2))
    # Embeddings first, deeper blocks later, heads last.
    first = (
        "encoder.pos_embed" if name.startswith("vqhbr") else next(n for n in ids if n.endswith("pos_embed"))
    )
    assert ids[first] == 0
    head = {"vqhbr_tiny": "decode_task_layer.2.weight", "HeartLang_tiny": "lm_head.weight"}.get(name, "")
    head = head or next(n for n in ids if n.startswith(("mlp_head", "lm_head")))
    assert ids[head] == depth + 1
    blocks = sorted({i for n, i in ids.items() if ".transformer.layers." in f".{n}"})
    assert blocks == list(range(1, depth + 1))
    assert model.no_weight_decay() <= set(ids) | {n for n, _ in model.named_parameters()}
    assert all(n in dict(model.named_parameters()) for n in model.no_weight_decay())
