"""AdamW groups with layer-wise lr decay and the per-step cosine schedule (utils.optim)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from engine.config import OptimConfig
from modeling import create_model
from utils.optim import adjust_learning_rate, cosine_scheduler, create_optimizer, param_groups_layer_decay


def _args(**kw):
    base = dict(lr=1e-3, min_lr=1e-5, weight_decay=0.05, warmup_epochs=0, warmup_steps=-1, epochs=1, batch_size=4,
                opt="adamw", opt_betas=(0.9, 0.98), opt_eps=1e-8)  # fmt: skip
    return OptimConfig(**{**base, **kw})


@pytest.mark.parametrize("decay", [0.9, 0.5])
def test_layer_decay_really_applies_to_every_block(decay):
    model = create_model("HeartLang_finetune_tiny", num_classes=3)
    depth = model.get_num_layers()
    opt = create_optimizer(model, _args(layer_decay=decay))
    adjust_learning_rate(opt, 0, np.array([1e-3]))
    lr_of = {n: g["lr"] for g in opt.param_groups for n in g["param_names"]}
    for i in range(depth):
        block = [n for n in lr_of if f"transformer.layers.{i}." in n]
        assert block, f"no parameter of block {i}"
        for n in block:
            assert lr_of[n] == pytest.approx(1e-3 * decay ** (depth + 1 - (i + 1))), n
    assert lr_of["backbone.pos_embed"] == pytest.approx(1e-3 * decay ** (depth + 1))
    assert lr_of["mlp_head.weight"] == pytest.approx(1e-3)
    assert len({round(v, 12) for v in lr_of.values()}) == depth + 2


@pytest.mark.parametrize("corrected", [False, True])
def test_weight_decay_rule_official_and_corrected(corrected):
    model = create_model("HeartLang_tiny")
    groups = param_groups_layer_decay(model, 0.05, 0.9, no_decay_embeddings=corrected)
    wd_of = {n: g["weight_decay"] for g in groups for n in g["param_names"]}
    for name in ("cls_token", "norm_layer.weight", "lm_head.bias"):  # 1-D / biases: exempt in both
        assert wd_of[name] == 0.0, name
    # Official behaviour: pos_embed, mask_token, the embedding tables and the token conv are decayed.
    for name in ("pos_embed", "mask_token", "spa_embed.embed.weight", "tem_embed.embed.weight",
                 "token_embed.tokenConv.weight"):  # fmt: skip
        assert wd_of[name] == (0.0 if corrected else 0.05), name
    assert wd_of["lm_head.weight"] == 0.05
    assert wd_of["transformer.layers.0.0.to_qkv.weight"] == 0.05
    assert set(wd_of) == {n for n, _ in model.named_parameters()}


def test_frozen_parameters_are_left_out_and_all_frozen_raises():
    model = create_model("HeartLang_finetune_tiny", num_classes=3)
    for n, p in model.named_parameters():
        p.requires_grad_(n.startswith("mlp_head."))
    groups = param_groups_layer_decay(model, 0.05, 0.9)
    assert sorted(n for g in groups for n in g["param_names"]) == ["mlp_head.bias", "mlp_head.weight"]
    model.mlp_head.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameter"):
        param_groups_layer_decay(model, 0.05)


def test_only_adamw_is_offered():
    with pytest.raises(ValueError, match="adamw"):
        create_optimizer(torch.nn.Linear(2, 2), _args(opt="sgd"))


def test_cosine_schedule_warmup_end_and_last_step():
    epochs, niter, warm = 10, 7, 2
    s = cosine_scheduler(5e-4, 1e-5, epochs, niter, warm, start_warmup_value=0.0)
    assert len(s) == epochs * niter
    assert s[0] == 0.0
    assert s[warm * niter - 1] == pytest.approx(5e-4)  # warm-up ends exactly at the base lr
    assert s[warm * niter] == pytest.approx(5e-4)  # cosine starts at the base lr
    n = (epochs - warm) * niter
    assert s[-1] == pytest.approx(1e-5 + 0.5 * (5e-4 - 1e-5) * (1 + math.cos(math.pi * (n - 1) / n)))
    assert s[-1] > 1e-5 and s[-1] - 1e-5 < 1e-6
    assert np.all(np.diff(s[: warm * niter]) > 0) and np.all(np.diff(s[warm * niter :]) < 0)


def test_warmup_steps_override_and_invalid_sizes():
    s = cosine_scheduler(1.0, 0.0, 2, 5, warmup_epochs=1, warmup_steps=3)
    assert s[2] == 1.0 and s[1] == pytest.approx(0.5)
    with pytest.raises(ValueError):
        cosine_scheduler(1.0, 0.0, 0, 5)


def test_adjust_learning_rate_scales_each_group():
    model = create_model("HeartLang_finetune_tiny", num_classes=3)
    opt = create_optimizer(model, _args(layer_decay=0.5))
    lr = adjust_learning_rate(opt, 3, np.array([1.0, 2.0, 3.0, 4.0]))
    assert lr == 4.0
    assert {g["lr"] / g["lr_scale"] for g in opt.param_groups} == {4.0}
